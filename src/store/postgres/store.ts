// The PostgreSQL store: the directory where the vendor's platform can read it, and the
// coordination of several workers sharing the tenants (leases against now(), SKIP LOCKED,
// unique tick rows, an advisory lock for migrations).
import { StoreError } from '../../errors.js';
import type { SchemaStore, Store } from '../types.js';
import { PgConnection } from './connection.js';
import { PgAudit, PgDaemons, PgLeases, PgRuns, PgSchedule, PgTriggers, PgUploads } from './coordination.js';
import { PgDirectory } from './directory.js';
import { LATEST, MIGRATION_LOCK, migrations } from './migrations.js';
import { PgImports, PgMail, PgOutbox } from './records.js';
import { PgSessions } from './sessions.js';
import { PgOverview } from './overview.js';

/**
 * The oldest PostgreSQL this provisioner runs on: 12, whose planner folds the apply's WITH
 * queries into one plan (before 12 each is a fence, materialized on its own: a million rows at a
 * time); the identity columns need 10. Older servers are out of support anyway.
 */
export const MIN_SERVER_VERSION = 12;

/** `num`: server_version_num (120000 for 12.0). */
export function serverVersionProblem(num: number, text: string): { problem: string; fix: string } | null {
  if (!Number.isFinite(num) || num >= MIN_SERVER_VERSION * 10_000) return null;
  return {
    problem: `the server is PostgreSQL ${text}; provisioner needs PostgreSQL ${MIN_SERVER_VERSION} or newer`,
    fix: `upgrade the server to PostgreSQL ${MIN_SERVER_VERSION} or newer (Debian's and PostgreSQL's own packages have current ones), or point database: at a server that is`,
  };
}

class PgSchema implements SchemaStore {
  constructor(private readonly c: PgConnection) {}

  async version(): Promise<{ current: number; latest: number }> {
    const table = await this.c.one(`SELECT to_regclass('schema_migrations') AS t`);
    if (!table?.t) return { current: 0, latest: LATEST };
    const r = await this.c.one<{ v: number | null }>('SELECT max(version) AS v FROM schema_migrations');
    return { current: Number(r?.v ?? 0), latest: LATEST };
  }

  /** Under an advisory lock: the workers of a cluster starting together migrate once. */
  async migrate(): Promise<void> {
    const client = await this.c.hold();
    try {
      await client.query('SELECT pg_advisory_lock($1)', [MIGRATION_LOCK]);
      await client.query('CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())');
      const applied = new Set((await client.query('SELECT version FROM schema_migrations')).rows.map((r: { version: number }) => r.version));
      for (const m of migrations) {
        if (applied.has(m.version)) continue;
        await client.query('BEGIN');
        try {
          await client.query(m.sql);
          await client.query('INSERT INTO schema_migrations (version, name) VALUES ($1, $2)', [m.version, m.name]);
          await client.query('COMMIT');
        } catch (err) {
          await client.query('ROLLBACK');
          throw err;
        }
      }
    } finally {
      await client.query('SELECT pg_advisory_unlock($1)', [MIGRATION_LOCK]).catch(() => {});
      client.release();
    }
  }

  /** The role can create tables here (the migrations do) and write (a temp table, rolled back). */
  async probeWrite(): Promise<void> {
    const r = await this.c.one<{ ok: boolean }>(`SELECT has_database_privilege(current_database(), 'CREATE') AND has_schema_privilege('public', 'CREATE') AS ok`);
    if (!r?.ok) throw new Error(`the role ${new URL(this.c.url).username || '(default)'} may not create tables in this database; grant it CREATE on the database and on schema public`);
    await this.c.tx(async (q) => {
      await q.query('CREATE TEMP TABLE doctor_probe (x int) ON COMMIT DROP');
    });
  }

  async serverVersion(): Promise<string> {
    const r = await this.c.one<{ v: string }>(`SELECT current_setting('server_version') AS v`);
    return `PostgreSQL ${r?.v ?? '?'}`;
  }

  async unsupported(): Promise<{ problem: string; fix: string } | null> {
    const r = await this.c.one<{ v: string; n: string }>(`SELECT current_setting('server_version') AS v, current_setting('server_version_num') AS n`);
    return serverVersionProblem(Number(r?.n), r?.v ?? '?');
  }
}

export class PostgresStore implements Store {
  readonly kind = 'postgres' as const;
  readonly schema;
  readonly runs;
  readonly leases;
  readonly uploads;
  readonly imports;
  readonly directory;
  readonly outbox;
  readonly mail;
  readonly triggers;
  readonly daemons;
  readonly schedule;
  readonly audit;
  readonly sessions;
  readonly overview;

  private constructor(readonly connection: PgConnection, readonly location: string) {
    const c = connection;
    this.schema = new PgSchema(c);
    this.runs = new PgRuns(c);
    this.leases = new PgLeases(c);
    this.uploads = new PgUploads(c);
    this.imports = new PgImports(c);
    this.directory = new PgDirectory(c);
    this.outbox = new PgOutbox(c);
    this.mail = new PgMail(c);
    this.triggers = new PgTriggers(c);
    this.daemons = new PgDaemons(c);
    this.schedule = new PgSchedule(c);
    this.audit = new PgAudit(c);
    this.sessions = new PgSessions(c);
    this.overview = new PgOverview(c);
  }

  /** Connects (and checks the connection) or fails with what to fix. */
  static async connect(url: string, location: string): Promise<PostgresStore> {
    const c = new PgConnection(url);
    try {
      await c.query('SELECT 1');
    } catch (err) {
      await c.close();
      throw new StoreError(`cannot connect to the database ${location}: ${(err as Error).message}`, { cause: err });
    }
    return new PostgresStore(c, location);
  }

  async now(): Promise<Date> {
    const r = await this.connection.one<{ now: Date }>('SELECT now() AS now');
    return new Date(r!.now);
  }

  close(): Promise<void> {
    return this.connection.close();
  }
}
