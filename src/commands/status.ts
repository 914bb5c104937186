// `provisioner status`: per tenant, the last run and its result, the next scheduled run,
// what is waiting (triggers, claimed uploads, held full syncs, uploads that never completed,
// queued mail), whether a daemon serves it, and recent imports. Everything comes from the
// database and the configuration: status never connects to an SFTP host.
import Table from 'cli-table3';
import { openApp, selectTenants } from '../app.js';
import type { TenantConfig } from '../config.js';
import type { Db } from '../db/database.js';
import type { ImportCounts } from '../import/apply.js';
import { mailQueueSummary, type MailQueueSummary } from '../mail/outbox.js';
import { liveDaemons, type DaemonInfo } from '../service/daemons.js';
import { nextRunOf } from '../service/schedule.js';
import { pendingTriggers } from '../service/triggers.js';

export interface ImportSummary extends ImportCounts {
  id: number;
  epoch: string;
  file: string;
  kind: string | null;
  status: string;
  message: string | null;
  startedAt: string;
  finishedAt: string;
}

export interface RunSummary {
  id: number;
  reason: string;
  status: string;
  message: string | null;
  startedAt: string;
  finishedAt: string | null;
}

export interface TenantStatus {
  tenant: string;
  name: string;
  lastRun: RunSummary | null;
  imports: ImportSummary[];
}

export function tenantStatus(db: Db, tenant: { id: string; name: string }, recent = 20): TenantStatus {
  const run = db.prepare('SELECT * FROM runs WHERE tenant = ? ORDER BY id DESC LIMIT 1').get(tenant.id) as Record<string, unknown> | undefined;
  const imports = db.prepare('SELECT * FROM imports WHERE tenant = ? ORDER BY id DESC LIMIT ?').all(tenant.id, recent) as Record<string, unknown>[];
  return {
    tenant: tenant.id,
    name: tenant.name,
    lastRun: run
      ? {
          id: Number(run.id),
          reason: String(run.reason),
          status: String(run.status),
          message: (run.message as string | null) ?? null,
          startedAt: String(run.started_at),
          finishedAt: (run.finished_at as string | null) ?? null,
        }
      : null,
    imports: imports.map((r) => ({
      id: Number(r.id),
      epoch: String(r.epoch),
      file: String(r.file),
      kind: (r.kind as string | null) ?? null,
      status: String(r.status),
      message: (r.message as string | null) ?? null,
      rows: Number(r.rows),
      created: Number(r.created),
      updated: Number(r.updated),
      unchanged: Number(r.unchanged),
      deactivated: Number(r.deactivated),
      archived: Number(r.archived),
      failed: Number(r.failed),
      startedAt: String(r.started_at),
      finishedAt: String(r.finished_at),
    })),
  };
}

export interface HeldImport {
  epoch: string;
  file: string;
  heldAt: string;
  message: string | null;
}

export interface ServiceStatus extends TenantStatus {
  enabled: boolean;
  schedule: string;
  timezone: string;
  /** ISO time of the next scheduled run (null when disabled). */
  nextRun: string | null;
  /** Waiting work known to the database: triggers not yet taken, epochs claimed and not yet filed away. */
  pending: { triggers: number; claimed: string[] };
  /** Files held by the full-sync safety check and not applied since (`run --now --force` applies them). */
  held: HeldImport[];
  /** Uploads without COMPLETE, reported as never completed. */
  stale: { epoch: string; firstSeen: string }[];
  queuedMail: MailQueueSummary;
  daemon: { running: boolean; owner: string | null; since: string | null; heartbeatAt: string | null };
}

export function serviceStatus(db: Db, tenant: TenantConfig, daemons: DaemonInfo[], recent = 20): ServiceStatus {
  const daemon = daemons.find((d) => d.tenants.includes(tenant.id));
  // The latest import of each held file decides: held again, applied with --force, or not.
  // A keep-in-place file gets a new epoch each time it is processed, so there the file name
  // alone identifies it; an epoch's file is the same upload only within its epoch.
  const sameUpload = tenant.loose === 'keep' ? 'j.file = i.file' : 'j.epoch = i.epoch AND j.file = i.file';
  const held = db
    .prepare(
      `SELECT epoch, file, finished_at AS heldAt, message FROM imports i
       WHERE tenant = @t AND status = 'held'
         AND id = (SELECT max(id) FROM imports j WHERE j.tenant = i.tenant AND ${sameUpload})
       ORDER BY id`,
    )
    .all({ t: tenant.id }) as HeldImport[];
  const stale = db
    .prepare(
      `SELECT epoch, first_seen AS firstSeen FROM stale_uploads s
       WHERE tenant = ? AND resolved_at IS NULL
         AND NOT EXISTS (SELECT 1 FROM imports i WHERE i.tenant = s.tenant AND i.epoch = s.epoch) -- completed later after all
       ORDER BY epoch`,
    )
    .all(tenant.id) as { epoch: string; firstSeen: string }[];
  const claimed = db.prepare('SELECT epoch FROM claims WHERE tenant = ? ORDER BY epoch').pluck().all(tenant.id) as string[];
  return {
    ...tenantStatus(db, tenant, recent),
    enabled: tenant.enabled,
    schedule: tenant.schedule,
    timezone: tenant.timezone,
    nextRun: nextRunOf(tenant)?.toISOString() ?? null,
    pending: { triggers: pendingTriggers(db, tenant.id).length, claimed },
    held,
    stale,
    queuedMail: mailQueueSummary(db, tenant.id),
    daemon: { running: !!daemon, owner: daemon?.owner ?? null, since: daemon?.startedAt ?? null, heartbeatAt: daemon?.heartbeatAt ?? null },
  };
}

