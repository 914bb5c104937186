// One SQLite connection (better-sqlite3) and the two ways it is used: a read, and a short write
// transaction (BEGIN IMMEDIATE … COMMIT). Several processes share the file (the daemon, a
// `run --now`, `trigger`, `status`): when another one holds the write lock we wait for it
// *asynchronously*, with back-off, saying so, up to a bound — never with SQLite's own busy
// handler, which would freeze this process's event loop (and every other tenant's SFTP session).
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { StoreBusyError } from '../../errors.js';

export type Statement = Database.Statement;

export interface WaitLog {
  warn(obj: object, msg: string): void;
}

export interface ConnectionOptions {
  /** Give up waiting for another process's write lock after this long (default 10 minutes). */
  busyWaitMs?: number;
  log?: WaitLog;
  readonly?: boolean;
  /**
   * Checkpoint on the commit that leaves the WAL over 8 MiB (SQLite's default of 1,000 pages,
   * at 8 KiB a page). Off for the connection that applies a file: a large apply is
   * checkpointed on a thread instead (checkpointer.ts).
   */
  autoCheckpoint?: boolean;
  /**
   * Each commit syncs the WAL (`synchronous = FULL`): what it wrote survives a power loss once
   * COMMIT returns. For the connection that applies a file, whose upload is then moved to bak;
   * the others (NORMAL) are durable at the next checkpoint. An apply's pages are synced once
   * either way: at its commit here, else by the checkpoint after it.
   */
  durableCommits?: boolean;
}

/**
 * Another connection has the file for a moment. better-sqlite3 reports SQLite's extended codes,
 * so this is a family, not one code: SQLITE_BUSY_RECOVERY, for one, comes when another process
 * (a `status`, a monitoring read, the sqlite3 shell) is rebuilding the WAL's index as we read,
 * and a worker starting on a new database met it.
 */
export const isBusy = (err: unknown): boolean => {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' && /^SQLITE_(BUSY|LOCKED)(_|$)/.test(code);
};

/**
 * A new database's page size (an existing one keeps its own). A million users are written in a
 * fifth less time than with 4 KiB pages. Larger pages make a bulk load cheaper still (a large
 * apply's cost outside its B-tree is per page: two writes of each to the WAL, its checksum redone
 * at the commit, a read and a write at the checkpoint): at 32 KiB, 1,000,000 new users took
 * 1.3-1.5 s to insert, commit and checkpoint instead of 1.7-1.9. But a nightly re-sync changes
 * users all over the directory, and rewrites every page one of them is on: 1 % changed of
 * 1,000,000 users wrote 191 MB of WAL instead of 78, and a re-sync of 5,000,000 users took
 * 21.7-24.8 s instead of 15.6-18.9 (16 KiB: 18.5-19.1), peaking 3-8 MiB higher. Re-syncs are
 * most nights, first imports a few a year.
 */
