// PostgreSQL: runs, leases and claims, what was seen on the SFTP hosts, triggers, daemons,
// schedule ticks and the audit trail — shared by every worker of a cluster. Every lease and
// timestamp is the database's clock (now()), so machines whose clocks differ still agree.
import type {
  AuditEntry,
  AuditStore,
  DaemonStore,
  LeaseResult,
  LeaseStore,
  RunReason,
  RunStatus,
  RunStore,
  RunSummary,
  ScheduleStore,
  TriggerRow,
  TriggerStore,
  UploadStore,
} from '../types.js';
import { daemonRow, iso, runRow, triggerRow } from '../rows.js';
import type { PgConnection } from './connection.js';

type Row = Record<string, unknown>;
const secs = (n: number) => `${Math.round(n)} seconds`;
/** The NOTIFY channel of new triggers. */
const TRIGGER_CHANNEL = 'provisioner_trigger';

export class PgRuns implements RunStore {
  constructor(private readonly c: PgConnection) {}

  async start(run: { tenant: string; reason: RunReason; owner: string; dryRun: boolean }): Promise<number> {
    const r = await this.c.one<{ id: number }>('INSERT INTO runs (tenant, reason, owner, dry_run) VALUES ($1, $2, $3, $4) RETURNING id', [run.tenant, run.reason, run.owner, run.dryRun]);
    return r!.id;
  }

  async finish(id: number, status: RunStatus, message: string | null, settling: string | null = null): Promise<void> {
    await this.c.query('UPDATE runs SET finished_at = now(), status = $2, message = $3, settling = $4 WHERE id = $1', [id, status, message, settling]);
  }

  async running() {
    return (await this.c.query(`SELECT id, tenant, owner, started_at FROM runs WHERE status = 'running'`)).map((r) => ({
      id: Number(r.id), tenant: String(r.tenant), owner: String(r.owner), startedAt: iso(r.started_at),
    }));
  }

  async markInterrupted(ids: number[], message: string): Promise<void> {
    if (ids.length) await this.c.query(`UPDATE runs SET status = 'interrupted', finished_at = now(), message = $2 WHERE id = ANY($1) AND status = 'running'`, [ids, message]);
  }

  async last(tenant: string): Promise<RunSummary | null> {
    const r = await this.c.one('SELECT * FROM runs WHERE tenant = $1 ORDER BY id DESC LIMIT 1', [tenant]);
    return r ? runRow(r) : null;
  }

  async recent(tenant: string, limit: number): Promise<RunSummary[]> {
    return (await this.c.query('SELECT * FROM runs WHERE tenant = $1 ORDER BY id DESC LIMIT $2', [tenant, limit])).map(runRow);
  }

  async lastSuccess(): Promise<Map<string, string>> {
    // Imports, not runs: a run that found nothing to do is no delivery (a stopped feed is just that).
    const rows = await this.c.query(
      `SELECT tenant, max(finished_at) AS at FROM imports WHERE status IN ('applied', 'applied with errors') AND reverts_import_id IS NULL GROUP BY tenant`,
    );
    return new Map(rows.map((r) => [String(r.tenant), iso(r.at)]));
  }

  async firstRuns(): Promise<Map<string, string>> {
    const rows = await this.c.query('SELECT tenant, min(started_at) AS at FROM runs WHERE NOT dry_run GROUP BY tenant');
    return new Map(rows.map((r) => [String(r.tenant), iso(r.at)]));
  }

  async countsByStatus(): Promise<Record<string, number>> {
    return Object.fromEntries((await this.c.query('SELECT status, count(*) AS n FROM runs GROUP BY status')).map((r) => [String(r.status), Number(r.n)]));
  }
}

export class PgLeases implements LeaseStore {
  constructor(private readonly c: PgConnection) {}

  acquireTenant(tenant: string, owner: string, seconds: number, holderIsGone: (holder: string) => boolean): Promise<LeaseResult> {
    return this.c.tx(async (q) => {
      await q.query('INSERT INTO tenant_locks (tenant, owner, acquired_at, expires_at) VALUES ($1, $2, now(), now()) ON CONFLICT DO NOTHING', [tenant, '']);
      const row = (await q.query('SELECT owner, expires_at, expires_at > now() AS live FROM tenant_locks WHERE tenant = $1 FOR UPDATE', [tenant])).rows[0] as Row;
      const holder = String(row.owner);
      if (holder && holder !== owner && row.live && !holderIsGone(holder)) return { ok: false, owner: holder, expiresAt: iso(row.expires_at) };
      await q.query(`UPDATE tenant_locks SET owner = $2, acquired_at = now(), expires_at = now() + $3::interval WHERE tenant = $1`, [tenant, owner, secs(seconds)]);
      return { ok: true };
    });
  }

