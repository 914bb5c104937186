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
  readonly failedKeysTable: string;
  readonly errorsTable: string;
  private pending: PendingRow[] = [];
  private failedKeys = 0;
  private readonly insertFailedKey;
  private readonly failedKeyLine;
  private readonly validKeyLine;
  private readonly insertRow;
  private readonly insertError;
  failed = 0;
  valid = 0;
  /** The user fields this file carries (the same for every row: they follow the header). */
  readonly present = new Set<keyof StagedUser>();

  /** @param keyColumn the key column's name, for the duplicate message */
  constructor(
    private readonly db: Db,
    private readonly keyColumn: string,
  ) {
    const id = `${process.pid}_${nextStageId++}`;
    this.rowsTable = `temp.stage_rows_${id}`;
    this.failedKeysTable = `temp.stage_failed_keys_${id}`;
    this.errorsTable = `temp.stage_errors_${id}`;
    db.exec(`
      CREATE TABLE ${this.rowsTable} (
        line INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE, email TEXT, username TEXT, first_name TEXT, last_name TEXT, role TEXT,
        site_id TEXT, site_label TEXT, password TEXT, password_hash TEXT, active INTEGER NOT NULL,
        attributes TEXT NOT NULL, -- JSON of the non-empty extra columns, keys sorted
        cleared TEXT              -- JSON array of extra columns left empty (removed on update), or NULL
      );
      -- Keys of failing rows: still present in the file for a full sync, and still taken.
      CREATE TABLE ${this.failedKeysTable} (key TEXT PRIMARY KEY, line INTEGER NOT NULL);
      CREATE TABLE ${this.errorsTable} (line INTEGER PRIMARY KEY, raw TEXT NOT NULL, problems TEXT NOT NULL);
    `);
    this.insertFailedKey = db.prepare(`INSERT OR IGNORE INTO ${this.failedKeysTable} (key, line) VALUES (?, ?)`);
    this.failedKeyLine = db.prepare(`SELECT line FROM ${this.failedKeysTable} WHERE key = ?`).pluck();
    this.validKeyLine = db.prepare(`SELECT line FROM ${this.rowsTable} WHERE key = ?`).pluck();
    // ON CONFLICT DO NOTHING: a duplicate key shows as "no change", looked into only then.
    this.insertRow = db.prepare(
      `INSERT INTO ${this.rowsTable} (line, key, email, username, first_name, last_name, role, site_id, site_label, password, active, attributes, cleared)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO NOTHING`,
    );
    this.insertError = db.prepare(`INSERT INTO ${this.errorsTable} (line, raw, problems) VALUES (?, ?, ?)`);
  }

  addValid(line: number, user: StagedUser, raw: string[]): void {
    if (this.valid === 0) {
      for (const [field, value] of Object.entries(user)) {
        if (value === undefined || (field === 'attributes' && Object.keys(value as object).length === 0)) continue;
        this.present.add(field as keyof StagedUser);
      }
    }
    this.valid++;
    this.pending.push({ key: user.externalId, line, user, raw });
    if (this.pending.length >= BATCH) this.flush();
  }

  /** A failing row; its key (if readable) still counts as present for a full sync. */
  addFailed(line: number, key: string | undefined, raw: string[], problems: RowProblem[]): void {
    this.failed++;
    this.pending.push({ key: key ?? '', line, raw, problems });
    if (this.pending.length >= BATCH) this.flush();
  }

  flush(): void {
    if (this.pending.length === 0) return;
    const rows = this.pending;
    this.pending = [];
    this.db.transaction(() => {
      for (const r of rows) {
        if (r.user) this.stageValid(r, r.user);
        else this.stageFailed(r.line, r.key, r.raw!, r.problems!);
      }
    })();
  }

  /** Stages a valid row, or, when its key came earlier in the file, records it as a duplicate. */
  private stageValid(r: PendingRow, u: StagedUser): void {
    const failedAt = this.failedKeys > 0 ? (this.failedKeyLine.get(r.key) as number | undefined) : undefined;
    if (failedAt === undefined && this.insertStaged(r.line, r.key, u)) return;
    const validAt = this.validKeyLine.get(r.key) as number | undefined;
    const first = Math.min(...[failedAt, validAt].filter((n): n is number => n !== undefined));
    this.valid--;
    this.failed++;
    // Its key is already carried by the earlier row: only the error is recorded.
    const problem: RowProblem = {
      column: this.keyColumn,
      value: r.key,
      reason: `duplicate ${this.keyColumn}: it already appears on line ${first}; each ${this.keyColumn} may appear only once`,
    };
    this.insertError.run(r.line, JSON.stringify(r.raw), JSON.stringify([problem]));
  }

  /** False when the key is staged already (ON CONFLICT DO NOTHING changed nothing). */
  private insertStaged(line: number, key: string, u: StagedUser): boolean {
    const kept: Record<string, string> = {};
    const cleared: string[] = [];
    for (const name of Object.keys(u.attributes).sort()) {
      const v = u.attributes[name];
      if (v === null) cleared.push(name);
      else kept[name] = v;
    }
    const changes = this.insertRow.run(
      line, key, u.email ?? null, u.username ?? null, u.firstName ?? null, u.lastName ?? null, u.role ?? null,
      u.siteId ?? null, u.siteLabel ?? null, u.password ?? null, u.active ? 1 : 0,
      JSON.stringify(kept), cleared.length ? JSON.stringify(cleared) : null,
    ).changes;
    return changes === 1;
  }

  private stageFailed(line: number, key: string, raw: string[], problems: RowProblem[]): void {
    if (key) this.failedKeys += this.insertFailedKey.run(key, line).changes;
    this.insertError.run(line, JSON.stringify(raw), JSON.stringify(problems));
  }

  /** SQL condition: is `column` a key this file carries (in a valid or a failing row)? */
  carriesKey(column: string): string {
    return `(EXISTS (SELECT 1 FROM ${this.rowsTable} k WHERE k.key = ${column}) OR EXISTS (SELECT 1 FROM ${this.failedKeysTable} f WHERE f.key = ${column}))`;
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
  /** Staged rows whose user already exists, with that user's stored row, in file order. */
  *existingUsers<T>(tenant: string): IterableIterator<{ key: string; user: StagedUser; passwordHash: string | null; existing: T }> {
    this.flush();
    const page = this.db.prepare(
      `SELECT s.line AS s_line, s.key AS s_key, s.email AS s_email, s.username AS s_username, s.first_name AS s_first_name,
              s.last_name AS s_last_name, s.role AS s_role, s.site_id AS s_site_id, s.site_label AS s_site_label,
              s.password_hash AS s_password_hash, s.active AS s_active, s.attributes AS s_attributes, s.cleared AS s_cleared, u.*
         FROM ${this.rowsTable} s JOIN users u ON u.tenant = ? AND u.external_id = s.key
        WHERE s.line > ? ORDER BY s.line LIMIT ${BATCH}`,
    );
    const has = (f: keyof StagedUser) => this.present.has(f);
    for (let after = 0; ; ) {
      const rows = page.all(tenant, after) as Record<string, unknown>[];
      if (rows.length === 0) return;
      after = rows[rows.length - 1].s_line as number;
      for (const r of rows) {
        const attributes: Record<string, string | null> = JSON.parse(r.s_attributes as string);
        if (r.s_cleared) for (const name of JSON.parse(r.s_cleared as string) as string[]) attributes[name] = null;
        const field = <V>(f: keyof StagedUser, column: string): V | undefined => (has(f) ? (r[column] as V) : undefined);
        const user: StagedUser = {
          externalId: r.s_key as string,
          email: field('email', 's_email'),
          username: field('username', 's_username'),
          firstName: field('firstName', 's_first_name'),
          lastName: field('lastName', 's_last_name'),
          role: field('role', 's_role'),
          siteId: field('siteId', 's_site_id'),
          siteLabel: field('siteLabel', 's_site_label'),
          active: r.s_active === 1,
          attributes,
        };
        yield { key: r.s_key as string, user, passwordHash: (r.s_password_hash as string | null) ?? null, existing: r as T };
      }
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
    this.db.exec(`DROP TABLE IF EXISTS ${this.rowsTable}; DROP TABLE IF EXISTS ${this.failedKeysTable}; DROP TABLE IF EXISTS ${this.errorsTable};`);
  }
}
