// SQLite staging: while a file streams in, its checked rows go into temporary tables of this
// connection (a key-ordered B-tree, written without touching the shared database, so no lock is
// held while a file is read), then one short write transaction applies the whole file set-based
// (apply-sql.ts). Memory holds one batch at a time.
import type {
  ApplyOptions,
  ApplyRequest,
  ApplyResult,
  ErrorRow,
  HoldCheck,
  ImportCounts,
  PasswordWork,
  RowProblem,
  Stage,
  StageBatch,
  StageSpec,
  StageSummary,
} from '../types.js';
import { createdFields, emptyCounts, NO_DIGEST, STAGE_SEPARATOR, stageColumns } from '../types.js';
import { importRow } from '../rows.js';
import type { SqliteConnection, Statement } from './connection.js';
import { changedRowsSql, createUsersSql, missingUsersWhere, type StagedColumns } from './apply-sql.js';
import { insertImport } from './records.js';

/** A batch of rows as the parse thread joined them: an empty value is NULL. */
function splitRows(joined: string): (string | null)[] {
  if (joined === '') return [];
  const values: (string | null)[] = joined.split(STAGE_SEPARATOR);
  for (let i = 0; i < values.length; i++) if (values[i] === '') values[i] = null;
  return values;
}

/** Rows per INSERT statement: one call binds a hundred rows (per-call overhead dominated). */
const ROWS_PER_INSERT = 100;
let nextStageId = 1;

export class SqliteStage implements Stage {
  private readonly rows: string;
  private readonly failedKeys: string;
  private readonly errors: string;
  private readonly changed: string;
  private readonly columns: string[];
  private readonly staged: StagedColumns;
  private readonly insertMany: Statement;
  private readonly insertOne: Statement;
  private readonly insertFailedKey: Statement;
  private readonly insertError: Statement;
  private valid = 0;
  private failed = 0;
  private duplicates: number[] = [];
  /** Lines the parse flagged as maybe repeating an earlier key. */
  private repeats: number[] = [];
  private keyIndex = false;
  private closed = false;

  constructor(
    private readonly c: SqliteConnection,
    private readonly spec: StageSpec,
  ) {
    const id = `${process.pid}_${nextStageId++}`;
    this.rows = `temp.stage_rows_${id}`;
    this.failedKeys = `temp.stage_failed_keys_${id}`;
    this.errors = `temp.stage_errors_${id}`;
    this.changed = `temp.stage_changed_${id}`;
    this.columns = stageColumns(spec.present);
    const has = new Set(this.columns);
    this.staged = { has: (name) => has.has(name) };
    const fields = this.columns.slice(3).map((col) => `${col} TEXT`);
    // Rows are appended in file order (line is the rowid): the cheapest insert there is. Repeated
    // keys were flagged while parsing and are confirmed in finish(); a key index is built only
    // for a full sync, which looks keys up.
    c.db.exec(`
      CREATE TABLE ${this.rows} (
        line INTEGER PRIMARY KEY, key TEXT NOT NULL, active INTEGER NOT NULL,
        ${fields.map((f) => `${f}, `).join('')}
        pw_hash TEXT,                      -- scrypt hash, once computed (new or changed password)
        pw_same INTEGER NOT NULL DEFAULT 0 -- 1: checked against the stored hash and unchanged
      );
      -- Keys of failing rows: still present in the file for a full sync, and still taken.
      CREATE TABLE ${this.failedKeys} (key TEXT PRIMARY KEY, line INTEGER NOT NULL) WITHOUT ROWID;
      -- One row per problem; the row's cells (raw, JSON) on its first problem only.
      CREATE TABLE ${this.errors} (line INTEGER NOT NULL, seq INTEGER NOT NULL, "column" TEXT, value TEXT, reason TEXT NOT NULL, raw TEXT, PRIMARY KEY (line, seq)) WITHOUT ROWID;
    `);
    const list = `(${this.columns.join(', ')})`;
    const one = `(${this.columns.map(() => '?').join(', ')})`;
    this.insertMany = c.db.prepare(`INSERT INTO ${this.rows} ${list} VALUES ${Array(ROWS_PER_INSERT).fill(one).join(', ')}`);
    this.insertOne = c.db.prepare(`INSERT INTO ${this.rows} ${list} VALUES ${one}`);
    this.insertFailedKey = c.db.prepare(`INSERT INTO ${this.failedKeys} (key, line) VALUES (?, ?) ON CONFLICT DO NOTHING`);
    this.insertError = c.db.prepare(`INSERT INTO ${this.errors} (line, seq, "column", value, reason, raw) VALUES (?, ?, ?, ?, ?, ?)`);
  }