  async releaseTenant(tenant: string, owner: string): Promise<void> {
    await this.c.query('DELETE FROM tenant_locks WHERE tenant = $1 AND owner = $2', [tenant, owner]);
  }

  async renew(owner: string, seconds: number): Promise<void> {
    await this.c.query('UPDATE tenant_locks SET expires_at = now() + $2::interval WHERE owner = $1', [owner, secs(seconds)]);
    await this.c.query('UPDATE claims SET expires_at = now() + $2::interval WHERE owner = $1', [owner, secs(seconds)]);
  }

  async recordClaim(tenant: string, epoch: string, owner: string, seconds: number): Promise<void> {
    await this.c.query(
      `INSERT INTO claims (tenant, epoch, owner, claimed_at, expires_at) VALUES ($1, $2, $3, now(), now() + $4::interval)
       ON CONFLICT (tenant, epoch) DO UPDATE SET owner = excluded.owner, claimed_at = excluded.claimed_at, expires_at = excluded.expires_at`,
      [tenant, epoch, owner, secs(seconds)],
    );
  }

  async dropClaim(tenant: string, epoch: string): Promise<void> {
    await this.c.query('DELETE FROM claims WHERE tenant = $1 AND epoch = $2', [tenant, epoch]);
  }

  async claim(tenant: string, epoch: string) {
    const r = await this.c.one('SELECT owner, expires_at FROM claims WHERE tenant = $1 AND epoch = $2', [tenant, epoch]);
    return r ? { owner: String(r.owner), expiresAt: iso(r.expires_at) } : null;
  }

  async claims(tenant?: string) {
    const rows = tenant === undefined ? await this.c.query('SELECT * FROM claims ORDER BY tenant, epoch') : await this.c.query('SELECT * FROM claims WHERE tenant = $1 ORDER BY epoch', [tenant]);
    return rows.map((r) => ({ tenant: String(r.tenant), epoch: String(r.epoch), owner: String(r.owner), claimedAt: iso(r.claimed_at), expiresAt: iso(r.expires_at) }));
  }

  async tenantsHeldBy(owner: string): Promise<string[]> {
    return (await this.c.query<{ tenant: string }>('SELECT tenant FROM tenant_locks WHERE owner = $1 AND expires_at > now() ORDER BY tenant', [owner])).map((r) => r.tenant);
  }

  async liveOwners(): Promise<string[]> {
    return (await this.c.query<{ owner: string }>("SELECT DISTINCT owner FROM tenant_locks WHERE expires_at > now() AND owner <> ''")).map((r) => r.owner);
  }
}

export class PgUploads implements UploadStore {
  constructor(private readonly c: PgConnection) {}

  async observe(tenant: string, path: string, size: number, mtime: number): Promise<{ since: string }> {
    const r = await this.c.one(
      `INSERT INTO file_observations (tenant, path, size, mtime, first_seen) VALUES ($1, $2, $3, $4, now())
       ON CONFLICT (tenant, path) DO UPDATE SET size = excluded.size, mtime = excluded.mtime,
         first_seen = CASE WHEN file_observations.size = excluded.size AND file_observations.mtime = excluded.mtime THEN file_observations.first_seen ELSE excluded.first_seen END
       RETURNING first_seen`,
      [tenant, path, size, mtime],
    );
    return { since: iso(r!.first_seen) };
  }

  async forget(tenant: string, path: string): Promise<void> {
    await this.c.query('DELETE FROM file_observations WHERE tenant = $1 AND path = $2', [tenant, path]);
  }

  async contentSeen(tenant: string, path: string, sha1: string): Promise<boolean> {
    return !!(await this.c.one('SELECT 1 FROM content_hashes WHERE tenant = $1 AND path = $2 AND sha1 = $3', [tenant, path, sha1]));
  }

  async rememberContent(tenant: string, path: string, sha1: string, importId: number | null): Promise<void> {
    await this.c.query(
      `INSERT INTO content_hashes (tenant, path, sha1, import_id, seen_at) VALUES ($1, $2, $3, $4, now())
       ON CONFLICT (tenant, path, sha1) DO UPDATE SET import_id = excluded.import_id, seen_at = excluded.seen_at`,
      [tenant, path, sha1, importId],
    );
  }

