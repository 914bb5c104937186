// Staging: while a file streams in, its checked rows and its row errors go to temporary
// tables (on disk, per connection), in small synchronous batches. The file is then applied
// from there in one synchronous transaction. Memory never holds more than one batch, and the
// main tables are never touched until the whole file has been read.
import type { Db } from '../db/database.js';
import { hashPassword, verifyPassword } from './passwords.js';
import type { RowProblem, StagedUser } from './rows.js';

const BATCH = 2000;
const HASH_CONCURRENCY = 4;
let nextStageId = 1;

interface PendingRow {
  key: string;
  line: number;
  user?: StagedUser;
  raw?: string[];
  problems?: RowProblem[];
}

export interface StagedError {
  line: number;
  raw: string[];
  problems: RowProblem[];
}

export class Stage {
  readonly rowsTable: string;
  readonly keysTable: string;
  readonly errorsTable: string;
  private pending: PendingRow[] = [];
  private pendingKeys = new Map<string, number>();
  private readonly insertKey;
  private readonly keyLine;
  private readonly insertRow;
  private readonly insertError;
  failed = 0;
  valid = 0;

  constructor(private readonly db: Db) {
    const id = `${process.pid}_${nextStageId++}`;
    this.rowsTable = `temp.stage_rows_${id}`;
    this.keysTable = `temp.stage_keys_${id}`;
    this.errorsTable = `temp.stage_errors_${id}`;
    db.exec(`
      CREATE TABLE ${this.rowsTable} (line INTEGER PRIMARY KEY, key TEXT NOT NULL, user TEXT NOT NULL, password TEXT, password_hash TEXT);
      CREATE TABLE ${this.keysTable} (key TEXT PRIMARY KEY, line INTEGER NOT NULL);
      CREATE TABLE ${this.errorsTable} (line INTEGER PRIMARY KEY, raw TEXT NOT NULL, problems TEXT NOT NULL);
    `);
    this.insertKey = db.prepare(`INSERT OR IGNORE INTO ${this.keysTable} (key, line) VALUES (?, ?)`);
    this.keyLine = db.prepare(`SELECT line FROM ${this.keysTable} WHERE key = ?`).pluck();
    this.insertRow = db.prepare(`INSERT INTO ${this.rowsTable} (key, line, user, password) VALUES (?, ?, ?, ?)`);
    this.insertError = db.prepare(`INSERT INTO ${this.errorsTable} (line, raw, problems) VALUES (?, ?, ?)`);
  }

  /** The line on which `key` first appeared in this file, if it did. */
  firstLineOf(key: string): number | undefined {
    return this.pendingKeys.get(key) ?? (this.keyLine.get(key) as number | undefined);
  }

  addValid(line: number, user: StagedUser): void {
    this.valid++;
    this.pendingKeys.set(user.externalId, line);
    this.pending.push({ key: user.externalId, line, user });
    if (this.pending.length >= BATCH) this.flush();
  }

  /** A failing row; its key (if readable) still counts as present for a full sync. */
  addFailed(line: number, key: string | undefined, raw: string[], problems: RowProblem[]): void {
    this.failed++;
    if (key && !this.pendingKeys.has(key)) this.pendingKeys.set(key, line);
    this.pending.push({ key: key ?? '', line, raw, problems });
    if (this.pending.length >= BATCH) this.flush();
  }

  flush(): void {
    if (this.pending.length === 0) return;
    const rows = this.pending;
    this.pending = [];
    this.pendingKeys = new Map();
    this.db.transaction(() => {
      for (const r of rows) {
        if (r.key) this.insertKey.run(r.key, r.line);
        if (r.user) {
          const { password, ...rest } = r.user;
          this.insertRow.run(r.key, r.line, JSON.stringify(rest), password ?? null);
        } else {
          this.insertError.run(r.line, JSON.stringify(r.raw), JSON.stringify(r.problems));
        }
      }
    })();
  }

  /**
   * Turns staged plain-text passwords into hashes, in parallel on the thread pool. Skips the
   * work where the password will not be written (existing user with a password, and no
   * overwrite) or where it already matches, so an unchanged roster stays "unchanged".
   */
  async hashPasswords(tenant: string, overwrite: boolean): Promise<void> {
    this.flush();
    const next = this.db.prepare(
      `SELECT s.rowid AS id, s.password AS password, u.external_id AS existing, u.password_hash AS current
         FROM ${this.rowsTable} s LEFT JOIN users u ON u.tenant = ? AND u.external_id = s.key
        WHERE s.password IS NOT NULL AND s.rowid > ? ORDER BY s.rowid LIMIT 256`,
    );
    const store = this.db.prepare(`UPDATE ${this.rowsTable} SET password = NULL, password_hash = ? WHERE rowid = ?`);
    let after = 0;
    for (;;) {
      const batch = next.all(tenant, after) as { id: number; password: string; existing: string | null; current: string | null }[];
      if (batch.length === 0) break;
      after = batch[batch.length - 1].id;
      const results: { id: number; hash: string | null }[] = [];
      for (let i = 0; i < batch.length; i += HASH_CONCURRENCY) {
        results.push(
          ...(await Promise.all(
            batch.slice(i, i + HASH_CONCURRENCY).map(async (r) => {
              // Without overwrite a password is set on create, or on a user that has none.
              if (r.existing !== null && r.current !== null && !overwrite) return { id: r.id, hash: null };
              if (r.current && (await verifyPassword(r.password, r.current))) return { id: r.id, hash: null };
              return { id: r.id, hash: await hashPassword(r.password) };
            }),
          )),
        );
      }
      this.db.transaction(() => {
        for (const r of results) store.run(r.hash, r.id);
      })();
    }
  }

  // Paged, not iterated: better-sqlite3 forbids other statements on a connection while an
  // iterator is open, and the apply step writes between reads.
  *rows(): IterableIterator<{ key: string; line: number; user: StagedUser; passwordHash: string | null }> {
    this.flush();
    const page = this.db.prepare(`SELECT key, line, user, password_hash FROM ${this.rowsTable} WHERE line > ? ORDER BY line LIMIT ${BATCH}`);
    for (let after = 0; ; ) {
      const rows = page.all(after) as { key: string; line: number; user: string; password_hash: string | null }[];
      if (rows.length === 0) return;
      after = rows[rows.length - 1].line;
      for (const r of rows) yield { key: r.key, line: r.line, user: JSON.parse(r.user) as StagedUser, passwordHash: r.password_hash };
    }
  }

  *errors(): IterableIterator<StagedError> {
    this.flush();
    const page = this.db.prepare(`SELECT line, raw, problems FROM ${this.errorsTable} WHERE line > ? ORDER BY line LIMIT ${BATCH}`);
    for (let after = 0; ; ) {
      const rows = page.all(after) as { line: number; raw: string; problems: string }[];
      if (rows.length === 0) return;
      after = rows[rows.length - 1].line;
      for (const r of rows) yield { line: r.line, raw: JSON.parse(r.raw) as string[], problems: JSON.parse(r.problems) as RowProblem[] };
    }
  }

  firstErrors(limit: number): StagedError[] {
    const out: StagedError[] = [];
    for (const e of this.errors()) {
      out.push(e);
      if (out.length >= limit) break;
    }
    return out;
  }

  drop(): void {
    this.pending = [];
    this.db.exec(`DROP TABLE IF EXISTS ${this.rowsTable}; DROP TABLE IF EXISTS ${this.keysTable}; DROP TABLE IF EXISTS ${this.errorsTable};`);
  }
}
