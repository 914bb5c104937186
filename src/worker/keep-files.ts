// Keep-in-place files (Agylia's user-import.csv, a roster's students.csv): processed where
// they lie when their content is new. The SHA1 is remembered in the store and written to the
// tenant's tmp folder; deleting that hash file (or `run --now --force`) makes the next run take
// it again. The file is checked again after the download: one that changed meanwhile is left
// for the next run. A held file is copied to .held/<epoch>, so that `release` applies exactly
// what was reviewed. And a dry run checks loose files where they lie.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import posix from 'node:path/posix';
import { errorMessage, RemoteError } from '../errors.js';
import { importFile } from '../import/import-file.js';
import { isNoSuchFile, isSafeName, type RemoteEntry } from '../sftp/client.js';
import { emptyCounts } from '../store/types.js';
import { printable } from '../text.js';
import type { EpochOutcome, RunContext } from './context.js';
import { appendRemoteLog, failureReason, payloadOf } from './epoch.js';
import { checkSettled } from './settle.js';
import { epochName, freeEpochName, HELD_DIR, isPromotable, kindForFile, promotedName } from './uploads.js';

export async function sha1File(file: string): Promise<string> {
  const hash = crypto.createHash('sha1');
  for await (const chunk of fs.createReadStream(file, { highWaterMark: 1 << 20 })) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

export async function processKeepFiles(ctx: RunContext, loose: RemoteEntry[]): Promise<void> {
  const { tenant, session, deps, opts } = ctx;
  const named = loose.filter((f) => kindForFile(tenant, f.name) && isSafeName(f.name));
  if (named.length === 0) return;
  const { ready, settling } = await checkSettled({ session, store: deps.store, tenant, recheckSeconds: deps.config.settleRecheckSeconds }, tenant.paths.upload, named);
  ctx.result.settling.push(...settling);
  for (const [i, f] of ready.entries()) {
    if (opts.signal?.aborted) return;
    const kind = kindForFile(tenant, f.name)!;
    const remote = posix.join(tenant.paths.upload, f.name);
    if (await deps.store.uploads.isSetAside(tenant.id, remote, `${f.size}:${f.mtime}`)) continue; // failed before; told once
    const local = path.join(ctx.workDir, `keep-${i}.csv`);
    try {
      await session.download(remote, local);
      const after = await session.stat(remote);
      if (after.size !== f.size || after.mtime !== f.mtime) {
        ctx.result.settling.push({ file: f.name, reason: 'it changed while it was downloaded', takeAfter: new Date(Date.now() + tenant.settleSeconds * 1000).toISOString() });
        continue;
      }
      const sha1 = await sha1File(local);
      const hashFile = posix.join(tenant.paths.tmp, `${f.name}.sha1`);
      if (!opts.force && (await alreadyProcessed(ctx, remote, sha1, hashFile))) {
        ctx.log.debug({ file: printable(f.name), sha1 }, `${printable(f.name)} has not changed since it was processed; skipped`);
        continue;
      }
      await importKeepFile(ctx, { name: f.name, kind, local, remote, sha1, hashFile });
    } catch (err) {
      if (err instanceof RemoteError && err.connectionLost) throw err;
      await failKeepFile(ctx, f, err);
    } finally {
      fs.rmSync(local, { force: true });
    }
  }
}

async function importKeepFile(ctx: RunContext, f: { name: string; kind: string; local: string; remote: string; sha1: string; hashFile: string }): Promise<void> {
  const { tenant, session, deps, opts } = ctx;
  const epoch = opts.dryRun ? epochName(new Date()) : await freeEpochName(session, deps.store, tenant);
  const result = await importFile({
    store: deps.store, kinds: deps.kinds, hasher: deps.hasher, tenant: tenant.id, kind: f.kind, options: tenant.options, encoding: tenant.encoding,
    maxRecordBytes: deps.config.limits.maxRecordBytes, parseThreads: deps.config.limits.parseThreads, digestKey: deps.digestKey, localPath: f.local, epoch, file: f.name, runId: ctx.runId,
    mode: opts.dryRun ? 'dry-run' : 'apply', content: { path: f.remote, sha1: f.sha1 },
    onProgress: (rows) => opts.onProgress?.(tenant.id, f.name, rows),
  });
  const outcome: EpochOutcome = { epoch, status: result.status, files: [result], remotePath: f.remote, notes: [] };
  ctx.result.epochs.push(outcome);
  if (opts.dryRun) return;
  let location = f.remote;
  if (result.status === 'held' || result.status === 'rejected' || result.status === 'failed') {
    // Processed without being applied: not taken again every night until the content changes.
    await deps.store.uploads.rememberContent(tenant.id, f.remote, f.sha1, result.importId);
  }
  if (result.status === 'held') {
    const heldDir = posix.join(tenant.paths.upload, HELD_DIR, epoch);
    await session.mkdirp(heldDir);
    await session.write(posix.join(heldDir, f.name), fs.readFileSync(f.local));
    location = heldDir;
    outcome.notes.push(`The file stays where it is; the copy that was held is in ${heldDir}.`);
  }
  const record = await deps.store.outbox.record({
    tenant: tenant.id, kind: 'epoch', dedupeKey: `epoch:${tenant.id}:${epoch}:${crypto.randomUUID()}`, epoch,
    payload: payloadOf(outcome, location, { source: f.remote }), filed: false,
  });
  // After the commit. A crash before this line leaves no hash file, so the next run takes the
  // file again; that is harmless, as the rows already applied come out "unchanged".
  await session.mkdirp(tenant.paths.tmp);
  await session.write(f.hashFile, `${f.sha1}  ${f.name}\n`);
  const bakDir = posix.join(tenant.paths.bak, epoch);
  let note: string | null = null;
  try {
    await session.mkdirp(bakDir);
    await writeKeepResults(ctx, bakDir, outcome);
  } catch (err) {
    if (err instanceof RemoteError && err.connectionLost) throw err;
    note = `result.json could not be written to ${bakDir} (${printable(errorMessage(err))}).`;
  }
  await appendRemoteLog(ctx, epoch, outcome.files);
  await deps.store.outbox.file(record.id, location, note);
  outcome.remotePath = location;
}

async function writeKeepResults(ctx: RunContext, bakDir: string, outcome: EpochOutcome): Promise<void> {
  const { writeErrorsCsv } = await import('../import/errors-csv.js');
  const f = outcome.files[0];
  let errorsCsv: string | null = null;
  if (f.importId !== null && f.counts.failed > 0) {
    const row = await ctx.deps.store.imports.get(f.importId);
    if (row?.header) {
      const local = path.join(ctx.workDir, `errors-${f.importId}.csv`);
      await writeErrorsCsv(local, row.header, ctx.deps.store.imports.errorRows(f.importId));
      await ctx.session.write(posix.join(bakDir, 'errors.csv'), fs.readFileSync(local));
      fs.rmSync(local, { force: true });
      errorsCsv = 'errors.csv';
    }
  }
  const summary = {
    tenant: ctx.tenant.id,
    epoch: outcome.epoch,
    status: outcome.status,
    processedAt: (await ctx.deps.store.now()).toISOString(),
    files: [{ file: f.file, kind: f.kind || null, status: f.status, message: f.message, ...f.counts, errorsCsv }],
  };
  await ctx.session.write(posix.join(bakDir, 'result.json'), JSON.stringify(summary, null, 2) + '\n');
}

async function failKeepFile(ctx: RunContext, f: RemoteEntry, err: unknown): Promise<void> {
  const { tenant, deps } = ctx;
  const message = failureReason(f.name, err);
  ctx.log.error({ file: printable(f.name), err: errorMessage(err) }, `${printable(f.name)} failed: ${message}`);
  const epoch = epochName(new Date());
  const file = { file: f.name, kind: kindForFile(tenant, f.name) ?? '', status: 'failed' as const, message, counts: emptyCounts(), importId: null as number | null, contentSha1: '', sampleErrors: [] };
  const outcome: EpochOutcome = { epoch, status: 'failed', files: [file], remotePath: posix.join(tenant.paths.upload, f.name), notes: [] };
  ctx.result.epochs.push(outcome);
  if (ctx.opts.dryRun) return;
  file.importId = await deps.store.imports.recordUnapplied({
    runId: ctx.runId, tenant: tenant.id, epoch, file: f.name, kind: file.kind || null, status: 'failed', message, contentSha1: null,
    counts: file.counts, actor: tenant.options.actor, startedAt: new Date().toISOString(),
  });
  // Not tried again on every tick: only once the file changes.
  await deps.store.uploads.setAside(tenant.id, outcome.remotePath!, `${f.size}:${f.mtime}`, message);
  await deps.store.outbox.record({
    tenant: tenant.id, kind: 'epoch', dedupeKey: `epoch:${tenant.id}:${epoch}:${crypto.randomUUID()}`, epoch,
    payload: payloadOf(outcome, outcome.remotePath, { source: outcome.remotePath }), filed: true,
  });
}

/**
 * Dry run of an `auto`/`all` tenant: the settled loose files a real run would move into new
 * epochs are checked in place, under the name they would get, and nothing is moved.
 */
export async function previewLooseFiles(ctx: RunContext, loose: RemoteEntry[]): Promise<void> {
  const { tenant, session, deps } = ctx;
  const candidates = loose.filter((f) => isPromotable(tenant, f.name) && isSafeName(f.name));
  const { ready, settling } = await checkSettled({ session, store: deps.store, tenant, recheckSeconds: deps.config.settleRecheckSeconds }, tenant.paths.upload, candidates);
  ctx.result.settling.push(...settling);
  for (const [i, f] of ready.entries()) {
    const name = promotedName(tenant, f.name);
    const kind = kindForFile(tenant, name);
    const epoch = epochName(new Date());
    const remote = posix.join(tenant.paths.upload, f.name);
    if (!kind) {
      const message = `misnamed file "${printable(name)}"; expected one of ${Object.keys(tenant.files).map((n) => `"${n}"`).join(', ')}.`;
      const file = { file: name, kind: '', status: 'rejected' as const, message, counts: emptyCounts(), importId: null, contentSha1: '', sampleErrors: [] };
      ctx.result.epochs.push({ epoch, status: 'rejected', files: [file], remotePath: remote, notes: [] });
      continue;
    }
    const local = path.join(ctx.workDir, `preview-${i}.csv`);
    try {
      await session.download(remote, local);
      const result = await importFile({
        store: deps.store, kinds: deps.kinds, hasher: null, tenant: tenant.id, kind, options: tenant.options, encoding: tenant.encoding,
        maxRecordBytes: deps.config.limits.maxRecordBytes, parseThreads: deps.config.limits.parseThreads, digestKey: deps.digestKey, localPath: local, epoch, file: name, runId: ctx.runId, mode: 'dry-run',
      });
      ctx.result.epochs.push({ epoch, status: result.status, files: [result], remotePath: remote, notes: [] });
    } finally {
      fs.rmSync(local, { force: true });
    }
  }
}

async function alreadyProcessed(ctx: RunContext, remote: string, sha1: string, hashFile: string): Promise<boolean> {
  if (!(await ctx.deps.store.uploads.contentSeen(ctx.tenant.id, remote, sha1))) return false;
  try {
    return (await ctx.session.readText(hashFile)).trim().startsWith(sha1);
  } catch (err) {
    if (isNoSuchFile(err)) return false;
    throw err;
  }
}
