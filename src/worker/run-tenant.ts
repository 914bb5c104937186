// One run of one tenant: take the tenant's lease, connect, recover abandoned claims, promote
// settled loose files, then claim and process ready epochs oldest first, keep-in-place files,
// and report. A failure of one epoch is that epoch's (epoch.ts); a lost connection or a tenant
// misconfiguration fails the run, recorded against this tenant only. Every path closes the
// session, removes the local folder, finishes the run record and releases the lease.
import posix from 'node:path/posix';
import { resolveSftp, type SftpSettings, type TenantConfig } from '../config.js';
import { ConfigError, errorMessage, HostKeyMismatchError, RemoteError } from '../errors.js';
import { isNoSuchFile, SftpSession, type RemoteEntry } from '../sftp/client.js';
import type { RunStatus } from '../store/types.js';
import { keepHeapSmall } from '../memory.js';
import { printable } from '../text.js';
import { emptyResult, worstStatus, type RunContext, type RunDeps, type RunOptions, type TenantRunResult } from './context.js';
import { abandonedClaims, claimEpoch, writeClaimFile } from './claims.js';
import { processEpoch, refusedNameReason, signature } from './epoch.js';
import { ownerIsGone, processId } from './identity.js';
import { previewLooseFiles, processKeepFiles } from './keep-files.js';
import { reportOutcomes } from './reporting.js';
import { checkSettled } from './settle.js';
import { COMPLETE, EPOCH_RE, finishInterruptedPromotions, HELD_DIR, isPromotable, PROCESSING_DIR, promote, scanUpload, type UploadScan } from './uploads.js';
import fs from 'node:fs';
import { makeRunDir } from './workdir.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function runTenant(deps: RunDeps, tenant: TenantConfig, opts: RunOptions, body: (ctx: RunContext) => Promise<void> = discoverAndProcess): Promise<TenantRunResult> {
  const { store, config } = deps;
  let lease = await store.leases.acquireTenant(tenant.id, processId, config.leaseSeconds, ownerIsGone);
  if (!lease.ok && opts.waitForLockSeconds) {
    deps.log.info({ tenant: tenant.id, owner: lease.owner }, `tenant ${tenant.id} is being processed by ${lease.owner}; waiting for it to finish`);
    const until = Date.now() + opts.waitForLockSeconds * 1000;
    while (!lease.ok && Date.now() < until && !opts.signal?.aborted) {
      await sleep(250);
      lease = await store.leases.acquireTenant(tenant.id, processId, config.leaseSeconds, ownerIsGone);
    }
  }
  if (!lease.ok) {
    return { ...emptyResult(tenant.id), status: 'busy', message: `tenant ${tenant.id} is already being processed by ${lease.owner}; try again when it finishes` };
  }
  let runId: number;
  try {
    runId = await store.runs.start({ tenant: tenant.id, reason: opts.reason, owner: processId, dryRun: opts.dryRun });
  } catch (err) {
    await store.leases.releaseTenant(tenant.id, processId).catch(() => {});
    throw err;
  }
  const log = deps.log.child({ tenant: tenant.id, run: runId });
  let result = emptyResult(tenant.id, runId);
  let ctx: RunContext | undefined;
  const releaseHeap = keepHeapSmall();
  const renew = setInterval(() => {
    store.leases.renew(processId, config.leaseSeconds).catch((err) => log.warn({ err: errorMessage(err) }, `could not renew the lease: ${errorMessage(err)}`));
    for (const [epoch, dir] of ctx?.claimed ?? []) void writeClaimFile(ctx!, epoch, dir).catch(() => {});
  }, Math.max(1000, (config.leaseSeconds * 1000) / 3));
  renew.unref();
  const workDir = makeRunDir(config.workDir);
  let session: SftpSession | undefined;
  let settings: SftpSettings | undefined;
  try {
    settings = resolveSftp(tenant);
    session = (await takeKept(deps, tenant, settings, log)) ?? (await SftpSession.connect(settings, tenant.id, { log }));
    ctx = { deps, tenant, opts, session, runId, workDir, log, result, claimed: new Map() };
    await body(ctx);
    result.status = result.status === 'interrupted' ? 'interrupted' : overallStatus(result);
    const misfiled = result.epochs.filter((e) => e.misfiled);
    if (misfiled.length && result.status !== 'interrupted') {
      result.message = misfiled.map((e) => `upload ${e.epoch} ${e.misfiled}; it is in ${e.remotePath}`).join('; ');
    }
  } catch (err) {
    result = { ...result, status: 'failed', message: runFailure(tenant, err) };
    log.error({ err: errorMessage(err), stack: err instanceof RemoteError || err instanceof ConfigError ? undefined : (err as Error)?.stack }, result.message!);
  } finally {
    clearInterval(renew);
    releaseHeap();
    if (session) await closeOrKeep(deps, tenant, settings!, session, result.status);
    fs.rmSync(workDir, { recursive: true, force: true });
    await store.runs.finish(runId, result.status, result.message, settlingNote(result)).catch((err) => log.error({ err: errorMessage(err) }, 'could not record the end of the run'));
    await store.leases.releaseTenant(tenant.id, processId).catch(() => {});
  }
  if (!opts.dryRun) await reportOutcomes(deps, tenant.id).catch((err) => log.error({ err: errorMessage(err) }, `could not queue the reports: ${errorMessage(err)}; they are queued on the next run`));
  log.info({ status: result.status, epochs: result.epochs.length }, `run finished: ${result.status}${result.message ? ` (${result.message})` : ''}`);
  return result;
}