  async write(batch: StageBatch): Promise<void> {
    const values = batch.values ?? splitRows(batch.rows);
    const width = this.columns.length;
    const n = values.length / width;
    this.c.local(() => {
      for (const f of batch.failed) {
        this.failed++;
        if (f.key) this.insertFailedKey.run(f.key, f.line);
        this.addProblems(f.line, f.problems, f.raw);
      }
      let i = 0;
      for (; i + ROWS_PER_INSERT <= n; i += ROWS_PER_INSERT) this.insertMany.run(values.slice(i * width, (i + ROWS_PER_INSERT) * width));
      for (; i < n; i++) this.insertOne.run(values.slice(i * width, (i + 1) * width));
      this.valid += n;
    });
    for (const line of batch.repeats) this.repeats.push(line);
  }

  private addProblems(line: number, problems: RowProblem[], raw: string[] | null): void {
    problems.forEach((p, seq) => this.insertError.run(line, seq, p.column || null, p.value || null, p.reason, seq === 0 && raw ? JSON.stringify(raw) : null));
  }

  /**
   * Every row is in: the rows the parse flagged are checked against every staged row with the
   * same key (one pass), and a row whose key came earlier in the file (in a valid or a failing
   * row) becomes a row error of its own, naming the line the key first had.
   */
  async finish(): Promise<StageSummary> {
    if (this.repeats.length === 0) return { valid: this.valid, failed: this.failed, duplicateLines: [] };
    const db = this.c.db;
    const column = this.spec.keyColumn;
    const candidates = `${this.rows}_repeat`;
    this.c.local(() => {
      db.exec(`CREATE TABLE ${candidates} (key TEXT PRIMARY KEY) WITHOUT ROWID`);
      const add = db.prepare(`INSERT INTO ${candidates} SELECT key FROM ${this.rows} WHERE line = ? ON CONFLICT DO NOTHING`);
      for (const line of this.repeats) add.run(line);
      const lines = db.prepare(`SELECT line, key FROM ${this.rows} WHERE key IN (SELECT key FROM ${candidates}) ORDER BY line`).all() as { line: number; key: string }[];
      const failedAt = new Map(
        (db.prepare(`SELECT key, line FROM ${this.failedKeys} WHERE key IN (SELECT key FROM ${candidates})`).all() as { key: string; line: number }[]).map((f) => [f.key, f.line]),
      );
      const first = new Map<string, number>();
      const drop = db.prepare(`DELETE FROM ${this.rows} WHERE line = ?`);
      for (const { line, key } of lines) {
        const earliest = Math.min(first.get(key) ?? line, failedAt.get(key) ?? line);
        if (!first.has(key)) first.set(key, line);
        if (earliest === line) continue;
        drop.run(line);
        const reason = `duplicate ${column}: it already appears on line ${earliest}; each ${column} may appear only once`;
        this.addProblems(line, [{ column, value: key, reason }], null);
        this.duplicates.push(line);
      }
      db.exec(`DROP TABLE ${candidates}`);
    });
    this.valid -= this.duplicates.length;
    this.failed += this.duplicates.length;
    return { valid: this.valid, failed: this.failed, duplicateLines: this.duplicates };
  }

