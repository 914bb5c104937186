// SQLite: runs, leases and claims, what was seen on the SFTP hosts, triggers, daemons and schedule
// ticks (the audit trail is in audit.ts). Each method is one short read or one short write transaction.
import type {
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
import { daemonRow, runRow, triggerRow } from '../rows.js';
import type { SqliteConnection } from './connection.js';

const nowIso = (): string => new Date().toISOString();
const inSeconds = (s: number): string => new Date(Date.now() + s * 1000).toISOString();
type Row = Record<string, unknown>;

export class SqliteRuns implements RunStore {
  constructor(private readonly c: SqliteConnection) {}

  start(run: { tenant: string; reason: RunReason; owner: string; dryRun: boolean }): Promise<number> {
    return this.c.write(() =>
      Number(
        this.c.stmt('INSERT INTO runs (tenant, reason, owner, started_at, dry_run) VALUES (?, ?, ?, ?, ?)').run(run.tenant, run.reason, run.owner, nowIso(), run.dryRun ? 1 : 0)
          .lastInsertRowid,
      ),
    );
  }

  finish(id: number, status: RunStatus, message: string | null, settling: string | null = null): Promise<void> {
    return this.c.write(() => {
      this.c.stmt('UPDATE runs SET finished_at = ?, status = ?, message = ?, settling = ? WHERE id = ?').run(nowIso(), status, message, settling, id);
    });
  }

  running(): Promise<{ id: number; tenant: string; owner: string; startedAt: string }[]> {
    return this.c.read(() =>
      (this.c.stmt(`SELECT id, tenant, owner, started_at FROM runs WHERE status = 'running'`).all() as Row[]).map((r) => ({
        id: Number(r.id),
        tenant: String(r.tenant),
        owner: String(r.owner),
        startedAt: String(r.started_at),
      })),
    );
  }

  markInterrupted(ids: number[], message: string): Promise<void> {
    if (ids.length === 0) return Promise.resolve();
    return this.c.write(() => {
      const at = nowIso();
      for (const id of ids) this.c.stmt(`UPDATE runs SET status = 'interrupted', finished_at = ?, message = ? WHERE id = ? AND status = 'running'`).run(at, message, id);
    });
  }

  last(tenant: string): Promise<RunSummary | null> {
    return this.c.read(() => {
      const r = this.c.stmt('SELECT * FROM runs WHERE tenant = ? ORDER BY id DESC LIMIT 1').get(tenant) as Row | undefined;
      return r ? runRow(r) : null;
    });
  }

  recent(tenant: string, limit: number): Promise<RunSummary[]> {
    return this.c.read(() => (this.c.stmt('SELECT * FROM runs WHERE tenant = ? ORDER BY id DESC LIMIT ?').all(tenant, limit) as Row[]).map(runRow));
  }

  lastSuccess(): Promise<Map<string, string>> {
    // Imports, not runs: a run that found nothing to do is no delivery (a stopped feed is just that).
    return this.c.read(() => {
      const rows = this.c
        .stmt(`SELECT tenant, max(finished_at) AS at FROM imports WHERE status IN ('applied', 'applied with errors') AND reverts_import_id IS NULL GROUP BY tenant`)
        .all() as Row[];
      return new Map(rows.map((r) => [String(r.tenant), String(r.at)]));
    });
  }

  firstRuns(): Promise<Map<string, string>> {
    return this.c.read(() => {
      const rows = this.c.stmt('SELECT tenant, min(started_at) AS at FROM runs WHERE dry_run = 0 GROUP BY tenant').all() as Row[];
      return new Map(rows.map((r) => [String(r.tenant), String(r.at)]));
    });
  }

  countsByStatus(): Promise<Record<string, number>> {
    return this.c.read(() => Object.fromEntries((this.c.stmt('SELECT status, count(*) AS n FROM runs GROUP BY status').all() as Row[]).map((r) => [String(r.status), Number(r.n)])));
  }
}

export class SqliteLeases implements LeaseStore {
  constructor(private readonly c: SqliteConnection) {}

  acquireTenant(tenant: string, owner: string, seconds: number, holderIsGone: (holder: string) => boolean): Promise<LeaseResult> {
    return this.c.write((): LeaseResult => {
      const row = this.c.stmt('SELECT owner, expires_at FROM tenant_locks WHERE tenant = ?').get(tenant) as { owner: string; expires_at: string } | undefined;
      if (row && row.owner !== owner && row.expires_at > nowIso() && !holderIsGone(row.owner)) {
        return { ok: false, owner: row.owner, expiresAt: row.expires_at };
      }
      this.c
        .stmt(
          `INSERT INTO tenant_locks (tenant, owner, acquired_at, expires_at) VALUES (?, ?, ?, ?)
           ON CONFLICT (tenant) DO UPDATE SET owner = excluded.owner, acquired_at = excluded.acquired_at, expires_at = excluded.expires_at`,
        )
        .run(tenant, owner, nowIso(), inSeconds(seconds));
      return { ok: true };
    });
  }

  releaseTenant(tenant: string, owner: string): Promise<void> {
    return this.c.write(() => {
      this.c.stmt('DELETE FROM tenant_locks WHERE tenant = ? AND owner = ?').run(tenant, owner);
    });
  }

  renew(owner: string, seconds: number): Promise<void> {
    return this.c.write(() => {
      const until = inSeconds(seconds);
      this.c.stmt('UPDATE tenant_locks SET expires_at = ? WHERE owner = ?').run(until, owner);
      this.c.stmt('UPDATE claims SET expires_at = ? WHERE owner = ?').run(until, owner);
    });
  }

  recordClaim(tenant: string, epoch: string, owner: string, seconds: number): Promise<void> {
    return this.c.write(() => {
      this.c
        .stmt(
          `INSERT INTO claims (tenant, epoch, owner, claimed_at, expires_at) VALUES (?, ?, ?, ?, ?)
           ON CONFLICT (tenant, epoch) DO UPDATE SET owner = excluded.owner, claimed_at = excluded.claimed_at, expires_at = excluded.expires_at`,
        )
        .run(tenant, epoch, owner, nowIso(), inSeconds(seconds));
    });
  }

  dropClaim(tenant: string, epoch: string): Promise<void> {
    return this.c.write(() => {
      this.c.stmt('DELETE FROM claims WHERE tenant = ? AND epoch = ?').run(tenant, epoch);
    });
  }

  claim(tenant: string, epoch: string): Promise<{ owner: string; expiresAt: string } | null> {
    return this.c.read(() => {
      const r = this.c.stmt('SELECT owner, expires_at FROM claims WHERE tenant = ? AND epoch = ?').get(tenant, epoch) as Row | undefined;
      return r ? { owner: String(r.owner), expiresAt: String(r.expires_at) } : null;
    });
  }

  claims(tenant?: string): Promise<{ tenant: string; epoch: string; owner: string; claimedAt: string; expiresAt: string }[]> {
    return this.c.read(() =>
      (tenant === undefined ? this.c.stmt('SELECT * FROM claims ORDER BY tenant, epoch').all() : this.c.stmt('SELECT * FROM claims WHERE tenant = ? ORDER BY epoch').all(tenant)).map((r) => {
        const row = r as Row;
        return { tenant: String(row.tenant), epoch: String(row.epoch), owner: String(row.owner), claimedAt: String(row.claimed_at), expiresAt: String(row.expires_at) };
      }),
    );
  }

  tenantsHeldBy(owner: string): Promise<string[]> {
    return this.c.read(() => this.c.stmt('SELECT tenant FROM tenant_locks WHERE owner = ? ORDER BY tenant').pluck().all(owner) as string[]);
  }

  liveOwners(): Promise<string[]> {
    return this.c.read(() => this.c.stmt('SELECT DISTINCT owner FROM tenant_locks WHERE expires_at > ?').pluck().all(nowIso()) as string[]);
  }
}

export class SqliteUploads implements UploadStore {
  constructor(private readonly c: SqliteConnection) {}

  observe(tenant: string, path: string, size: number, mtime: number): Promise<{ since: string }> {
    return this.c.write(() => {
      const row = this.c.stmt('SELECT size, mtime, first_seen FROM file_observations WHERE tenant = ? AND path = ?').get(tenant, path) as
        | { size: number; mtime: number; first_seen: string }
        | undefined;
      if (row && row.size === size && row.mtime === mtime) return { since: row.first_seen };
      const now = nowIso();
      this.c
        .stmt(
          `INSERT INTO file_observations (tenant, path, size, mtime, first_seen) VALUES (?, ?, ?, ?, ?)
           ON CONFLICT (tenant, path) DO UPDATE SET size = excluded.size, mtime = excluded.mtime, first_seen = excluded.first_seen`,
        )
        .run(tenant, path, size, mtime, now);
      return { since: now };
    });
  }

  forget(tenant: string, path: string): Promise<void> {
    return this.c.write(() => {
      this.c.stmt('DELETE FROM file_observations WHERE tenant = ? AND path = ?').run(tenant, path);
    });
  }

  contentSeen(tenant: string, path: string, sha1: string): Promise<boolean> {
    return this.c.read(() => !!this.c.stmt('SELECT 1 FROM content_hashes WHERE tenant = ? AND path = ? AND sha1 = ?').get(tenant, path, sha1));
  }

  rememberContent(tenant: string, path: string, sha1: string, importId: number | null): Promise<void> {
    return this.c.write(() => {
      this.c.stmt('INSERT OR REPLACE INTO content_hashes (tenant, path, sha1, import_id, seen_at) VALUES (?, ?, ?, ?, ?)').run(tenant, path, sha1, importId, nowIso());
    });
  }

  epochUsed(tenant: string, epoch: string): Promise<boolean> {
    return this.c.read(
      () =>
        !!this.c.stmt('SELECT 1 FROM imports WHERE tenant = ? AND epoch = ? LIMIT 1').get(tenant, epoch) ||
        !!this.c.stmt('SELECT 1 FROM outcomes WHERE tenant = ? AND epoch = ? LIMIT 1').get(tenant, epoch),
    );
  }

  unreportedStale(tenant: string, epochs: string[]): Promise<string[]> {
    return this.c.read(() => {
      const reported = this.c.stmt('SELECT 1 FROM stale_uploads WHERE tenant = ? AND epoch = ? AND reported_at IS NOT NULL');
      return epochs.filter((e) => !reported.get(tenant, e));
    });
  }

  stale(tenant: string): Promise<{ epoch: string; firstSeen: string }[]> {
    return this.c.read(
      () =>
        (
          this.c
            .stmt(
              `SELECT epoch, first_seen FROM stale_uploads s
                WHERE tenant = ? AND resolved_at IS NULL
                  AND NOT EXISTS (SELECT 1 FROM imports i WHERE i.tenant = s.tenant AND i.epoch = s.epoch) -- completed later after all
                ORDER BY epoch`,
            )
            .all(tenant) as Row[]
        ).map((r) => ({ epoch: String(r.epoch), firstSeen: String(r.first_seen) })),
    );
  }

  setAside(tenant: string, path: string, signature: string, reason: string): Promise<void> {
    return this.c.write(() => {
      this.c
        .stmt(
          `INSERT INTO set_aside (tenant, path, signature, reason, at) VALUES (?, ?, ?, ?, ?)
           ON CONFLICT (tenant, path) DO UPDATE SET signature = excluded.signature, reason = excluded.reason, at = excluded.at`,
        )
        .run(tenant, path, signature, reason, nowIso());
    });
  }

  isSetAside(tenant: string, path: string, signature: string): Promise<boolean> {
    return this.c.read(() => !!this.c.stmt('SELECT 1 FROM set_aside WHERE tenant = ? AND path = ? AND signature = ?').get(tenant, path, signature));
  }

  setAsideList(tenant: string): Promise<{ path: string; reason: string; at: string }[]> {
    return this.c.read(() =>
      (this.c.stmt('SELECT path, reason, at FROM set_aside WHERE tenant = ? ORDER BY at').all(tenant) as Row[]).map((r) => ({ path: String(r.path), reason: String(r.reason), at: String(r.at) })),
    );
  }
}

export class SqliteTriggers implements TriggerStore {
  constructor(private readonly c: SqliteConnection) {}

  request(tenant: string, requestedBy: string): Promise<number> {
    return this.c.write(() => Number(this.c.stmt('INSERT INTO triggers (tenant, requested_at, requested_by) VALUES (?, ?, ?)').run(tenant, nowIso(), requestedBy).lastInsertRowid));
  }

  /** One machine: the daemon's poll (one indexed read) is how it hears. */
  async listen(): Promise<null> {
    return null;
  }

  get(id: number): Promise<TriggerRow | null> {
    return this.c.read(() => {
      const r = this.c.stmt('SELECT * FROM triggers WHERE id = ?').get(id) as Row | undefined;
      return r ? triggerRow(r) : null;
    });
  }

  pending(tenant?: string): Promise<TriggerRow[]> {
    return this.c.read(() =>
      ((tenant === undefined
        ? this.c.stmt('SELECT * FROM triggers WHERE picked_up_at IS NULL ORDER BY id').all()
        : this.c.stmt('SELECT * FROM triggers WHERE picked_up_at IS NULL AND tenant = ? ORDER BY id').all(tenant)) as Row[]
      ).map(triggerRow),
    );
  }

  async take(tenants: string[], owner: string): Promise<TriggerRow | null> {
    // Cheap read first: a daemon polls every second, and most polls find nothing.
    const waiting = await this.pending();
    const wanted = new Set(tenants);
    const candidate = waiting.find((t) => wanted.has(t.tenant));
    if (!candidate) return null;
    return this.c.write(() => {
      const changed = this.c.stmt('UPDATE triggers SET picked_up_at = ?, picked_up_by = ? WHERE id = ? AND picked_up_at IS NULL').run(nowIso(), owner, candidate.id).changes;
      if (changed !== 1) return null;
      return triggerRow(this.c.stmt('SELECT * FROM triggers WHERE id = ?').get(candidate.id) as Row);
    });
  }

  finish(ids: number[], outcome: { runId: number | null; status: string; message: string | null }): Promise<void> {
    return this.c.write(() => {
      const at = nowIso();
      for (const id of ids) this.c.stmt('UPDATE triggers SET run_id = ?, status = ?, message = ?, finished_at = ? WHERE id = ?').run(outcome.runId, outcome.status, outcome.message, at, id);
    });
  }

  release(ids: number[]): Promise<void> {
    if (ids.length === 0) return Promise.resolve();
    return this.c.write(() => {
      for (const id of ids) this.c.stmt('UPDATE triggers SET picked_up_at = NULL, picked_up_by = NULL WHERE id = ? AND finished_at IS NULL').run(id);
    });
  }

  async recoverOrphans(isGone: (owner: string) => boolean): Promise<number> {
    const taken = await this.c.read(
      () => this.c.stmt('SELECT id, picked_up_by FROM triggers WHERE picked_up_at IS NOT NULL AND finished_at IS NULL AND picked_up_by IS NOT NULL').all() as { id: number; picked_up_by: string }[],
    );
    const orphaned = taken.filter((t) => isGone(t.picked_up_by)).map((t) => t.id);
    await this.release(orphaned);
    return orphaned.length;
  }
}

export class SqliteDaemons implements DaemonStore {
  constructor(private readonly c: SqliteConnection) {}

  register(info: { owner: string; host: string; pid: number; tenants: string[] }): Promise<void> {
    return this.c.write(() => {
      const now = nowIso();
      this.c
        .stmt(
          `INSERT INTO daemons (owner, host, pid, started_at, heartbeat_at, stopped_at, tenants, running) VALUES (?, ?, ?, ?, ?, NULL, ?, '[]')
           ON CONFLICT (owner) DO UPDATE SET started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at, stopped_at = NULL, tenants = excluded.tenants`,
        )
        .run(info.owner, info.host, info.pid, now, now, JSON.stringify(info.tenants));
    });
  }

  beat(owner: string, running: string[]): Promise<void> {
    return this.c.write(() => {
      this.c.stmt('UPDATE daemons SET heartbeat_at = ?, running = ? WHERE owner = ?').run(nowIso(), JSON.stringify(running), owner);
    });
  }

  unregister(owner: string): Promise<void> {
    return this.c.write(() => {
      this.c.stmt(`UPDATE daemons SET stopped_at = ?, running = '[]' WHERE owner = ?`).run(nowIso(), owner);
    });
  }

  list() {
    return this.c.read(() => {
      const now = Date.now();
      return (this.c.stmt('SELECT * FROM daemons WHERE stopped_at IS NULL ORDER BY started_at').all() as Row[]).map((r) => {
        const d = daemonRow(r);
        return { ...d, heartbeatAgeMs: now - Date.parse(d.heartbeatAt) };
      });
    });
  }
}

export class SqliteSchedule implements ScheduleStore {
  constructor(private readonly c: SqliteConnection) {}

  claimTick(tenant: string, dueAt: string, owner: string): Promise<boolean> {
    // Ours already when a claim whose answer was lost is asked again.
    return this.c.write(
      () =>
        this.c.stmt('INSERT INTO schedule_ticks (tenant, due_at, owner, claimed_at) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING').run(tenant, dueAt, owner, nowIso()).changes === 1 ||
        this.c.stmt('SELECT owner FROM schedule_ticks WHERE tenant = ? AND due_at = ?').pluck().get(tenant, dueAt) === owner,
    );
  }

  prune(before: string): Promise<void> {
    return this.c.write(() => {
      this.c.stmt('DELETE FROM schedule_ticks WHERE due_at < ?').run(before);
    });
  }

  overdueReported(tenant: string, since: string): Promise<boolean> {
    return this.c.read(() => !!this.c.stmt(`SELECT 1 FROM outcomes WHERE tenant = ? AND kind = 'overdue' AND created_at >= ?`).get(tenant, since));
  }
}
