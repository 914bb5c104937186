// One epoch, from claim to filed away. Its files are downloaded and imported one by one (each
// in its own transaction); whatever goes wrong with one epoch is recorded against that epoch
// (status `failed`, a reason the district can act on) and the epoch is set aside, so it never
// blocks the uploads behind it. Only a lost connection stops the run: the claim is recovered
// next time. The outcome is stored before the upload moves, and confirmed once it is where the
// report will say it is (a crash in between is finished by the next run).
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import posix from 'node:path/posix';
import { errorMessage, RemoteError } from '../errors.js';
import { writeErrorsCsv } from '../import/errors-csv.js';
import { importFile, type FileImportResult } from '../import/import-file.js';
import { threadsFor } from '../import/parse-parts.js';
import { warmParseThreads } from '../import/parse-thread.js';
import { nameProblem, type RemoteEntry } from '../sftp/client.js';
import { emptyCounts, type Outcome, type OutcomeKind, type OutcomePayload } from '../store/types.js';
import { printable } from '../text.js';
import { worstStatus, type EpochOutcome, type RunContext } from './context.js';
import { followDownload } from './follow-download.js';
import { CLAIM_FILE, COMPLETE, HELD_DIR, kindForFile } from './uploads.js';

/** Processes a claimed epoch (or finishes filing one whose outcome a crash left unfiled). */
export async function processEpoch(ctx: RunContext, epoch: string, dir: string, notes: string[] = []): Promise<EpochOutcome> {
  if (!ctx.opts.dryRun) {
    const unfiled = await ctx.deps.store.outbox.unfiled(ctx.tenant.id, epoch);
    if (unfiled) return fileAway(ctx, epoch, dir, outcomeOf(epoch, unfiled), unfiled);
  }
  const files: FileImportResult[] = [];
  const outcome: EpochOutcome = { epoch, status: 'applied', files, remotePath: dir, notes };
  let csvs: RemoteEntry[] = [];
  try {
    const entries = await ctx.session.list(dir);
    ctx.log.info({ epoch, files: entries.map((f) => printable(f.name)) }, `processing epoch ${epoch}`);
    const sorted = sortEntries(entries, ctx.tenant.files);
    csvs = sorted.csvs;
    for (const r of sorted.refused) files.push(await rejectFile(ctx, epoch, r.name, r.reason));
    if (csvs.length === 0 && sorted.refused.length === 0) {
      const expected = Object.keys(ctx.tenant.files).join(', ');
      files.push(await rejectFile(ctx, epoch, '(none)', `epoch ${epoch} has a COMPLETE file but no CSV files; upload the CSV files (${expected}) before COMPLETE`));
    }
  } catch (err) {
    if (err instanceof RemoteError && err.connectionLost) throw err;
    files.push(await failFile(ctx, epoch, '(epoch)', err));
  }
  // Each file is its own import: one that fails (unreadable, a parser limit, a bug) is recorded
  // with its reason, and the files after it are still processed and reported.
  for (let i = 0; i < csvs.length; i++) {
    try {
      files.push(await processFile(ctx, epoch, dir, csvs[i], i));
    } catch (err) {
      if (err instanceof RemoteError && err.connectionLost) throw err;
      files.push(await failFile(ctx, epoch, csvs[i].name, err));
    }
  }
  outcome.status = worstStatus(files.map((f) => f.status));
  if (ctx.opts.dryRun) return outcome;
  return fileAway(ctx, epoch, dir, outcome, null);
}

function sortEntries(entries: RemoteEntry[], ctxFiles: Record<string, string>): { csvs: RemoteEntry[]; refused: { name: string; reason: string }[] } {
  const csvs: RemoteEntry[] = [];
  const refused: { name: string; reason: string }[] = [];
  for (const e of entries) {
    if (e.name === COMPLETE || e.name.startsWith('.') || isOurOutput(e.name)) continue;
    const badName = e.type === 'dir' ? null : nameProblem(e.name);
    if (badName) refused.push({ name: e.name, reason: refusedNameReason(e.name, badName, Object.keys(ctxFiles)) });
    else if (e.type === 'link') refused.push({ name: e.name, reason: `${printable(e.name)} is a symbolic link; links are never followed. Upload the file itself.` });
    else if (e.type === 'other') refused.push({ name: e.name, reason: `${printable(e.name)} is not a plain file; upload a CSV file.` });
    else if (e.type === 'file') csvs.push(e);
  }
  csvs.sort((a, b) => a.name.localeCompare(b.name));
  return { csvs, refused };
}

