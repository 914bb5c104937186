// The SQLite store: one file on this machine (WAL), for a single worker, the demo and the tests.
import type { SchemaStore, Store } from '../types.js';
import { SqliteConnection, type ConnectionOptions } from './connection.js';
import { SqliteAudit } from './audit.js';
import { Checkpointer } from './checkpointer.js';
import { SqliteDaemons, SqliteLeases, SqliteRuns, SqliteSchedule, SqliteTriggers, SqliteUploads } from './coordination.js';
import { SqliteDirectory } from './directory.js';
import { migrations } from './migrations.js';
import { SqliteImports, SqliteMail, SqliteOutbox } from './records.js';
import { SqliteSessions } from './sessions.js';
import { SqliteOverview } from './overview.js';

export interface SqliteStoreOptions extends ConnectionOptions {
  /** An apply that wrote this many users or more is checkpointed on a thread (default CHECKPOINT_AFTER_ROWS). */
  checkpointAfterRows?: number;
}

class SqliteSchema implements SchemaStore {
  constructor(private readonly c: SqliteConnection) {}

  async version(): Promise<{ current: number; latest: number }> {
    const latest = Math.max(...migrations.map((m) => m.version));
    const current = await this.c.read(() => {
      const table = this.c.db.prepare(`SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'`).get();
      return table ? ((this.c.db.prepare('SELECT max(version) FROM schema_migrations').pluck().get() as number | null) ?? 0) : 0;
    });
    return { current, latest };
  }

  async migrate(): Promise<void> {
    const { current, latest } = await this.version();
    if (current >= latest) return;
    // In a write transaction (waited for like any other): another process may be migrating.
    await this.c.write(() => this.c.db.exec('CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)'));
    for (const m of migrations) {
      // Each in its own IMMEDIATE transaction: two processes starting at once never both run one.
      await this.c.write(() => {
        if (this.c.db.prepare('SELECT 1 FROM schema_migrations WHERE version = ?').get(m.version)) return;
        this.c.db.exec(m.sql);
        this.c.db.prepare('INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)').run(m.version, m.name, new Date().toISOString());
      });
    }
  }

  async probeWrite(): Promise<void> {
    // A read-only file opens without complaint; only a write shows it (rolled back).
    this.c.db.exec('BEGIN IMMEDIATE');
    try {
      this.c.db.exec('CREATE TABLE doctor_probe (x)');
    } finally {
      this.c.db.exec('ROLLBACK');
    }
  }

  async serverVersion(): Promise<string> {
    return `SQLite ${this.c.db.prepare('SELECT sqlite_version()').pluck().get() as string}`;
  }

  /** SQLite comes with better-sqlite3: always the version it was built with. */
  async unsupported(): Promise<null> {
    return null;
  }
}

export class SqliteStore implements Store {
  readonly kind = 'sqlite' as const;
  readonly location: string;
  readonly connection: SqliteConnection;
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

  /** Checkpoints after a large apply, off the event loop (null: an in-memory database). */
  readonly checkpointer: Checkpointer | null;

  constructor(file: string, opts: SqliteStoreOptions = {}) {
    const c = new SqliteConnection(file, opts);
    this.connection = c;
    this.location = file;
    this.schema = new SqliteSchema(c);
    this.runs = new SqliteRuns(c);
    this.leases = new SqliteLeases(c);
    this.uploads = new SqliteUploads(c);
    this.imports = new SqliteImports(c);
    const inMemory = file === ':memory:';
    const checkpointer = inMemory ? null : new Checkpointer(file, c, opts.log, opts.checkpointAfterRows);
    this.checkpointer = checkpointer;
    this.directory = new SqliteDirectory(
      c,
      inMemory ? null : () => new SqliteConnection(file, { ...opts, autoCheckpoint: false, durableCommits: true }),
      (written) => checkpointer?.afterApply(written),
    );
    this.outbox = new SqliteOutbox(c);
    this.mail = new SqliteMail(c);
    this.triggers = new SqliteTriggers(c);
    this.daemons = new SqliteDaemons(c);
    this.schedule = new SqliteSchedule(c);
    this.audit = new SqliteAudit(c);
    this.sessions = new SqliteSessions(c);
    this.overview = new SqliteOverview(c);
  }

  async now(): Promise<Date> {
    return new Date();
  }

  async close(): Promise<void> {
    await this.checkpointer?.close();
    this.connection.close();
  }
}