const NEW_PAGE_SIZE = 8 * 1024;
/** The WAL's size at which a commit checkpoints (SQLite's default: 1,000 pages of 8 KiB). */
const AUTO_CHECKPOINT_BYTES = 8 * 1024 * 1024;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export class SqliteConnection {
  readonly db: Database.Database;
  private readonly statements = new Map<string, Statement>();
  private readonly busyWaitMs: number;
  private closed = false;
  /** The WAL's pages at which a commit checkpoints (AUTO_CHECKPOINT_BYTES at this file's page size). */
  private autoCheckpointPages = 0;

  constructor(
    readonly file: string,
    private readonly opts: ConnectionOptions = {},
  ) {
    if (file !== ':memory:' && !opts.readonly) fs.mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
    this.db = new Database(file, { readonly: opts.readonly ?? false, fileMustExist: opts.readonly ?? false });
    this.busyWaitMs = opts.busyWaitMs ?? 10 * 60_000;
    // Opening may meet another process switching the file to WAL or recovering it: a short
    // wait, once per process. From then on waits are ours (async): SQLite's own would block
    // the event loop.
    try {
      this.db.pragma('busy_timeout = 5000');
      if (!opts.readonly) this.db.pragma(`page_size = ${NEW_PAGE_SIZE}`);
      if (!opts.readonly) this.db.pragma('journal_mode = WAL');
      this.autoCheckpointPages = Math.ceil(AUTO_CHECKPOINT_BYTES / (this.db.pragma('page_size', { simple: true }) as number));
      this.setAutoCheckpoint(opts.autoCheckpoint !== false);
      this.db.pragma(`synchronous = ${opts.durableCommits ? 'FULL' : 'NORMAL'}`);
      this.db.pragma('busy_timeout = 0');
      this.db.pragma('foreign_keys = ON');
      // Bounded caches: memory must not grow with a file. The apply writes pages in key order and
      // reads each once (a file whose keys came scattered is sorted first: sorted-copy.ts), so a
      // bigger cache buys nothing: 4 and 16 MiB apply 1,000,000 rows in the same 1.1-1.3 s,
      // 5,000,000 in the same 8.4 s, and 16 MiB took 10 MiB more at the peak.
      this.db.pragma('cache_size = -4096');
      this.db.pragma('temp.cache_size = -4096');
    } catch (err) {
      this.db.close(); // the caller may try again (another process was switching the file to WAL)
      throw err;
    }
  }

  /** A prepared statement, prepared once per connection. */
  stmt(sql: string): Statement {
    let s = this.statements.get(sql);
    if (!s) {
      s = this.db.prepare(sql);
      this.statements.set(sql, s);
    }
    return s;
  }

  /** A synchronous read (no write lock), retried while a checkpoint or recovery holds the file. */
  read<T>(fn: () => T): Promise<T> {
    return this.retrying('read', () => fn());
  }

  /**
   * A write transaction: `fn` runs synchronously between BEGIN IMMEDIATE and COMMIT, so it can
   * never span an await (no downloading, hashing or rendering inside). Waits for another
   * process's lock without blocking the event loop.
   */
  write<T>(fn: () => T): Promise<T> {
    return this.retrying('write', () => {
      this.db.exec('BEGIN IMMEDIATE');
      try {
        const result = fn();
        this.db.exec('COMMIT');
        return result;
      } catch (err) {
        if (this.db.inTransaction) this.db.exec('ROLLBACK');
        throw err;
      }
    });
  }

  /** Writes to temp tables only (staging): no lock on the shared file is needed. */
  local<T>(fn: () => T): T {
    this.db.exec('BEGIN');
    try {
      const result = fn();
      this.db.exec('COMMIT');
      return result;
    } catch (err) {
      if (this.db.inTransaction) this.db.exec('ROLLBACK');
      throw err;
    }
  }

  /** SQLite's automatic checkpoint on commit, on (at AUTO_CHECKPOINT_BYTES of WAL) or off. */
  setAutoCheckpoint(on: boolean): void {
    this.db.pragma(`wal_autocheckpoint = ${on ? this.autoCheckpointPages : 0}`);
  }

  get isClosed(): boolean {
    return this.closed;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.statements.clear();
    this.db.close();
  }

  private async retrying<T>(what: 'read' | 'write', attempt: () => T): Promise<T> {
    const started = Date.now();
    let delay = 2;
    let nextWarning = 2000;
    for (;;) {
      try {
        return attempt();
      } catch (err) {
        if (!isBusy(err)) throw err;
        const waited = Date.now() - started;
        if (waited >= this.busyWaitMs) {
          throw new StoreBusyError(
            `the database ${this.file} stayed locked by another process for ${Math.round(waited / 1000)} s; ` +
              `nothing was changed by this ${what}. Try again when the other run has finished (\`provisioner status\` shows what runs).`,
          );
        }
        if (waited >= nextWarning) {
          this.opts.log?.warn({ waitedMs: waited }, `waiting for the database: another process is writing to ${this.file} (waited ${Math.round(waited / 1000)} s so far)`);
          nextWarning = waited < 10_000 ? 10_000 : waited + 30_000;
        }
        await sleep(delay);
        delay = Math.min(delay * 2, 100);
      }
    }
  }
}