async function processFile(ctx: RunContext, epoch: string, dir: string, entry: RemoteEntry, index: number): Promise<FileImportResult> {
  const { tenant, deps, opts } = ctx;
  const name = entry.name;
  const kind = kindForFile(tenant, name);
  if (!kind) {
    const expected = Object.keys(tenant.files).map((f) => `"${f}"`).join(', ');
    return rejectFile(ctx, epoch, name, `misnamed file "${printable(name)}"; expected one of ${expected}. Rename it and upload the epoch again.`);
  }
  // Local names are ours: a remote name may be too long or strange for this file system.
  const local = path.join(ctx.workDir, `${epoch}-${index}.csv`);
  // The threads that will read it start with the download, not once its header is in.
  const threads = warmParseThreads(kind, tenant.options.sso, threadsFor(entry.size, tenant.encoding, deps.config.limits.parseThreads ?? undefined));
  const download = followDownload(ctx.session, posix.join(dir, name), local);
  try {
    const result = await importFile({
      store: deps.store, kinds: deps.kinds, hasher: deps.hasher, tenant: tenant.id, kind, options: tenant.options, encoding: tenant.encoding,
      maxRecordBytes: deps.config.limits.maxRecordBytes, parseThreads: deps.config.limits.parseThreads, digestKey: deps.digestKey, localPath: local, epoch, file: name, runId: ctx.runId,
      mode: opts.dryRun ? 'dry-run' : 'apply', onProgress: (rows) => opts.onProgress?.(tenant.id, name, rows), follow: download.follow,
    }).catch(async (err: unknown) => {
      // A failed download stops the parse too: the download's own error says what happened.
      throw (await download.failure()) ?? err;
    });
    if (result.appliedBefore) ctx.log.info({ epoch, file: printable(name) }, `${printable(name)} of epoch ${epoch} was applied before (import ${result.importId}); not applied again`);
    logFileResult(ctx, epoch, result);
    ctx.log.debug({ epoch, file: printable(name), downloadMs: download.ms(), ...result.timings }, `${printable(name)}: download ${download.ms()} ms, ${Object.entries(result.timings ?? {}).map(([k, v]) => `${k.replace(/Ms$/, '')} ${v} ms`).join(', ')}`);
    return result;
  } finally {
    await threads.end();
    await download.settled; // never remove a file still being written
    fs.rmSync(local, { force: true });
  }
}

async function rejectFile(ctx: RunContext, epoch: string, file: string, message: string): Promise<FileImportResult> {
  ctx.log.warn({ epoch, file: printable(file) }, printable(message));
  const result: FileImportResult = { file, kind: '', status: 'rejected', message, counts: emptyCounts(), importId: null, contentSha1: '', sampleErrors: [] };
  if (ctx.opts.dryRun) return result;
  result.importId = await ctx.deps.store.imports.recordUnapplied({
    runId: ctx.runId, tenant: ctx.tenant.id, epoch, file, kind: null, status: 'rejected', message, contentSha1: null, counts: emptyCounts(),
    actor: ctx.tenant.options.actor, startedAt: new Date().toISOString(),
  });
  return result;
}

/** A name we will not take (nameProblem), said to the district with the name escaped. */
export function refusedNameReason(name: string, problem: string, expected: string[]): string {
  const example = expected.find((f) => !/[*?]/.test(f));
  // Backslashes doubled: the escapes printable() writes for control characters stay unambiguous.
  return `"${printable(name.replace(/\\/g, '\\\\'))}" ${problem}; such names are not taken. Rename it${example ? ` (for example to ${example})` : ''} and upload it again.`;
}