  async epochUsed(tenant: string, epoch: string): Promise<boolean> {
    return !!(await this.c.one(
      'SELECT 1 FROM imports WHERE tenant = $1 AND epoch = $2 UNION ALL SELECT 1 FROM outcomes WHERE tenant = $1 AND epoch = $2 LIMIT 1',
      [tenant, epoch],
    ));
  }

  async unreportedStale(tenant: string, epochs: string[]): Promise<string[]> {
    const reported = new Set(
      (await this.c.query<{ epoch: string }>('SELECT epoch FROM stale_uploads WHERE tenant = $1 AND epoch = ANY($2) AND reported_at IS NOT NULL', [tenant, epochs])).map((r) => r.epoch),
    );
    return epochs.filter((e) => !reported.has(e));
  }

  async stale(tenant: string) {
    return (
      await this.c.query(
        `SELECT epoch, first_seen FROM stale_uploads s WHERE tenant = $1 AND resolved_at IS NULL
           AND NOT EXISTS (SELECT 1 FROM imports i WHERE i.tenant = s.tenant AND i.epoch = s.epoch) ORDER BY epoch`,
        [tenant],
      )
    ).map((r) => ({ epoch: String(r.epoch), firstSeen: iso(r.first_seen) }));
  }

  async setAside(tenant: string, path: string, signature: string, reason: string): Promise<void> {
    await this.c.query(
      `INSERT INTO set_aside (tenant, path, signature, reason, at) VALUES ($1, $2, $3, $4, now())
       ON CONFLICT (tenant, path) DO UPDATE SET signature = excluded.signature, reason = excluded.reason, at = excluded.at`,
      [tenant, path, signature, reason],
    );
  }

  async isSetAside(tenant: string, path: string, signature: string): Promise<boolean> {
    return !!(await this.c.one('SELECT 1 FROM set_aside WHERE tenant = $1 AND path = $2 AND signature = $3', [tenant, path, signature]));
  }

  async setAsideList(tenant: string) {
    return (await this.c.query('SELECT path, reason, at FROM set_aside WHERE tenant = $1 ORDER BY at', [tenant])).map((r) => ({ path: String(r.path), reason: String(r.reason), at: iso(r.at) }));
  }
}

export class PgTriggers implements TriggerStore {
  constructor(private readonly c: PgConnection) {}

  async request(tenant: string, requestedBy: string): Promise<number> {
    const r = await this.c.one<{ id: number }>('INSERT INTO triggers (tenant, requested_at, requested_by) VALUES ($1, now(), $2) RETURNING id', [tenant, requestedBy]);
    await this.c.query(`SELECT pg_notify('${TRIGGER_CHANNEL}', $1)`, [tenant]);
    return r!.id;
  }

  /** Every daemon LISTENs: a trigger is taken at once, by one with a free slot, not at the next poll. */
  listen(onRequest: () => void) {
    return this.c.listen(TRIGGER_CHANNEL, onRequest);
  }

  async get(id: number): Promise<TriggerRow | null> {
    const r = await this.c.one('SELECT * FROM triggers WHERE id = $1', [id]);
    return r ? triggerRow(r) : null;
  }

  async pending(tenant?: string): Promise<TriggerRow[]> {
    const rows =
      tenant === undefined
        ? await this.c.query('SELECT * FROM triggers WHERE picked_up_at IS NULL ORDER BY id')
        : await this.c.query('SELECT * FROM triggers WHERE picked_up_at IS NULL AND tenant = $1 ORDER BY id', [tenant]);
    return rows.map(triggerRow);
  }

  /** The oldest pending trigger of these tenants, taken by exactly one daemon (SKIP LOCKED). */
  async take(tenants: string[], owner: string): Promise<TriggerRow | null> {
    const r = await this.c.one(
      `UPDATE triggers SET picked_up_at = now(), picked_up_by = $2
        WHERE id = (SELECT id FROM triggers WHERE picked_up_at IS NULL AND tenant = ANY($1) ORDER BY id FOR UPDATE SKIP LOCKED LIMIT 1)
        RETURNING *`,
      [tenants, owner],
    );
    return r ? triggerRow(r) : null;
  }

  async finish(ids: number[], outcome: { runId: number | null; status: string; message: string | null }): Promise<void> {
    await this.c.query('UPDATE triggers SET run_id = $2, status = $3, message = $4, finished_at = now() WHERE id = ANY($1)', [ids, outcome.runId, outcome.status, outcome.message]);
  }

