// What `status` (and the console) knows about each tenant, all from the store and the
// configuration: status never connects to an SFTP host, so it works from any machine that has
// the database.
import type { TenantConfig } from '../config.js';
import type { AuditEntry, DaemonInfo, HeldUpload, ImportCounts, MailQueueSummary, Outcome, RunSummary, Store } from '../store/types.js';
import { ownerIsGone } from '../worker/identity.js';
import { feedOf, feedTimes, type FeedStatus, type FeedTimes } from './overdue.js';
import { nextRunOf } from './schedule.js';

export interface ImportSummary extends ImportCounts {
  id: number;
  /** For an undo: the import it undid. */
  revertsImportId: number | null;
  actor: string | null;
  epoch: string;
  file: string;
  kind: string | null;
  status: string;
  message: string | null;
  startedAt: string;
  finishedAt: string;
}

export interface LiveDaemon extends DaemonInfo {
  /** Tenants it holds the lease of (running now). */
  inHand: string[];
}

export interface TenantStatus {
  tenant: string;
  name: string;
  enabled: boolean;
  schedule: string;
  timezone: string;
  /** ISO time of the next scheduled run (null when disabled). */
  nextRun: string | null;
  lastRun: RunSummary | null;
  imports: ImportSummary[];
  /** Waiting work known to the store: triggers not yet taken, epochs claimed and not yet filed away. */
  pending: { triggers: number; claimed: { epoch: string; owner: string; expiresAt: string }[] };
  /** Loose files the last run saw and did not take yet, with when they will be. */
  settling: RunSummary['settling'];
  /** Held full syncs not released, discarded or superseded since. */
  held: HeldUpload[];
  /** Uploads without COMPLETE, reported as never completed. */
  stale: { epoch: string; firstSeen: string }[];
  /** Uploads that failed and stay set aside until they change, and links that are never followed. */
  setAside: { path: string; reason: string; at: string }[];
  /** Recent uploads that could not be filed where they belong (bak unusable), newest first, until one was. */
  notFiled: { epoch: string | null; location: string | null; reason: string | null; at: string }[];
  queuedMail: MailQueueSummary;
  /** When the last upload was applied, and whether that is longer ago than the tenant expects. */
  feed: FeedStatus;
  /** What people did by hand (release, discard, undo, run now, resend), newest first. */
  audit: AuditEntry[];
  daemon: { running: boolean; owner: string | null; host: string | null; since: string | null; heartbeatAt: string | null };
}

/** A daemon is live while its heartbeat is fresh (every few seconds; a minute of silence is death). */
export const HEARTBEAT_STALE_MS = 60_000;

/** Daemons with a fresh heartbeat (and, on this machine, a process that still runs). */
export async function liveDaemons(store: Store): Promise<LiveDaemon[]> {
  const all = await store.daemons.list();
  const live = all.filter((d) => d.heartbeatAgeMs < HEARTBEAT_STALE_MS && !ownerIsGone(d.owner));
  return Promise.all(live.map(async (d) => ({ ...d, inHand: await store.leases.tenantsHeldBy(d.owner) })));
}

/** `times`: feedTimes(store), read once when asking about many tenants. */
export async function tenantStatus(store: Store, tenant: TenantConfig, daemons: LiveDaemon[], recent = 20, times?: FeedTimes): Promise<TenantStatus> {
  const daemon = daemons.find((d) => d.tenants.includes(tenant.id));
  const [lastRun, imports, triggers, claims, held, stale, setAside, queuedMail, audit, feeds, outcomes] = await Promise.all([
    store.runs.last(tenant.id),
    store.imports.recent(tenant.id, recent),
    store.triggers.pending(tenant.id),
    store.leases.claims(tenant.id),
    store.imports.held(tenant.id),
    store.uploads.stale(tenant.id),
    store.uploads.setAsideList(tenant.id),
    store.mail.summary(tenant.id),
    store.audit.recent({ tenant: tenant.id, limit: recent }),
    times ?? feedTimes(store),
    store.outbox.recent(tenant.id, recent),
  ]);
  return {
    tenant: tenant.id,
    name: tenant.name,
    enabled: tenant.enabled,
    schedule: tenant.schedule,
    timezone: tenant.timezone,
    nextRun: nextRunOf(tenant)?.toISOString() ?? null,
    lastRun,
    imports: imports.map((r) => ({
      id: r.id, revertsImportId: r.revertsImportId, actor: r.actor, epoch: r.epoch, file: r.file, kind: r.kind, status: r.status, message: r.message, ...r.counts,
      startedAt: r.startedAt, finishedAt: r.finishedAt,
    })),
    pending: { triggers: triggers.length, claimed: claims.map((c) => ({ epoch: c.epoch, owner: c.owner, expiresAt: c.expiresAt })) },
    settling: lastRun?.settling ?? [],
    held,
    stale,
    setAside,
    notFiled: notFiled(outcomes),
    queuedMail,
    feed: feedOf(tenant, feeds),
    audit,
    daemon: { running: !!daemon, owner: daemon?.owner ?? null, host: daemon?.host ?? null, since: daemon?.startedAt ?? null, heartbeatAt: daemon?.heartbeatAt ?? null },
  };
}

/**
 * The latest uploads that were not filed where they belong, until the newest one that was (bak
 * works again): an operator sees the problem until it is fixed, not forever.
 */
function notFiled(outcomes: Outcome[]): TenantStatus['notFiled'] {
  const out: TenantStatus['notFiled'] = [];
  for (const o of outcomes) {
    if (!o.filed || o.epoch === null) continue;
    if (!o.payload.misfiled) {
      if (o.payload.status !== 'failed') break;
      continue;
    }
    out.push({ epoch: o.epoch, location: o.payload.location, reason: o.payload.locationNote ?? null, at: o.createdAt });
  }
  return out;
}