/** What went wrong, in words a district (and an operator) can act on. */
export function failureReason(file: string, err: unknown): string {
  const text = printable(errorMessage(err));
  if (err instanceof RemoteError) {
    if (/permission denied|EACCES/i.test(text)) return `${printable(file)} cannot be read by the import account (permission denied on the SFTP server). Make it readable, or upload it again, as a new epoch.`;
    if (/no such file|ENOENT/i.test(text)) return `${printable(file)} disappeared while it was being processed. Upload it again as a new epoch.`;
    return `the SFTP server refused an operation on ${printable(file)}: ${text}. Upload it again as a new epoch; if it happens again, contact support.`;
  }
  return `processing ${printable(file)} failed unexpectedly (${text}). Nothing of it was applied; our operators were told. Upload it again as a new epoch once they have fixed it.`;
}

async function failFile(ctx: RunContext, epoch: string, file: string, err: unknown): Promise<FileImportResult> {
  const message = failureReason(file, err);
  ctx.log.error({ epoch, file: printable(file), err: errorMessage(err), stack: (err as Error)?.stack }, `epoch ${epoch} failed: ${message}`);
  const kind = kindForFile(ctx.tenant, file) ?? null;
  const result: FileImportResult = { file, kind: kind ?? '', status: 'failed', message, counts: emptyCounts(), importId: null, contentSha1: '', sampleErrors: [] };
  if (ctx.opts.dryRun) return result;
  result.importId = await ctx.deps.store.imports.recordUnapplied({
    runId: ctx.runId, tenant: ctx.tenant.id, epoch, file, kind, status: 'failed', message, contentSha1: null,
    counts: emptyCounts(), actor: ctx.tenant.options.actor, startedAt: new Date().toISOString(),
  });
  return result;
}

function logFileResult(ctx: RunContext, epoch: string, r: FileImportResult): void {
  const c = r.counts;
  const line = `${printable(r.file)}: ${r.status}${r.message ? ` - ${printable(r.message)}` : ''} (rows ${c.rows}, created ${c.created}, updated ${c.updated}, unchanged ${c.unchanged}, deactivated ${c.deactivated}, archived ${c.archived}, failed ${c.failed})`;
  if (r.status === 'applied') ctx.log.info({ epoch, file: printable(r.file), ...c }, line);
  else ctx.log.warn({ epoch, file: printable(r.file), ...c }, line);
}

/** Files the worker itself writes next to an upload: never imported as data. */
export function isOurOutput(name: string): boolean {
  return name === 'result.json' || name === 'errors.csv' || name.endsWith('.errors.csv') || name === CLAIM_FILE;
}

/** `errors.csv`, or `<file>.errors.csv` in an epoch of several files (short enough for any server). */
export function errorsCsvName(file: string, filesInEpoch: number, index: number): string {
  if (filesInEpoch === 1) return 'errors.csv';
  const name = `${file.replace(/\.csv$/i, '')}.errors.csv`;
  return Buffer.byteLength(name) > 200 || /[\u0000-\u001f\u007f]/.test(name) ? `errors-${index + 1}.csv` : name;
}

export function payloadOf(outcome: EpochOutcome, location: string | null, extra: Partial<OutcomePayload> = {}): OutcomePayload {
  return {
    status: outcome.status,
    files: outcome.files.map((f) => ({ file: f.file, kind: f.kind || null, status: f.status, message: f.message, counts: f.counts, importId: f.importId })),
    location,
    notes: outcome.notes,
    staleUploads: [],
    operators: outcome.status === 'held' || outcome.status === 'failed',
    finishedAt: new Date().toISOString(),
    ...extra,
  };
}

function outcomeOf(epoch: string, o: Outcome): EpochOutcome {
  return {
    epoch,
    status: o.payload.status,
    files: o.payload.files.map((f) => ({ ...f, kind: f.kind ?? '', contentSha1: '', sampleErrors: [] })),
    remotePath: o.payload.location,
    notes: o.payload.notes,
  };
}