  /** A full sync looks up every stored user's key among the staged ones. */
  private ensureKeyIndex(): void {
    if (this.keyIndex) return;
    this.c.db.exec(`CREATE INDEX ${this.rows}_key ON ${this.rows.replace('temp.', '')} (key)`);
    this.keyIndex = true;
  }

  async setDuplicateCells(rows: { line: number; raw: string[] }[]): Promise<void> {
    const set = this.c.db.prepare(`UPDATE ${this.errors} SET raw = ? WHERE line = ? AND seq = 0`);
    this.c.local(() => {
      for (const r of rows) set.run(JSON.stringify(r.raw), r.line);
    });
  }

  private params(options: ApplyOptions, extra: Record<string, unknown> = {}): Record<string, unknown> {
    const flag = (b: boolean) => (b ? 1 : 0);
    return {
      tenant: this.spec.tenant,
      kind: this.spec.kind,
      now: new Date().toISOString(),
      suffix: `_${new Date().getUTCFullYear()}`,
      overwrite_email: flag(options.overwriteEmail),
      overwrite_password: flag(options.overwritePassword),
      archive: flag(options.archiveInactive),
      ...extra,
    };
  }

  private countHold(options: ApplyOptions): HoldCheck | null {
    if (!options.fullSync) return null;
    this.ensureKeyIndex();
    const args = { tenant: this.spec.tenant, kind: this.spec.kind };
    const active = this.c.db.prepare(`SELECT count(*) FROM users u WHERE u.tenant = @tenant AND u.kind = @kind AND u.active = 1`).pluck().get(args) as number;
    const missing = this.c.db.prepare(`SELECT count(*) FROM users u WHERE ${missingUsersWhere(this.rows, this.failedKeys)}`).pluck().get(args) as number;
    const percent = active === 0 ? 0 : (missing / active) * 100;
    return { active, missing, percent, exceeds: missing > 0 && percent > options.maxDeactivatePercent };
  }

  holdCheck(options: ApplyOptions): Promise<HoldCheck | null> {
    return this.c.read(() => this.countHold(options));
  }

  passwordWork(overwritePassword: boolean): Promise<PasswordWork> {
    if (!this.staged.has('pw_digest')) return Promise.resolve({ hash: [], verify: [] });
    return this.c.read(() => {
      const rows = this.c.db
        .prepare(
          `SELECT s.line, u.external_id AS existing, u.password_hash AS hash, u.password_digest AS digest, s.pw_digest
             FROM ${this.rows} s LEFT JOIN users u ON u.tenant = ? AND u.external_id = s.key
            WHERE s.pw_digest IS NOT NULL ORDER BY s.line`,
        )
        .all(this.spec.tenant) as { line: number; existing: string | null; hash: string | null; digest: string | null; pw_digest: string }[];
      const work: PasswordWork = { hash: [], verify: [] };
      for (const r of rows) {
        if (r.existing === null || r.hash === null) work.hash.push(r.line); // a new user, or one without a password
        else if (!overwritePassword || r.digest === r.pw_digest) continue; // kept, or known to be the same
        else if (r.digest === null) work.verify.push({ line: r.line, hash: r.hash }); // stored before digests: check once
        else work.hash.push(r.line);
      }
      return work;
    });
  }

  async setPasswords(results: { line: number; hash: string | null }[]): Promise<void> {
    const set = this.c.db.prepare(`UPDATE ${this.rows} SET pw_hash = ?, pw_same = ? WHERE line = ?`);
    this.c.local(() => {
      for (const r of results) set.run(r.hash, r.hash === null ? 1 : 0, r.line);
    });
  }

  preview(options: ApplyOptions): Promise<ImportCounts> {
    return this.c.read(() => {
      const params = this.params(options);
      const created = this.c.db.prepare(`SELECT count(*) FROM ${this.rows} s WHERE NOT EXISTS (SELECT 1 FROM users u WHERE u.tenant = @tenant AND u.external_id = s.key)`).pluck().get(params) as number;
      const byAction = this.c.db.prepare(`SELECT action, count(*) AS n FROM (${changedRowsSql(this.rows, this.staged, true)}) GROUP BY action`).all(params) as { action: string; n: number }[];
      const hold = this.countHold(options);
      return this.counts(created, byAction, hold?.missing ?? 0);
    });
  }