export function statusCommand(flags: { config?: string; tenant?: string[]; json?: boolean }): number {
  const app = openApp(flags.config);
  try {
    const daemons = liveDaemons(app.db);
    const statuses = selectTenants(app.config, flags.tenant).map((t) => serviceStatus(app.db, t, daemons));
    if (flags.json) {
      process.stdout.write(JSON.stringify(statuses, null, 2) + '\n');
      return 0;
    }
    process.stdout.write(renderStatus(statuses, daemons));
    return 0;
  } finally {
    app.close();
  }
}

const when = (iso: string | null): string => (iso ? iso.slice(0, 19).replace('T', ' ') + 'Z' : '');

function renderStatus(statuses: ServiceStatus[], daemons: DaemonInfo[]): string {
  const out: string[] = [];
  out.push(
    daemons.length
      ? daemons.map((d) => `daemon: running as ${d.owner} since ${when(d.startedAt)} (last heartbeat ${when(d.heartbeatAt)}), serving ${d.tenants.join(', ')}`).join('\n')
      : 'daemon: not running (no `provisioner run` has sent a heartbeat lately); schedules and triggers wait until it starts',
  );
  const overview = new Table({
    head: ['tenant', 'last run', 'result', 'next run', 'pending', 'held', 'stale', 'mail queued'],
    style: { head: [], border: [] },
  });
  for (const s of statuses) {
    const r = s.lastRun;
    const pending = [s.pending.triggers ? `${s.pending.triggers} trigger(s)` : '', s.pending.claimed.length ? `${s.pending.claimed.length} claimed` : ''].filter(Boolean).join(', ');
    overview.push([
      s.tenant,
      r ? `${when(r.startedAt)} (${r.reason})` : 'never',
      r ? r.status : '',
      s.enabled ? `${when(s.nextRun)}${s.daemon.running ? '' : ' (daemon down)'}` : 'disabled',
      pending || '-',
      s.held.length || '-',
      s.stale.length || '-',
      s.queuedMail.queued || '-',
    ]);
  }
  out.push(overview.toString());
  for (const s of statuses) {
    const notes: string[] = [];
    if (s.lastRun?.message) notes.push(`last run: ${s.lastRun.message}`);
    for (const h of s.held) notes.push(`held: ${h.epoch}/${h.file}${h.message ? ` - ${h.message}` : ''} (apply with \`provisioner run --now --force --tenant ${s.tenant}\`)`);
    for (const e of s.stale) notes.push(`never completed: ${e.epoch} (no COMPLETE file; seen ${when(e.firstSeen)})`);
    for (const c of s.pending.claimed) notes.push(`claimed: ${c} (being processed, or left by a worker that stopped; the next run recovers it)`);
    if (s.queuedMail.queued) notes.push(`mail: ${s.queuedMail.queued} queued since ${when(s.queuedMail.oldestQueuedAt)}${s.queuedMail.lastError ? `; last error: ${s.queuedMail.lastError}` : ''}`);
    if (!notes.length && !s.imports.length) continue;
    out.push('', `${s.name} (${s.tenant}) — "${s.schedule}" ${s.timezone}`);
    for (const n of notes) out.push(`  ${n}`);
    if (s.imports.length) {
      const t = new Table({ head: ['epoch', 'file', 'status', 'rows', 'created', 'updated', 'unchanged', 'deact.', 'archived', 'failed', 'finished'], style: { head: [], border: [] } });
      for (const i of s.imports.slice(0, 5)) t.push([i.epoch, i.file, i.status, i.rows, i.created, i.updated, i.unchanged, i.deactivated, i.archived, i.failed, when(i.finishedAt)]);
      out.push(t.toString().replace(/^/gm, '  '));
      if (s.imports.length > 5) out.push(`  … ${s.imports.length - 5} older import(s) in \`status --json\``);
    }
  }
  return out.join('\n') + '\n';
}