/**
 * Writes result.json and errors.csv beside the upload, then moves it: to bak, to .held (where
 * `release` finds it), or, when it failed, to the failed folder. A destination that cannot be
 * used (bak is a file, say) falls back to the failed folder, and the report says so. The move is
 * the last step: until then a crash leaves the claim to be recovered.
 */
export async function fileAway(
  ctx: RunContext,
  epoch: string,
  dir: string,
  outcome: EpochOutcome,
  recorded: Outcome | null,
  as: { kind: OutcomeKind; dedupeKey: string } = { kind: 'epoch', dedupeKey: `epoch:${ctx.tenant.id}:${epoch}:${crypto.randomUUID()}` },
): Promise<EpochOutcome> {
  const { tenant, deps, session } = ctx;
  const held = outcome.files.some((f) => f.status === 'held');
  const parent = held ? posix.join(tenant.paths.upload, HELD_DIR) : outcome.status === 'failed' ? tenant.paths.failed : tenant.paths.bak;
  const recordId =
    recorded?.id ??
    (await deps.store.outbox.record({ tenant: tenant.id, kind: as.kind, dedupeKey: as.dedupeKey, epoch, payload: payloadOf(outcome, posix.join(parent, epoch)), filed: false })).id;
  const notes: string[] = [];
  try {
    await writeResults(ctx, dir, outcome);
  } catch (err) {
    if (err instanceof RemoteError && err.connectionLost) throw err;
    notes.push(`result.json and errors.csv could not be written beside the upload (${printable(errorMessage(err))}); errors.csv is attached to this message.`);
  }
  await session.remove(posix.join(dir, CLAIM_FILE)).catch(() => {});
  const moved = await moveTo(ctx, epoch, dir, parent);
  if (moved.note) notes.push(moved.note);
  await appendRemoteLog(ctx, epoch, outcome.files);
  // Not where it belongs (bak is a file, say): whatever was applied, someone has to act, so the
  // district and the operators hear of it and the run says so.
  const misfiled = moved.problem !== undefined;
  await deps.store.outbox.file(recordId, moved.location, notes.length ? notes.join(' ') : null, misfiled);
  await deps.store.leases.dropClaim(tenant.id, epoch);
  ctx.claimed.delete(epoch);
  if (moved.location !== dir) ctx.log.info({ epoch, to: moved.location }, `moved epoch ${epoch} to ${moved.location}`);
  return { ...outcome, remotePath: moved.location, notes: [...outcome.notes, ...notes], ...(misfiled ? { misfiled: moved.problem } : {}) };
}

/** Where the upload went; `note` (for the district) and `problem` (for the run) when not into `parent`. */
async function moveTo(ctx: RunContext, epoch: string, dir: string, parent: string): Promise<{ location: string; note: string | null; problem?: string }> {
  const { session, tenant } = ctx;
  if (posix.dirname(dir) === parent) return { location: dir, note: null }; // a held epoch held again
  try {
    return { location: await renameInto(ctx, epoch, dir, parent), note: null };
  } catch (err) {
    if (err instanceof RemoteError && err.connectionLost) throw err;
    const why = printable(errorMessage(err).replace(/^[^:]+: /, ''));
    const failed = tenant.paths.failed;
    if (parent !== failed) {
      try {
        const location = await renameInto(ctx, epoch, dir, failed);
        ctx.log.error({ epoch, parent, err: why }, `${parent} cannot take epoch ${epoch} (${why}); set aside in ${location}`);
        return {
          location,
          note: `It could not be moved to ${parent} (${why}), so it was put in ${location}; please tell us, or fix ${parent} on your SFTP account.`,
          problem: `could not be moved to ${parent} (${why})`,
        };
      } catch (again) {
        if (again instanceof RemoteError && again.connectionLost) throw again;
      }
    }
    // Nowhere to put it: it stays claimed where it is and is never taken again unless it changes.
    const listing = await session.list(dir).catch(() => [] as RemoteEntry[]);
    await ctx.deps.store.uploads.setAside(tenant.id, dir, signature(listing), `could not be moved to ${parent}: ${why}`);
    ctx.log.error({ epoch, parent, err: why }, `epoch ${epoch} could not be moved to ${parent} (${why}); left in ${dir} and set aside`);
    return { location: dir, note: `It could not be moved to ${parent} (${why}) and stays in ${dir}; please tell us.`, problem: `could not be moved to ${parent} (${why})` };
  }
}

