// One part of a file's staging, written by the thread that parses that part: a private SQLite
// file (no journal, no fsync: it is scratch, rebuilt from the CSV if anything goes wrong) with
// the part's checked rows, the keys of its failing rows, its row problems and the lines whose
// key may repeat an earlier one. Rows go straight from the checker into SQLite on the parsing
// thread, so no row crosses threads and the main thread never holds a batch. Once every part is
// written, the stage on the main connection attaches the files (stage.ts) and applies them.
import fs from 'node:fs';
import Database from 'better-sqlite3';
import type { RowProblem } from '../types.js';

export interface FailedRow {
  line: number;
  key: string | null;
  raw: string[];
  problems: RowProblem[];
}

/** The tables of a part file (stage.ts reads them under the schema name it attaches). */
export function partTablesSql(columns: string[]): string {
  const fields = columns.slice(3).map((col) => `${col} TEXT, `).join('');
  return `
    CREATE TABLE rows (
      line INTEGER PRIMARY KEY, key TEXT NOT NULL, active INTEGER NOT NULL, ${fields}
      pw_hash TEXT,                      -- scrypt hash, once computed (new or changed password)
      pw_same INTEGER NOT NULL DEFAULT 0 -- 1: checked against the stored hash and unchanged
    );
    -- Keys of failing rows: still present in the file for a full sync, and still taken.
    CREATE TABLE failed_keys (key TEXT PRIMARY KEY, line INTEGER NOT NULL) WITHOUT ROWID;
    -- One row per problem; the row's cells (raw, JSON) on its first problem only.
    CREATE TABLE errors (line INTEGER NOT NULL, seq INTEGER NOT NULL, "column" TEXT, value TEXT, reason TEXT NOT NULL, raw TEXT, PRIMARY KEY (line, seq)) WITHOUT ROWID;
    -- Lines of valid rows whose key the shared filter had seen: candidates for a duplicate.
    CREATE TABLE repeats (line INTEGER PRIMARY KEY);`;
}

/** Rows per INSERT: one call binds a hundred rows (per-call overhead dominated). */
const ROWS_PER_INSERT = 100;

/**
 * Rows arrive one at a time and are bound a hundred at a time, so that a row dies young: a batch
 * of thousands of rows held for one write survived every scavenge of the thread's young
 * generation and made its collector copy them (measured: a fifth of the thread's time with a
 * 16 MiB young generation, far more with a smaller one). commit() ends a batch's transaction.
 */
export class StagePartWriter {
  private readonly db: Database.Database;
  private readonly insertMany: Database.Statement;
  private readonly insertOne: Database.Statement;
  private readonly insertFailedKey: Database.Statement;
  private readonly insertError: Database.Statement;
  private readonly insertRepeat: Database.Statement;
  private readonly width: number;
  /** Bound to insertMany, refilled for every hundred rows (no array per call). */
  private readonly params: (string | number | null)[];
  /** Rows in params, not yet inserted. */
  private pending = 0;
  valid = 0;
  failed = 0;

  constructor(
    readonly file: string,
    columns: string[],
  ) {
    fs.rmSync(file, { force: true });
    this.db = new Database(file);
    try {
      this.db.pragma('journal_mode = OFF');
      this.db.pragma('synchronous = OFF');
      this.db.pragma('locking_mode = EXCLUSIVE');
      this.db.pragma('cache_size = -1024'); // appended in line order: a small cache is enough
      this.db.exec(partTablesSql(columns));
    } catch (err) {
      this.db.close();
      throw err;
    }
    this.width = columns.length;
    const list = `(${columns.join(', ')})`;
    const one = `(${columns.map(() => '?').join(', ')})`;
    this.insertMany = this.db.prepare(`INSERT INTO rows ${list} VALUES ${Array(ROWS_PER_INSERT).fill(one).join(', ')}`);
    this.insertOne = this.db.prepare(`INSERT INTO rows ${list} VALUES ${one}`);
    this.insertFailedKey = this.db.prepare('INSERT INTO failed_keys (key, line) VALUES (?, ?) ON CONFLICT DO NOTHING');
    this.insertError = this.db.prepare('INSERT INTO errors (line, seq, "column", value, reason, raw) VALUES (?, ?, ?, ?, ?, ?)');
    this.insertRepeat = this.db.prepare('INSERT INTO repeats (line) VALUES (?)');
    this.params = new Array<string | number | null>(ROWS_PER_INSERT * this.width).fill(null);
  }

  private begin(): void {
    if (!this.db.inTransaction) this.db.exec('BEGIN');
  }

  /** A valid row, its values in stage column order (copied: the caller may reuse the array). */
  addRow(row: readonly (string | number | null)[]): void {
    const base = this.pending * this.width;
    for (let c = 0; c < this.width; c++) this.params[base + c] = row[c];
    this.valid++;
    if (++this.pending === ROWS_PER_INSERT) {
      this.begin();
      // Spread, not the array: better-sqlite3 reads an array argument element by element
      // through the engine's API, arguments directly (7 % less time per row, measured).
      this.insertMany.run(...this.params);
      this.pending = 0;
    }
  }

  /** A failing row: its key (still present, still taken) and its problems. */
  addFailed(f: FailedRow): void {
    this.begin();
    if (f.key) this.insertFailedKey.run(f.key, f.line);
    f.problems.forEach((p, seq) => this.insertError.run(f.line, seq, p.column || null, p.value || null, p.reason, seq === 0 ? JSON.stringify(f.raw) : null));
    this.failed++;
  }

  /** A valid row whose key may repeat an earlier one. */
  addRepeat(line: number): void {
    this.begin();
    this.insertRepeat.run(line);
  }

  /** Ends the batch: every row added so far is in the file. */
  commit(): void {
    if (this.pending > 0) {
      this.begin();
      for (let r = 0; r < this.pending; r++) this.insertOne.run(this.params.slice(r * this.width, (r + 1) * this.width));
      this.pending = 0;
    }
    if (this.db.inTransaction) this.db.exec('COMMIT');
  }

  /** The part is complete. `keyIndex`: a full sync will look keys up (built here, on this thread). */
  finish(keyIndex: boolean): void {
    this.commit();
    if (keyIndex) this.db.exec('CREATE INDEX rows_key ON rows (key)');
    this.close();
  }

  close(): void {
    if (this.db.open) this.db.close();
  }
}