/** The connection kept from the tenant's last run, when the daemon kept one and it still answers. */
async function takeKept(deps: RunDeps, tenant: TenantConfig, settings: SftpSettings, log: RunContext['log']): Promise<SftpSession | null> {
  if (!deps.keptSessions) return null;
  const kept = await deps.keptSessions.take(tenant.id, settings);
  if (kept) log.debug('using the SFTP connection kept open since the last run');
  return kept;
}

/** A run that did not fail leaves a healthy connection for the next one, when the tenant asks for it. */
async function closeOrKeep(deps: RunDeps, tenant: TenantConfig, settings: SftpSettings, session: SftpSession, status: RunStatus): Promise<void> {
  const seconds = tenant.sftp.keepOpenSeconds ?? 0;
  if (deps.keptSessions && seconds > 0 && status !== 'failed' && status !== 'interrupted') await deps.keptSessions.keep(tenant.id, settings, session, seconds);
  else await session.close();
}

function runFailure(tenant: TenantConfig, err: unknown): string {
  if (err instanceof HostKeyMismatchError || err instanceof ConfigError) return err.message;
  if (err instanceof RemoteError) return `run failed: ${err.message}`;
  return `run failed unexpectedly: ${printable(errorMessage(err))}`;
}

function overallStatus(result: TenantRunResult): RunStatus {
  if (result.epochs.length === 0) return 'nothing';
  if (result.epochs.some((e) => e.misfiled)) return 'failed';
  const worst = worstStatus(result.epochs.map((e) => e.status));
  return worst === 'applied' || worst === 'discarded' ? 'ok' : worst === 'failed' ? 'failed' : 'errors';
}

function settlingNote(result: TenantRunResult): string | null {
  return result.settling.length ? JSON.stringify(result.settling) : null;
}

/** The body of a normal run (schedule, --now, trigger). */
async function discoverAndProcess(ctx: RunContext): Promise<void> {
  const { tenant, session, deps, opts, result } = ctx;
  const upload = tenant.paths.upload;
  let scan;
  try {
    scan = await scanUpload(session, upload);
  } catch (err) {
    if (isNoSuchFile(err)) throw new ConfigError(`the upload folder ${upload} does not exist on the SFTP host; create it or fix tenants.${tenant.id}.paths.upload`);
    throw err;
  }
  const work: { epoch: string; dir: string }[] = [];
  if (!opts.dryRun) {
    if (scan.ours.includes(PROCESSING_DIR)) work.push(...(await abandonedClaims(ctx)));
    if (scan.ours.some((n) => n.startsWith('.promoting-'))) scan.ready.push(...(await finishInterruptedPromotions(session, upload, scan.ours, ctx.log)));
    if (scan.ours.includes(HELD_DIR)) await session.rmdir(posix.join(upload, HELD_DIR)).catch(() => {}); // only when empty
  }
  if ((tenant.loose === 'auto' || tenant.loose === 'all') && !opts.dryRun) {
    const candidates = scan.loose.filter((f) => isPromotable(tenant, f.name));
    if (candidates.length) {
      const { ready, settling } = await checkSettled({ session, store: deps.store, tenant, recheckSeconds: deps.config.settleRecheckSeconds }, upload, candidates);
      result.settling.push(...settling);
      for (const f of ready) scan.ready.push(await promote(session, deps.store, tenant, f, ctx.log));
    }
  }
  scan.ready.sort(); // oldest first, promoted and finished promotions included
  await noteStale(ctx, scan.incomplete);
  await noteRefused(ctx, scan);
  for (const epoch of scan.ready) work.push({ epoch, dir: posix.join(upload, epoch) });
  const keep = tenant.loose === 'keep' && scan.loose.length > 0;
  if (work.length === 0 && !keep && !(opts.dryRun && scan.loose.length)) return;
  // Discovery is done: processing waits for one of the process's `concurrency` slots.
  const release = await deps.processing?.acquire();
  try {
    await processWork(ctx, work, scan.loose);
  } finally {
    release?.();
  }
  // Every claim of this run is filed away: the claims folder goes too, not left empty in the
  // district's upload folder until the next run (a server refuses to remove one that is not empty).
  if (!opts.dryRun && work.length > 0 && ctx.claimed.size === 0) await session.rmdir(posix.join(upload, PROCESSING_DIR)).catch(() => {});
}

