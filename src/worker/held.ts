// Held uploads, after an operator looked at them: `release` applies that one held upload (over
// the deactivation limit it was held for), `discard` files it away unapplied. Either way the
// district is told, and the action is in the audit trail. A held upload older than an import
// applied since is superseded: applying it would undo newer data, so it is filed away instead.
import fs from 'node:fs';
import path from 'node:path';
import posix from 'node:path/posix';
import type { TenantConfig } from '../config.js';
import { ConfigError } from '../errors.js';
import { fromImport, importFile, type FileImportResult } from '../import/import-file.js';
import type { HeldUpload } from '../store/types.js';
import { emptyCounts } from '../store/types.js';
import { worstStatus, type EpochOutcome, type RunContext, type RunDeps, type TenantRunResult } from './context.js';
import { fileAway } from './epoch.js';
import { runTenant } from './run-tenant.js';
import { HELD_DIR } from './uploads.js';

export type HeldAction = 'release' | 'discard';

export async function resolveHeld(deps: RunDeps, tenant: TenantConfig, epoch: string, action: HeldAction, actor: string): Promise<TenantRunResult> {
  const held = await deps.store.imports.heldImport(tenant.id, epoch);
  if (!held) {
    const waiting = (await deps.store.imports.held(tenant.id)).map((h) => h.epoch);
    throw new ConfigError(`${tenant.id} has no held upload ${epoch}${waiting.length ? `; held now: ${waiting.join(', ')}` : ' (nothing is held)'}`);
  }
  const result = await runTenant(deps, tenant, { reason: action, force: false, dryRun: false }, (ctx) => resolve(ctx, held, action, actor));
  await deps.store.audit.record({
    actor, action, tenant: tenant.id, target: epoch, result: result.status, detail: result.message ?? result.epochs[0]?.files.map((f) => `${f.file}: ${f.status}`).join('; ') ?? null,
  });
  return result;
}

async function resolve(ctx: RunContext, held: HeldUpload, action: HeldAction, actor: string): Promise<void> {
  const { tenant, session, deps } = ctx;
  const epoch = held.epoch;
  const dir = posix.join(tenant.paths.upload, HELD_DIR, epoch);
  if (!(await session.exists(dir))) {
    throw new ConfigError(`the held upload ${epoch} of ${tenant.id} is no longer in ${dir} on the SFTP host; nothing was changed`);
  }
  const superseded = action === 'release' && held.supersededBy !== null;
  const files: FileImportResult[] = [];
  const notes: string[] = [];
  if (action === 'release' && !superseded) {
    notes.push(`Released by ${actor} after review: it was applied although it deactivates more users than the safety limit allows.`);
    files.push(await applyHeld(ctx, held, dir));
  } else {
    const status = superseded ? 'superseded' : 'discarded';
    const message = superseded
      ? `not applied: import ${held.supersededBy}, applied since it was held, is newer; applying this older upload would undo it`
      : `discarded by ${actor} after review; nothing was applied`;
    notes.push(superseded ? `It was not applied: a newer upload (import ${held.supersededBy}) was applied since it was held.` : `Discarded by ${actor} after review.`);
    const importId = await deps.store.imports.recordUnapplied({
      runId: ctx.runId, tenant: tenant.id, epoch, file: held.file, kind: held.kind, status, message, contentSha1: null, counts: emptyCounts(),
      actor, heldImportId: held.importId, startedAt: new Date().toISOString(),
    });
    files.push({ file: held.file, kind: held.kind ?? '', status, message, counts: held.counts, importId, contentSha1: '', sampleErrors: [] });
  }
  // The epoch's other files keep what they had (a rejected sibling stays rejected), so the report and result.json show them all.
  for (const other of await deps.store.imports.ofEpoch(tenant.id, epoch)) if (other.file !== held.file) files.push(fromImport(other));
  files.sort((a, b) => a.file.localeCompare(b.file));
  const outcome: EpochOutcome = { epoch, status: worstStatus(files.map((f) => f.status)), files, remotePath: dir, notes };
  const kind = action === 'release' && !superseded ? 'released' : 'discarded';
  ctx.result.epochs.push(await fileAway(ctx, epoch, dir, outcome, null, { kind, dedupeKey: `${kind}:${tenant.id}:${epoch}:${held.importId}` }));
}

async function applyHeld(ctx: RunContext, held: HeldUpload, dir: string): Promise<FileImportResult> {
  const { tenant, session, deps } = ctx;
  const local = path.join(ctx.workDir, 'held.csv');
  try {
    await session.download(posix.join(dir, held.file), local);
    return await importFile({
      store: deps.store, kinds: deps.kinds, hasher: deps.hasher, tenant: tenant.id, kind: held.kind ?? '', options: { ...tenant.options },
      encoding: tenant.encoding, maxRecordBytes: deps.config.limits.maxRecordBytes, parseThreads: deps.config.limits.parseThreads, digestKey: deps.digestKey, localPath: local, epoch: held.epoch,
      file: held.file, runId: ctx.runId, mode: 'apply', release: { heldImportId: held.importId },
    });
  } finally {
    fs.rmSync(local, { force: true });
  }
}