  async release(ids: number[]): Promise<void> {
    if (ids.length) await this.c.query('UPDATE triggers SET picked_up_at = NULL, picked_up_by = NULL WHERE id = ANY($1) AND finished_at IS NULL', [ids]);
  }

  async recoverOrphans(isGone: (owner: string) => boolean): Promise<number> {
    const taken = await this.c.query<{ id: number; picked_up_by: string }>('SELECT id, picked_up_by FROM triggers WHERE picked_up_at IS NOT NULL AND finished_at IS NULL AND picked_up_by IS NOT NULL');
    const orphaned = taken.filter((t) => isGone(t.picked_up_by)).map((t) => t.id);
    await this.release(orphaned);
    return orphaned.length;
  }
}

export class PgDaemons implements DaemonStore {
  constructor(private readonly c: PgConnection) {}

  async register(info: { owner: string; host: string; pid: number; tenants: string[] }): Promise<void> {
    await this.c.query(
      `INSERT INTO daemons (owner, host, pid, started_at, heartbeat_at, stopped_at, tenants, running) VALUES ($1, $2, $3, now(), now(), NULL, $4, '[]')
       ON CONFLICT (owner) DO UPDATE SET started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at, stopped_at = NULL, tenants = excluded.tenants`,
      [info.owner, info.host, info.pid, JSON.stringify(info.tenants)],
    );
  }

  async beat(owner: string, running: string[]): Promise<void> {
    await this.c.query('UPDATE daemons SET heartbeat_at = now(), running = $2 WHERE owner = $1', [owner, JSON.stringify(running)]);
  }

  async unregister(owner: string): Promise<void> {
    await this.c.query(`UPDATE daemons SET stopped_at = now(), running = '[]' WHERE owner = $1`, [owner]);
  }

  async list() {
    const rows = await this.c.query(`SELECT *, extract(epoch FROM now() - heartbeat_at) * 1000 AS age_ms FROM daemons WHERE stopped_at IS NULL ORDER BY started_at`);
    return rows.map((r) => ({ ...daemonRow(r), heartbeatAgeMs: Number(r.age_ms) }));
  }
}

export class PgSchedule implements ScheduleStore {
  constructor(private readonly c: PgConnection) {}

  async claimTick(tenant: string, dueAt: string, owner: string): Promise<boolean> {
    // Ours already when a claim whose answer was lost is asked again.
    const r = await this.c.query(
      `INSERT INTO schedule_ticks (tenant, due_at, owner, claimed_at) VALUES ($1, $2, $3, now())
       ON CONFLICT (tenant, due_at) DO UPDATE SET owner = schedule_ticks.owner WHERE schedule_ticks.owner = $3 RETURNING 1`,
      [tenant, dueAt, owner],
    );
    return r.length === 1;
  }

  async prune(before: string): Promise<void> {
    await this.c.query('DELETE FROM schedule_ticks WHERE due_at < $1', [before]);
  }

  async overdueReported(tenant: string, since: string): Promise<boolean> {
    return !!(await this.c.one(`SELECT 1 FROM outcomes WHERE tenant = $1 AND kind = 'overdue' AND created_at >= $2`, [tenant, since]));
  }
}

export class PgAudit implements AuditStore {
  constructor(private readonly c: PgConnection) {}

  async record(e: Omit<AuditEntry, 'id' | 'at'>): Promise<number> {
    const r = await this.c.one<{ id: number }>('INSERT INTO audit (actor, action, tenant, target, result, detail) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id', [
      e.actor, e.action, e.tenant, e.target, e.result, e.detail,
    ]);
    return r!.id;
  }

  async recent(opts: { tenant?: string; limit: number }): Promise<AuditEntry[]> {
    const rows =
      opts.tenant === undefined
        ? await this.c.query('SELECT * FROM audit ORDER BY id DESC LIMIT $1', [opts.limit])
        : await this.c.query('SELECT * FROM audit WHERE tenant = $1 ORDER BY id DESC LIMIT $2', [opts.tenant, opts.limit]);
    return rows.map((r) => ({
      id: Number(r.id), at: iso(r.at), actor: String(r.actor), action: String(r.action), tenant: (r.tenant as string | null) ?? null,
      target: (r.target as string | null) ?? null, result: String(r.result), detail: (r.detail as string | null) ?? null,
    }));
  }
}