  private counts(created: number, byAction: { action: string; n: number }[], missing: number): ImportCounts {
    const n = (a: string) => byAction.find((r) => r.action === a)?.n ?? 0;
    const changed = byAction.reduce((t, r) => t + r.n, 0);
    return {
      rows: this.valid + this.failed,
      created,
      updated: n('update') + n('restore'),
      unchanged: this.valid - created - changed,
      deactivated: n('deactivate') + missing,
      archived: n('archive'),
      failed: this.failed,
    };
  }

  apply(req: ApplyRequest): Promise<ApplyResult> {
    const { tenant, kind } = this.spec;
    if (req.options.fullSync) this.ensureKeyIndex(); // before the write lock is taken
    return this.c.write((): ApplyResult => {
      const before = this.c
        .stmt(`SELECT * FROM imports WHERE tenant = ? AND epoch = ? AND file = ? AND content_sha1 = ? AND status IN ('applied', 'applied with errors') ORDER BY id DESC LIMIT 1`)
        .get(tenant, req.epoch, req.file, req.contentSha1) as Record<string, unknown> | undefined;
      if (before) return { status: 'applied before', import: importRow(before) };
      // Safety hold first (again, inside the transaction), so a held file writes nothing at all.
      const hold = this.countHold(req.options);
      if (hold?.exceeds && !req.releaseHold) {
        return { status: 'held', hold, counts: { ...emptyCounts(), rows: this.valid + this.failed, failed: this.failed, deactivated: hold.missing } };
      }

      const status = this.failed > 0 ? 'applied with errors' : 'applied';
      const importId = insertImport(this.c, {
        runId: req.runId, tenant, epoch: req.epoch, file: req.file, kind, status, message: null, contentSha1: req.contentSha1,
        counts: { rows: 0, created: 0, updated: 0, unchanged: 0, deactivated: 0, archived: 0, failed: 0 }, actor: req.options.actor,
        startedAt: req.startedAt, header: req.header, heldImportId: req.heldImportId ?? null, createdFields: createdFields(this.spec.present),
      });
      const params = this.params(req.options, { import_id: importId, actor: req.options.actor });
      const db = this.c.db;

      // Existing users that change, and the rows whose user is new: one pass over the
      // directory, then recorded and written from there. Into an empty directory (a first
      // import) every row is new and the pass is skipped.
      const hasUsers = this.c.stmt('SELECT 1 FROM users WHERE tenant = ? LIMIT 1').get(tenant) !== undefined;
      let byAction: { action: string; n: number }[] = [];
      db.exec(`DROP TABLE IF EXISTS ${this.changed}`);
      if (hasUsers) {
        db.prepare(`CREATE TABLE ${this.changed} AS ${changedRowsSql(this.rows, this.staged, false, true)}`).run(params);
        byAction = db.prepare(`SELECT action, count(*) AS n FROM ${this.changed} WHERE action <> 'create' GROUP BY action`).all() as { action: string; n: number }[];
        db.prepare(
          `INSERT INTO user_changes (import_id, tenant, external_id, action, fields, old_values, actor, changed_at, old_password_hash, old_password_digest)
           SELECT @import_id, @tenant, key, action, fields, old_values, @actor, @now, old_password_hash, old_password_digest FROM ${this.changed}
            WHERE action <> 'create' ORDER BY line`,
        ).run(params);
        db.prepare(
          `UPDATE users SET kind = c.n_kind, email = c.n_email, username = c.n_username, first_name = c.n_first_name, last_name = c.n_last_name,
                  role = c.n_role, site_id = c.n_site_id, site_label = c.n_site_label, password_hash = c.n_password_hash,
                  password_digest = c.n_password_digest, active = c.n_active, archived_at = c.n_archived_at, attributes = c.n_attributes,
                  updated_at = @now, updated_by = @actor, last_import_id = @import_id
             FROM ${this.changed} c WHERE c.action <> 'create' AND users.tenant = @tenant AND users.external_id = c.key`,
        ).run(params);
        // A password checked once and found unchanged only gets its digest (not an update).
        if (this.staged.has('pw_digest')) {
          db.prepare(
            `UPDATE users SET password_digest = NULLIF(s.pw_digest, '${NO_DIGEST}') FROM ${this.rows} s
              WHERE users.tenant = @tenant AND users.external_id = s.key AND s.pw_same = 1 AND users.password_digest IS NOT NULLIF(s.pw_digest, '${NO_DIGEST}')`,
          ).run({ tenant });
        }
      }

      const created = db.prepare(createUsersSql(this.rows, this.staged, hasUsers ? this.changed : null)).run(params).changes;

      let missing = 0;
      if (req.options.fullSync) {
        db.prepare(
          `INSERT INTO user_changes (import_id, tenant, external_id, action, fields, old_values, actor, changed_at)
           SELECT @import_id, u.tenant, u.external_id, 'deactivate', '["active"]', '{"active":1}', @actor, @now
             FROM users u WHERE ${missingUsersWhere(this.rows, this.failedKeys)}`,
        ).run(params);
        missing = db
          .prepare(`UPDATE users AS u SET active = 0, updated_at = @now, updated_by = @actor, last_import_id = @import_id WHERE ${missingUsersWhere(this.rows, this.failedKeys)}`)
          .run(params).changes;
      }
      db.prepare(`INSERT INTO import_errors (import_id, line, "column", value, reason, raw) SELECT ?, line, "column", value, reason, raw FROM ${this.errors} ORDER BY line, seq`).run(importId);
      if (req.content) {
        db.prepare('INSERT OR REPLACE INTO content_hashes (tenant, path, sha1, import_id, seen_at) VALUES (?, ?, ?, ?, ?)').run(tenant, req.content.path, req.content.sha1, importId, params.now);
      }
      const counts = this.counts(created, byAction, missing);
      db.prepare('UPDATE imports SET rows = ?, created = ?, updated = ?, unchanged = ?, deactivated = ?, archived = ?, failed = ?, finished_at = ? WHERE id = ?').run(
        counts.rows, counts.created, counts.updated, counts.unchanged, counts.deactivated, counts.archived, counts.failed, new Date().toISOString(), importId,
      );
      db.exec(`DROP TABLE IF EXISTS ${this.changed}`);
      return { status, importId, counts };
    });
  }

