// Feeds that stop: a tenant with `expectEveryHours` whose last successful import is older than
// that is overdue. `status`, the console and the metrics show it; the daemon tells the operators
// once per episode (an outcome of kind `overdue` through the outbox, keyed by the last success,
// so every daemon of a cluster may look and only one notice is ever stored). A tenant that never
// delivered counts from its first run: a feed never set up is as overdue as one that stopped.
import type { TenantConfig } from '../config.js';
import type { Store } from '../store/types.js';

export interface FeedStatus {
  /** null: the tenant expects nothing (no `expectEveryHours`). */
  expectEveryHours: number | null;
  /** When the last successful import (applied, with or without row errors) finished. */
  lastSuccess: string | null;
  /** When it is (or was) overdue without another success; null when nothing is expected. */
  dueBy: string | null;
  overdue: boolean;
}

export interface FeedTimes {
  lastSuccess: Map<string, string>;
  firstRuns: Map<string, string>;
  now: Date;
}

/** What the store knows of every tenant's deliveries, and its clock: one read for all tenants. */
export async function feedTimes(store: Store): Promise<FeedTimes> {
  const [lastSuccess, firstRuns, now] = await Promise.all([store.runs.lastSuccess(), store.runs.firstRuns(), store.now()]);
  return { lastSuccess, firstRuns, now };
}

export function feedOf(tenant: TenantConfig, times: FeedTimes): FeedStatus {
  const lastSuccess = times.lastSuccess.get(tenant.id) ?? null;
  const hours = tenant.expectEveryHours ?? null;
  const since = lastSuccess ?? times.firstRuns.get(tenant.id) ?? null;
  if (hours === null || since === null) return { expectEveryHours: hours, lastSuccess, dueBy: null, overdue: false };
  const dueBy = new Date(Date.parse(since) + hours * 3600_000);
  return { expectEveryHours: hours, lastSuccess, dueBy: dueBy.toISOString(), overdue: tenant.enabled && times.now.getTime() > dueBy.getTime() };
}

const hoursText = (h: number) => (Number.isInteger(h) ? `${h} hours` : `${Number(h.toFixed(3))} hours`);

/**
 * Stores an operators' notice for each of `tenants` that is overdue and was not told about in
 * this episode. Returns the tenants noticed now. Reporting and mailing are the outbox's.
 */
export async function noticeOverdue(store: Store, tenants: TenantConfig[]): Promise<string[]> {
  const watched = tenants.filter((t) => t.expectEveryHours !== undefined && t.enabled);
  if (watched.length === 0) return [];
  const times = await feedTimes(store);
  const noticed: string[] = [];
  for (const t of watched) {
    const feed = feedOf(t, times);
    if (!feed.overdue || !feed.dueBy) continue;
    if (await store.schedule.overdueReported(t.id, feed.dueBy)) continue;
    const episode = feed.lastSuccess ?? `never since ${times.firstRuns.get(t.id)}`;
    const last = await store.runs.last(t.id);
    const { created } = await store.outbox.record({
      tenant: t.id,
      kind: 'overdue',
      dedupeKey: `overdue:${t.id}:${episode}`,
      epoch: null,
      filed: true,
      payload: {
        status: 'failed',
        files: [],
        location: null,
        notes: [
          feed.lastSuccess
            ? `The last upload applied finished at ${feed.lastSuccess.slice(0, 19).replace('T', ' ')} UTC.`
            : `No upload of ${t.id} has ever been applied; its first run was at ${String(times.firstRuns.get(t.id)).slice(0, 19).replace('T', ' ')} UTC.`,
          last ? `The last run started at ${last.startedAt.slice(0, 19).replace('T', ' ')} UTC and ended ${last.status}${last.message ? `: ${last.message}` : ''}.` : 'No run of it is recorded.',
          `Ask the district whether its export still runs and reaches its upload folder. This notice is sent once; the next comes only after an upload is applied and the feed stops again.`,
        ],
        staleUploads: [],
        operators: true,
        headline: `No upload from ${t.name} has been applied ${feed.lastSuccess ? 'since' : 'since its first run at'} ${(feed.lastSuccess ?? times.firstRuns.get(t.id) ?? '').slice(0, 16).replace('T', ' ')} UTC; one is expected every ${hoursText(feed.expectEveryHours!)}.`,
        summary: `feed overdue (expected every ${hoursText(feed.expectEveryHours!)})`,
        finishedAt: times.now.toISOString(),
      },
    });
    if (created) noticed.push(t.id);
  }
  return noticed;
}