async function renameInto(ctx: RunContext, epoch: string, dir: string, parent: string): Promise<string> {
  const { session } = ctx;
  const kind = await session.exists(parent);
  if (kind === 'file') throw new RemoteError(`${parent} is a file, not a folder`, { connectionLost: false });
  if (!kind) await session.mkdirp(parent);
  let target = posix.join(parent, epoch);
  for (let n = 2; await session.exists(target); n++) target = posix.join(parent, `${epoch}-${n}`);
  await session.rename(dir, target);
  return target;
}

/** A listing's fingerprint: something set aside is looked at again once this changes. */
export function signature(entries: RemoteEntry[]): string {
  return crypto
    .createHash('sha1')
    .update(entries.map((e) => `${e.name}\0${e.size}\0${e.mtime}`).sort().join('\n'))
    .digest('hex');
}

async function writeResults(ctx: RunContext, dir: string, outcome: EpochOutcome): Promise<void> {
  const { session, deps } = ctx;
  const n = outcome.files.length;
  const errorsFiles: (string | null)[] = [];
  for (let i = 0; i < n; i++) {
    const f = outcome.files[i];
    errorsFiles.push(null);
    if (f.importId === null || f.counts.failed === 0) continue;
    const row = await deps.store.imports.get(f.importId);
    if (!row?.header) continue;
    const name = errorsCsvName(f.file, n, i);
    const local = path.join(ctx.workDir, `errors-${f.importId}.csv`);
    try {
      await writeErrorsCsv(local, row.header, deps.store.imports.errorRows(f.importId));
      await session.write(posix.join(dir, name), fs.readFileSync(local));
    } finally {
      fs.rmSync(local, { force: true });
    }
    errorsFiles[i] = name;
  }
  const summary = {
    tenant: ctx.tenant.id,
    epoch: outcome.epoch,
    status: outcome.status,
    processedAt: (await deps.store.now()).toISOString(),
    files: outcome.files.map((f, i) => ({ file: f.file, kind: f.kind || null, status: f.status, message: f.message, ...f.counts, errorsCsv: errorsFiles[i] })),
  };
  await session.write(posix.join(dir, 'result.json'), JSON.stringify(summary, null, 2) + '\n');
}

/** One line per file in the tenant's remote log (best effort: a log never fails an import). */
export async function appendRemoteLog(ctx: RunContext, epoch: string, files: FileImportResult[]): Promise<void> {
  const logPath = ctx.tenant.paths.log;
  if (!logPath || ctx.opts.dryRun) return;
  try {
    await ctx.session.mkdirp(posix.dirname(logPath));
    const clean = (v: string) => printable(v.replace(/[\r\n\t]+/g, ' ')).replace(/"/g, "'");
    const at = (await ctx.deps.store.now()).toISOString();
    const lines = files.map((f) => {
      const c = f.counts;
      return `${at} epoch=${epoch} file="${clean(f.file)}" status="${f.status}" rows=${c.rows} created=${c.created} updated=${c.updated} unchanged=${c.unchanged} deactivated=${c.deactivated} archived=${c.archived} failed=${c.failed}${f.contentSha1 ? ` sha1=${f.contentSha1}` : ''}${f.message ? ` message="${clean(f.message)}"` : ''}\n`;
    });
    await ctx.session.append(logPath, lines.join(''));
  } catch (err) {
    if (err instanceof RemoteError && err.connectionLost) throw err;
    ctx.log.warn({ err: errorMessage(err) }, `could not append to the remote log ${logPath}`);
  }
}