  async *errorRows(): AsyncIterable<ErrorRow[]> {
    // Keyset paging by line: every problem of a line arrives in the same page.
    const page = this.c.db.prepare(
      `SELECT line, "column", value, reason, raw FROM ${this.errors}
        WHERE line IN (SELECT DISTINCT line FROM ${this.errors} WHERE line > ? ORDER BY line LIMIT 2000) ORDER BY line, seq`,
    );
    for (let after = -1; ; ) {
      const rows = page.all(after) as { line: number; column: string | null; value: string | null; reason: string; raw: string | null }[];
      if (rows.length === 0) return;
      const out: ErrorRow[] = [];
      for (const r of rows) {
        const problem = { column: r.column ?? '', value: r.value ?? '', reason: r.reason };
        const last = out[out.length - 1];
        if (last && last.line === r.line) last.problems.push(problem);
        else out.push({ line: r.line, raw: r.raw ? (JSON.parse(r.raw) as string[]) : [], problems: [problem] });
      }
      after = out[out.length - 1].line;
      yield out;
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    try {
      this.c.db.exec(`DROP TABLE IF EXISTS ${this.rows}; DROP TABLE IF EXISTS ${this.failedKeys}; DROP TABLE IF EXISTS ${this.errors}; DROP TABLE IF EXISTS ${this.changed};`);
    } catch {
      /* the connection is gone: so are its temp tables */
    }
  }
}
