// What every start of a run or a daemon does first, and what each does after: clean up after a
// killed process (its local folder, its runs still marked running), report outcomes a crash
// left unreported, and deliver the mail queue.
import type { Config } from '../config.js';
import { errorMessage } from '../errors.js';
import type { Logger } from '../log.js';
import { deliverQueuedMail } from '../mail/delivery.js';
import type { Store } from '../store/types.js';
import { HEARTBEAT_STALE_MS } from './status.js';
import { hostName, ownerIsGone, parseOwner, processId, tokenOf } from '../worker/identity.js';
import { reportOutcomes } from '../worker/reporting.js';
import { sweepWorkDir, type LiveOwners } from '../worker/workdir.js';

interface Deps {
  store: Store;
  config: Config;
  log: Logger;
}

export async function recoverLeftovers(app: Deps): Promise<void> {
  const removed = await sweepWorkDir(app.config.workDir, () => liveIdentities(app));
  if (removed.length) app.log.info({ folders: removed }, `removed ${removed.length} work folder(s) left by processes that stopped`);
  await markInterruptedRuns(app);
  await reportOutcomes(app).catch((err) => app.log.warn({ err: errorMessage(err) }, `could not queue the reports left from before: ${errorMessage(err)}`));
}

/**
 * The identities of the processes running a tenant now (a run's work folder exists only while it
 * holds the tenant's lease): an unexpired lease whose owner is not known to be dead. Null when
 * the store cannot be asked (then only old folders are removed).
 */
async function liveIdentities(app: Deps): Promise<LiveOwners | null> {
  try {
    const owners = (await app.store.leases.liveOwners()).filter((o) => !ownerIsGone(o));
    const here = owners.map(parseOwner).filter((o) => o.host === hostName);
    return { tokens: new Set(owners.map(tokenOf).filter((t): t is string => t !== null)), pids: new Set(here.map((o) => o.pid)) };
  } catch (err) {
    app.log.warn({ err: errorMessage(err) }, `could not read the live leases (${errorMessage(err)}); only work folders older than a day are removed`);
    return null;
  }
}

/**
 * Runs still marked running whose process is gone: on this machine by their pid, elsewhere by
 * their tenant lease (a live run renews it every third of leaseSeconds).
 */
export async function markInterruptedRuns(app: Deps): Promise<number> {
  const { store } = app;
  const running = await store.runs.running();
  if (running.length === 0) return 0;
  const now = (await store.now()).getTime();
  const dead: number[] = [];
  for (const r of running) {
    if (ownerIsGone(r.owner)) {
      dead.push(r.id);
      continue;
    }
    const old = Date.parse(r.startedAt) < now - app.config.leaseSeconds * 1000;
    if (old && !(await store.leases.tenantsHeldBy(r.owner)).includes(r.tenant)) dead.push(r.id);
  }
  await store.runs.markInterrupted(dead, 'the worker stopped before the run finished');
  if (dead.length) app.log.info({ runs: dead }, `${dead.length} run(s) of workers that stopped are marked interrupted`);
  return dead.length;
}

/** Triggers taken by daemons that are gone (dead here, or silent for a minute anywhere): pending again. */
export async function recoverOrphanedTriggers(app: Deps): Promise<void> {
  const live = new Set((await app.store.daemons.list()).filter((d) => d.heartbeatAgeMs < HEARTBEAT_STALE_MS).map((d) => d.owner));
  live.add(processId);
  const retaken = await app.store.triggers.recoverOrphans((owner) => ownerIsGone(owner) || !live.has(owner));
  if (retaken) app.log.info({ triggers: retaken }, `${retaken} trigger(s) taken by a daemon that stopped are pending again`);
}

/** The epochs, per tenant `wanted`, claimed by another worker whose lease ran out (or whose process is gone). */
export async function abandonedClaimsByTenant(store: Store, wanted: (tenant: string) => boolean): Promise<Map<string, string[]>> {
  const now = (await store.now()).toISOString();
  const out = new Map<string, string[]>();
  for (const c of await store.leases.claims()) {
    if (!wanted(c.tenant) || c.owner === processId || !(c.expiresAt < now || ownerIsGone(c.owner))) continue;
    out.set(c.tenant, [...(out.get(c.tenant) ?? []), c.epoch]);
  }
  return out;
}

/** Ticks are kept a day: only a tick that is due now is ever claimed, the rest is history. */
const TICKS_KEPT_MS = 24 * 3600_000;

/** Forgets schedule ticks older than a day (by the store's clock). */
export async function pruneScheduleTicks(store: Store): Promise<void> {
  const now = await store.now();
  await store.schedule.prune(new Date(now.getTime() - TICKS_KEPT_MS).toISOString());
}

export async function deliverMail(app: Deps, tenant?: string): Promise<void> {
  try {
    const r = await deliverQueuedMail(app.store, app.config, { tenant, log: app.log });
    if (r.sent || r.failed) app.log.info(r, `mail: ${r.sent} sent, ${r.failed} failed, ${r.pending} still queued`);
  } catch (err) {
    app.log.warn({ err: errorMessage(err) }, 'mail delivery failed; the reports stay queued and are retried on the next run');
  }
}