async function processWork(ctx: RunContext, work: { epoch: string; dir: string }[], loose: RemoteEntry[]): Promise<void> {
  const { tenant, deps, opts, result } = ctx;
  const upload = tenant.paths.upload;
  for (const item of work) {
    if (interrupted(ctx)) return;
    let dir: string | null = item.dir;
    if (!opts.dryRun && posix.dirname(item.dir) === upload) {
      if (await isSetAside(ctx, item.dir)) continue;
      dir = await claimEpoch(ctx, item.epoch, item.dir);
    }
    if (!dir) continue;
    const notes = (await deps.store.uploads.epochUsed(tenant.id, item.epoch)) && !opts.dryRun ? [reusedNote(item.epoch)] : [];
    result.epochs.push(await processEpoch(ctx, item.epoch, dir, notes));
  }
  if (tenant.loose === 'keep') await processKeepFiles(ctx, loose);
  // A dry run moves nothing, so loose files that a real run would promote are checked where they lie.
  else if (opts.dryRun) await previewLooseFiles(ctx, loose);
}

const reusedNote = (epoch: string) =>
  `This upload reused the name ${epoch} of an earlier upload; it was processed as a new upload. Give each upload a new folder name (the time of the upload).`;

/** An epoch that failed and could not be moved stays where it is: not taken again until it changes. */
async function isSetAside(ctx: RunContext, dir: string): Promise<boolean> {
  const list = await ctx.deps.store.uploads.setAsideList(ctx.tenant.id);
  if (!list.some((s) => s.path === dir)) return false;
  return ctx.deps.store.uploads.isSetAside(ctx.tenant.id, dir, signature(await ctx.session.list(dir)));
}

/** True (and the result says so) once a graceful stop was asked for. */
function interrupted(ctx: RunContext): boolean {
  if (!ctx.opts.signal?.aborted) return false;
  ctx.result.status = 'interrupted';
  ctx.result.message = 'stopped before all uploads were processed; the rest stay for the next run';
  return true;
}

/** Epochs without COMPLETE older than staleAfterHours: told once, never processed. */
async function noteStale(ctx: RunContext, incomplete: { epoch: string; mtime: number }[]): Promise<void> {
  const { tenant, deps } = ctx;
  const cutoff = Date.now() - tenant.staleAfterHours * 3600_000;
  const old = incomplete.filter((e) => e.mtime <= cutoff).map((e) => e.epoch);
  if (old.length === 0) return;
  const fresh = await deps.store.uploads.unreportedStale(tenant.id, old);
  if (fresh.length === 0) return;
  for (const epoch of fresh) ctx.log.warn({ epoch }, `upload ${epoch} never completed: it has no ${COMPLETE} file; it is left alone`);
  ctx.result.newlyStale.push(...fresh);
  if (ctx.opts.dryRun) return;
  await deps.store.outbox.recordStale(tenant.id, fresh, {
    tenant: tenant.id, kind: 'stale', dedupeKey: `stale:${tenant.id}:${fresh.join(',')}`, epoch: null, filed: true,
    payload: { status: 'applied', files: [], location: null, notes: [], staleUploads: fresh, operators: false, finishedAt: new Date().toISOString() },
  });
}

/**
 * Links and special files in the upload folder, and files whose names we will not take, are never
 * taken: the district is told once (again only when the entry changes).
 */
async function noteRefused(ctx: RunContext, scan: UploadScan): Promise<void> {
  const { tenant, deps } = ctx;
  const refused = [
    ...scan.badNames.map(({ entry, problem }) => ({ entry, key: 'name', reason: refusedNameReason(entry.name, problem, Object.keys(tenant.files)) })),
    ...scan.links.map((entry) => ({
      entry,
      key: 'link',
      reason: `${printable(entry.name)} is ${entry.type === 'link' ? 'a symbolic link' : 'not a plain file or folder'}; links are never followed. Upload the file or folder itself.`,
    })),
  ];
  for (const { entry: l, key, reason } of refused) {
    const relevant = EPOCH_RE.test(l.name) || /\.csv$/i.test(l.name) || Object.keys(tenant.files).some((f) => f.toLowerCase() === l.name.toLowerCase());
    if (!relevant) continue;
    ctx.result.skipped.push({ name: l.name, reason });
    if (ctx.opts.dryRun) continue;
    const path = posix.join(tenant.paths.upload, l.name);
    const sig = `${l.type}:${l.size}:${l.mtime}`;
    if (await deps.store.uploads.isSetAside(tenant.id, path, sig)) continue;
    await deps.store.uploads.setAside(tenant.id, path, sig, reason);
    ctx.log.warn({ name: printable(l.name) }, reason);
    const file = { file: l.name, kind: null, status: 'rejected' as const, message: reason, counts: { rows: 0, created: 0, updated: 0, unchanged: 0, deactivated: 0, archived: 0, failed: 0 }, importId: null };
    await deps.store.outbox.record({
      tenant: tenant.id, kind: 'epoch', dedupeKey: `${key}:${tenant.id}:${path}:${sig}`, epoch: EPOCH_RE.test(l.name) ? l.name : null, filed: true,
      payload: { status: 'rejected', files: [file], location: path, notes: [], staleUploads: [], operators: false, finishedAt: new Date().toISOString() },
    });
  }
}
