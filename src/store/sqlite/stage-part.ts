// One part of a file's staging, written by the thread that parses that part: a private SQLite
// file (scratch: no journal, no fsync, rebuilt from the CSV if anything goes wrong) with the
// part's checked rows, the keys of its failing rows, its row problems and the lines whose key may
// repeat an earlier one. Rows go straight from the checker into the file on the parsing thread,
// so no row crosses threads and the main thread never holds a batch. Once every part is written,
// the stage on the main connection attaches the files (stage.ts) and applies them.
//
// The checked rows, nearly all of what a part holds, are laid out by rows-file.ts (in line order,
// without SQLite: 0.5 µs a row instead of 1.25). What else the parse finds (failing rows, repeat
// candidates: about one row in a hundred) goes into a small side database through better-sqlite3
// as it comes, and is copied into the part file once the rows are complete. Beside the part file
// go each valid row's line and key hash (key-hashes.ts), for the stage's duplicate check.
import fs from 'node:fs';
import Database from 'better-sqlite3';
import type { RowProblem } from '../types.js';
import { KeyHashWriter, keyHash, keyHashesFile } from './key-hashes.js';
import { KeyRuns } from './key-runs.js';
import { RowsFileWriter, type RowsFileValue } from './rows-file.js';

export interface FailedRow {
  line: number;
  key: string | null;
  raw: string[];
  problems: RowProblem[];
}

/** The rows table of a part file: the staged columns, then what the password step fills in. */
function rowsTableSql(columns: string[]): string {
  const fields = columns.slice(3).map((col) => `${col} TEXT, `).join('');
  return `CREATE TABLE rows (
      line INTEGER PRIMARY KEY, key TEXT NOT NULL, active INTEGER NOT NULL, ${fields}
      pw_hash TEXT,                      -- scrypt hash, once computed (new or changed password)
      pw_same INTEGER NOT NULL DEFAULT 0 -- 1: checked against the stored hash and unchanged
    )`;
}

/** The other tables of a part file. */
const SIDE_TABLES_SQL = `
    -- Keys of failing rows: still present in the file for a full sync, and still taken.
    CREATE TABLE failed_keys (key TEXT PRIMARY KEY, line INTEGER NOT NULL) WITHOUT ROWID;
    -- One row per problem; the row's cells (raw, JSON) on its first problem only.
    CREATE TABLE errors (line INTEGER NOT NULL, seq INTEGER NOT NULL, "column" TEXT, value TEXT, reason TEXT NOT NULL, raw TEXT, PRIMARY KEY (line, seq)) WITHOUT ROWID;
    -- Lines of valid rows whose key the shared filter had seen: candidates for a duplicate.
    CREATE TABLE repeats (line INTEGER PRIMARY KEY);`;
const SIDE_TABLES = ['failed_keys', 'errors', 'repeats'];

/** Every table of a part file (stage.ts reads them under the schema name it attaches). */
export function partTablesSql(columns: string[]): string {
  return `${rowsTableSql(columns)};\n${SIDE_TABLES_SQL}`;
}

/** A scratch SQLite file: no journal, no fsync, this thread's alone. */
function openScratch(file: string): Database.Database {
  const db = new Database(file);
  try {
    db.pragma('journal_mode = OFF');
    db.pragma('synchronous = OFF');
    db.pragma('locking_mode = EXCLUSIVE');
    db.pragma('cache_size = -1024');
    return db;
  } catch (err) {
    db.close();
    throw err;
  }
}

export class StagePartWriter {
  private readonly rows: RowsFileWriter;
  /** Each valid row's line and key hash, for the stage's duplicate check (key-hashes.ts). */
  private readonly keys: KeyHashWriter;
  private readonly side: Database.Database;
  private readonly sideFile: string;
  private readonly insertFailedKey: Database.Statement;
  private readonly insertError: Database.Statement;
  private readonly insertRepeat: Database.Statement;
  private readonly width: number;
  /** A row as the rows table takes it: the staged values, then pw_hash NULL and pw_same 0. */
  private readonly record: RowsFileValue[];
  /** Whether the keys came in an order the apply can follow (see key-runs.ts). */
  private readonly keyRuns = new KeyRuns();
  valid = 0;
  failed = 0;

  constructor(
    readonly file: string,
    columns: string[],
  ) {
    this.sideFile = `${file}-side`;
    for (const f of [file, this.sideFile]) fs.rmSync(f, { force: true });
    this.side = openScratch(this.sideFile);
    let keys: KeyHashWriter | undefined;
    try {
      this.side.exec(SIDE_TABLES_SQL);
      this.keys = keys = new KeyHashWriter(keyHashesFile(file));
      this.rows = new RowsFileWriter(file, 'rows', rowsTableSql(columns));
    } catch (err) {
      this.side.close();
      keys?.close();
      throw err;
    }
    this.width = columns.length;
    this.record = [...new Array<RowsFileValue>(this.width).fill(null), null, 0];
    this.insertFailedKey = this.side.prepare('INSERT INTO failed_keys (key, line) VALUES (?, ?) ON CONFLICT DO NOTHING');
    this.insertError = this.side.prepare('INSERT INTO errors (line, seq, "column", value, reason, raw) VALUES (?, ?, ?, ?, ?, ?)');
    this.insertRepeat = this.side.prepare('INSERT INTO repeats (line) VALUES (?)');
  }

  private begin(): void {
    if (!this.side.inTransaction) this.side.exec('BEGIN');
  }

  /**
   * A valid row, its values in stage column order, the line first (the caller may reuse the
   * array), and its key's keyHash() when the caller has it already.
   */
  addRow(row: readonly (string | number | null)[], hash = keyHash(row[1] as string)): void {
    for (let c = 0; c < this.width; c++) this.record[c] = row[c];
    this.rows.add(this.record);
    this.keys.add(row[0] as number, hash);
    this.keyRuns.add(row[1] as string);
    this.valid++;
  }

  /** The valid rows' keys came in no useful order: the apply reads this part sorted by key. */
  get scattered(): boolean {
    return this.keyRuns.scattered;
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

  /** Ends the batch (the rows file writes each page as it fills). */
  commit(): void {
    if (this.side.inTransaction) this.side.exec('COMMIT');
  }

  /**
   * The part is complete: the rows file gets its last pages, then the side tables (and, for a
   * full sync, which will look keys up, the key index: built here, on this thread).
   */
  finish(keyIndex: boolean): void {
    this.commit();
    this.side.close();
    this.rows.finish();
    this.keys.finish();
    const db = openScratch(this.file);
    try {
      db.prepare('ATTACH DATABASE ? AS side').run(this.sideFile);
      db.exec('BEGIN');
      db.exec(SIDE_TABLES_SQL);
      for (const t of SIDE_TABLES) db.exec(`INSERT INTO main.${t} SELECT * FROM side.${t}`);
      if (keyIndex) db.exec('CREATE INDEX rows_key ON rows (key)');
      db.exec('COMMIT');
      db.exec('DETACH DATABASE side');
    } finally {
      db.close();
    }
    fs.rmSync(this.sideFile, { force: true });
  }

  /** After a failure: every file closed, the side and key hash files removed (the part file goes with the stage's folder). */
  close(): void {
    this.rows.close();
    this.keys.close();
    if (this.side.open) this.side.close();
    for (const f of [this.sideFile, this.keys.file]) fs.rmSync(f, { force: true });
  }
}
