// SQLite staging: the parse threads write a file's checked rows into part files of their own
// (stage-part.ts: one per part of the file, written in parallel, without touching the shared
// database, so no lock is held while a file is read). This stage then attaches the parts to a
// connection of its own and one short write transaction applies the whole file set-based
// (apply-sql.ts). Memory holds no rows: they are in the part files until the apply reads them.
import type {
  ApplyOptions,
  ApplyRequest,
  ApplyResult,
  ErrorRow,
  FileStage,
  HoldCheck,
  ImportCounts,
  PasswordWork,
  StagedPart,
  StageSpec,
  StageSummary,
} from '../types.js';
import { createdFields, emptyCounts, NO_DIGEST, stageColumns } from '../types.js';
import { importRow } from '../rows.js';
import type { SqliteConnection } from './connection.js';
import { changedRowsSql, createUsersSql, missingUsersWhere, type StagedColumns } from './apply-sql.js';
import { keyHash, keyHashesFile, linesWithHashes } from './key-hashes.js';
import { insertImport } from './records.js';
import { SortedCopy } from './sorted-copy.js';

let nextStageId = 1;

export class SqliteStage implements FileStage {
  readonly sink = 'files' as const;
  /** The attached schema of each part, in file order. */
  private parts: { schema: string; file: string; firstLine: number; scattered: boolean }[] = [];
  private readonly id: string;
  private readonly changed: string;
  private readonly staged: StagedColumns;
  private valid = 0;
  private failed = 0;
  private duplicates: number[] = [];
  private closed = false;

  /**
   * @param c the connection the stage reads and applies on: its own (closed with the stage), or
   *   the store's for an in-memory database (`ownsConnection` false)
   */
  constructor(
    private readonly c: SqliteConnection,
    private readonly ownsConnection: boolean,
    private readonly spec: StageSpec,
    /** Told how many users an apply wrote, once it has committed (a large one is checkpointed). */
    private readonly afterApply: (written: number) => void = () => {},
  ) {
    this.id = `${process.pid}_${nextStageId++}`;
    this.changed = `temp.stage_changed_${this.id}`;
    const has = new Set(stageColumns(spec.present));
    this.staged = { has: (name) => has.has(name) };
  }

  partFile(index: number): string {
    return `${this.spec.dir}/part-${index}.sqlite`;
  }

  async adopt(parts: StagedPart[]): Promise<void> {
    parts.forEach((p, k) => {
      const schema = `stage_${this.id}_${k}`;
      this.c.db.prepare('ATTACH DATABASE ? AS ' + schema).run(p.file);
      this.parts.push({ schema, file: p.file, firstLine: p.firstLine, scattered: p.scattered === true });
      // Scratch: no journal, no fsync (a failure re-reads the CSV). Read front to back, joined
      // by key into the directory: a small cache each (an attached file would get 16 MiB).
      this.c.db.pragma(`${schema}.journal_mode = OFF`);
      this.c.db.pragma(`${schema}.synchronous = OFF`);
      this.c.db.pragma(`${schema}.cache_size = -1024`);
      this.valid += p.valid;
      this.failed += p.failed;
    });
  }

  private get schemas(): string[] {
    return this.parts.map((p) => p.schema);
  }

  /**
   * Runs `fn` with the staged rows' tables as the statements that look their keys up in the
   * directory, or insert them, should read them: each part's, in line order, or, for a file
   * whose keys came scattered (see key-runs.ts), the one copy of every part sorted by key.
   */
  private async inKeyOrder<T>(fn: (sources: string[]) => Promise<T>): Promise<T> {
    if (!this.parts.some((p) => p.scattered)) return fn(this.parts.map((p) => `${p.schema}.rows`));
    const sorted = SortedCopy.make(this.c, this.id, this.schemas);
    try {
      return await fn([sorted.table]);
    } finally {
      sorted.drop();
    }
  }

  /** The part that holds `line`. */
  private partOf(line: number): string {
    let at = this.parts[0].schema;
    for (const p of this.parts) if (p.firstLine <= line) at = p.schema;
    return at;
  }

  /**
   * Every row is in: the rows the parse flagged are checked against every staged row with the
   * same key (found through the key hashes each part wrote, key-hashes.ts), and a row whose key
   * came earlier in the file (in a valid or a failing row, in any part) becomes a row error of
   * its own, naming the line the key first had.
   */
  async finish(): Promise<StageSummary> {
    const db = this.c.db;
    const column = this.spec.keyColumn;
    const candidates = `temp.stage_repeat_${this.id}`;
    const hits = `temp.stage_hits_${this.id}`;
    this.c.local(() => {
      db.exec(`CREATE TABLE ${candidates} (key TEXT PRIMARY KEY) WITHOUT ROWID`);
      for (const p of this.schemas) db.exec(`INSERT INTO ${candidates} SELECT r.key FROM ${p}.repeats x JOIN ${p}.rows r ON r.line = x.line WHERE true ON CONFLICT DO NOTHING`);
      // The valid rows that may hold a flagged key: those whose key hash is a flagged key's
      // (read from the hashes each part wrote beside its rows, not from the rows themselves).
      const hashes = new Set((db.prepare(`SELECT key FROM ${candidates}`).pluck().all() as string[]).map(keyHash));
      db.exec(`CREATE TABLE ${hits} (line INTEGER PRIMARY KEY)`);
      const hit = db.prepare(`INSERT INTO ${hits} (line) VALUES (?)`);
      for (const p of this.parts) for (const line of linesWithHashes(keyHashesFile(p.file), hashes)) hit.run(line);
      const rowsWithCandidateKeys = (p: string) =>
        `SELECT r.line, r.key FROM ${hits} h CROSS JOIN ${p}.rows r ON r.line = h.line WHERE r.key IN (SELECT key FROM ${candidates})`;
      // Most candidates are the filter's false alarms (about 1 in 100 rows): only the keys that
      // really come more than once, in valid or failing rows of any part, are read into memory.
      const occurrences = this.schemas
        .flatMap((p) => [`SELECT key FROM (${rowsWithCandidateKeys(p)})`, `SELECT key FROM ${p}.failed_keys WHERE key IN (SELECT key FROM ${candidates})`])
        .join(' UNION ALL ');
      db.exec(`DELETE FROM ${candidates} WHERE key NOT IN (SELECT key FROM (${occurrences}) GROUP BY key HAVING count(*) > 1)`);
      const drop = () => db.exec(`DROP TABLE ${candidates}; DROP TABLE ${hits}`);
      if ((db.prepare(`SELECT count(*) FROM ${candidates}`).pluck().get() as number) === 0) return drop();
      const lines: { line: number; key: string; part: string }[] = [];
      const failedAt = new Map<string, number>();
      for (const p of this.schemas) {
        for (const r of db.prepare(`${rowsWithCandidateKeys(p)} ORDER BY r.line`).all() as { line: number; key: string }[]) {
          lines.push({ ...r, part: p });
        }
        for (const f of db.prepare(`SELECT key, line FROM ${p}.failed_keys WHERE key IN (SELECT key FROM ${candidates})`).all() as { key: string; line: number }[]) {
          failedAt.set(f.key, Math.min(failedAt.get(f.key) ?? f.line, f.line));
        }
      }
      const first = new Map<string, number>();
      for (const { line, key, part } of lines) {
        const earliest = Math.min(first.get(key) ?? line, failedAt.get(key) ?? line);
        if (!first.has(key)) first.set(key, line);
        if (earliest === line) continue;
        db.prepare(`DELETE FROM ${part}.rows WHERE line = ?`).run(line);
        const reason = `duplicate ${column}: it already appears on line ${earliest}; each ${column} may appear only once`;
        db.prepare(`INSERT INTO ${part}.errors (line, seq, "column", value, reason, raw) VALUES (?, 0, ?, ?, ?, NULL)`).run(line, column, key, reason);
        this.duplicates.push(line);
      }
      drop();
    });
    this.valid -= this.duplicates.length;
    this.failed += this.duplicates.length;
    return { valid: this.valid, failed: this.failed, duplicateLines: this.duplicates };
  }

  async setDuplicateCells(rows: { line: number; raw: string[] }[]): Promise<void> {
    this.c.local(() => {
      for (const r of rows) this.c.db.prepare(`UPDATE ${this.partOf(r.line)}.errors SET raw = ? WHERE line = ? AND seq = 0`).run(JSON.stringify(r.raw), r.line);
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
    const args = { tenant: this.spec.tenant, kind: this.spec.kind };
    const active = this.c.db.prepare(`SELECT count(*) FROM users u WHERE u.tenant = @tenant AND u.kind = @kind AND u.active = 1`).pluck().get(args) as number;
    const missing = this.c.db.prepare(`SELECT count(*) FROM users u WHERE ${missingUsersWhere(this.schemas)}`).pluck().get(args) as number;
    const percent = active === 0 ? 0 : (missing / active) * 100;
    return { active, missing, percent, exceeds: missing > 0 && percent > options.maxDeactivatePercent };
  }

  holdCheck(options: ApplyOptions): Promise<HoldCheck | null> {
    return this.c.read(() => this.countHold(options));
  }

  passwordWork(overwritePassword: boolean): Promise<PasswordWork> {
    if (!this.staged.has('pw_digest')) return Promise.resolve({ hash: [], verify: [] });
    return this.c.read(() => {
      const work: PasswordWork = { hash: [], verify: [] };
      for (const p of this.schemas) {
        const rows = this.c.db
          .prepare(
            `SELECT s.line, u.external_id AS existing, u.password_hash AS hash, u.password_digest AS digest, s.pw_digest
               FROM ${p}.rows s LEFT JOIN users u ON u.tenant = ? AND u.external_id = s.key
              WHERE s.pw_digest IS NOT NULL ORDER BY s.line`,
          )
          .all(this.spec.tenant) as { line: number; existing: string | null; hash: string | null; digest: string | null; pw_digest: string }[];
        for (const r of rows) {
          if (r.existing === null || r.hash === null) work.hash.push(r.line); // a new user, or one without a password
          else if (!overwritePassword || r.digest === r.pw_digest) continue; // kept, or known to be the same
          else if (r.digest === null) work.verify.push({ line: r.line, hash: r.hash }); // stored before digests: check once
          else work.hash.push(r.line);
        }
      }
      return work;
    });
  }

  async setPasswords(results: { line: number; hash: string | null }[]): Promise<void> {
    this.c.local(() => {
      for (const r of results) this.c.db.prepare(`UPDATE ${this.partOf(r.line)}.rows SET pw_hash = ?, pw_same = ? WHERE line = ?`).run(r.hash, r.hash === null ? 1 : 0, r.line);
    });
  }

  preview(options: ApplyOptions): Promise<ImportCounts> {
    return this.inKeyOrder((sources) => this.previewCounts(options, sources));
  }

  private previewCounts(options: ApplyOptions, sources: string[]): Promise<ImportCounts> {
    return this.c.read(() => {
      const params = this.params(options);
      let created = 0;
      const byAction = new Map<string, number>();
      for (const rows of sources) {
        created += this.c.db.prepare(`SELECT count(*) FROM ${rows} s WHERE NOT EXISTS (SELECT 1 FROM users u WHERE u.tenant = @tenant AND u.external_id = s.key)`).pluck().get(params) as number;
        for (const r of this.c.db.prepare(`SELECT action, count(*) AS n FROM (${changedRowsSql(rows, this.staged, true)}) GROUP BY action`).all(params) as { action: string; n: number }[]) {
          byAction.set(r.action, (byAction.get(r.action) ?? 0) + r.n);
        }
      }
      const hold = this.countHold(options);
      return this.counts(created, [...byAction].map(([action, n]) => ({ action, n })), hold?.missing ?? 0);
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

  async apply(req: ApplyRequest): Promise<ApplyResult> {
    const result = await this.inKeyOrder((sources) => this.applyInOneTransaction(req, sources));
    if (result.status !== 'applied before' && result.status !== 'held') {
      const c = result.counts;
      this.afterApply(c.created + c.updated + c.deactivated + c.archived);
    }
    return result;
  }

  private applyInOneTransaction(req: ApplyRequest, sources: string[]): Promise<ApplyResult> {
    const { tenant, kind } = this.spec;
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
        sources.forEach((rows, k) => {
          const select = changedRowsSql(rows, this.staged, false, true);
          db.prepare(k === 0 ? `CREATE TABLE ${this.changed} AS ${select}` : `INSERT INTO ${this.changed} ${select}`).run(params);
        });
        byAction = db.prepare(`SELECT action, count(*) AS n FROM ${this.changed} WHERE action <> 'create' GROUP BY action`).all() as { action: string; n: number }[];
        db.prepare(
          `INSERT INTO user_changes (import_id, tenant, external_id, action, fields, old_values, actor, changed_at, old_password_hash, old_password_digest)
           SELECT @import_id, @tenant, key, action, fields, old_values, @actor, @now, old_password_hash, old_password_digest FROM ${this.changed}
            WHERE action <> 'create' ORDER BY line`,
        ).run(params);
        // Driven by the changed rows' keys, one primary-key lookup each. (UPDATE … FROM first
        // copies the whole join into a scratch table: 8 MiB more for 50,000 changes, as fast.)
        db.exec(`CREATE INDEX ${this.changed}_key ON ${this.changed.slice('temp.'.length)} (key) WHERE action <> 'create'`);
        db.prepare(
          `UPDATE users SET (kind, email, username, first_name, last_name, role, site_id, site_label, password_hash, password_digest,
                            active, archived_at, attributes, updated_at, updated_by, last_import_id) =
                 (SELECT n_kind, n_email, n_username, n_first_name, n_last_name, n_role, n_site_id, n_site_label, n_password_hash, n_password_digest,
                         n_active, n_archived_at, n_attributes, @now, @actor, @import_id
                    FROM ${this.changed} c WHERE c.key = users.external_id AND c.action <> 'create')
            WHERE users.tenant = @tenant AND users.external_id IN (SELECT key FROM ${this.changed} WHERE action <> 'create')`,
        ).run(params);
        // A password checked once and found unchanged only gets its digest (not an update).
        if (this.staged.has('pw_digest')) {
          for (const p of this.schemas) {
            db.prepare(
              `UPDATE users SET password_digest = NULLIF(s.pw_digest, '${NO_DIGEST}') FROM ${p}.rows s
                WHERE users.tenant = @tenant AND users.external_id = s.key AND s.pw_same = 1 AND users.password_digest IS NOT NULLIF(s.pw_digest, '${NO_DIGEST}')`,
            ).run({ tenant });
          }
        }
      }

      let created = 0;
      for (const rows of sources) created += db.prepare(createUsersSql(rows, this.staged, hasUsers ? this.changed : null)).run(params).changes;

      let missing = 0;
      if (req.options.fullSync) {
        db.prepare(
          `INSERT INTO user_changes (import_id, tenant, external_id, action, fields, old_values, actor, changed_at)
           SELECT @import_id, u.tenant, u.external_id, 'deactivate', '["active"]', '{"active":1}', @actor, @now
             FROM users u WHERE ${missingUsersWhere(this.schemas)}`,
        ).run(params);
        missing = db
          .prepare(`UPDATE users AS u SET active = 0, updated_at = @now, updated_by = @actor, last_import_id = @import_id WHERE ${missingUsersWhere(this.schemas)}`)
          .run(params).changes;
      }
      for (const p of this.schemas) {
        db.prepare(`INSERT INTO import_errors (import_id, line, "column", value, reason, raw) SELECT ?, line, "column", value, reason, raw FROM ${p}.errors ORDER BY line, seq`).run(importId);
      }
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
    // Part by part (they are in line order), keyset paging by line: every problem of a line
    // arrives in the same page.
    for (const p of this.schemas) {
      const page = this.c.db.prepare(
        `SELECT line, "column", value, reason, raw FROM ${p}.errors
          WHERE line IN (SELECT DISTINCT line FROM ${p}.errors WHERE line > ? ORDER BY line LIMIT 2000) ORDER BY line, seq`,
      );
      for (let after = -1; ; ) {
        const rows = page.all(after) as { line: number; column: string | null; value: string | null; reason: string; raw: string | null }[];
        if (rows.length === 0) break;
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
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    try {
      this.c.db.exec(`DROP TABLE IF EXISTS ${this.changed}`);
      this.c.db.exec(`DROP TABLE IF EXISTS ${SortedCopy.tableOf(this.id)}`);
      for (const p of this.schemas) this.c.db.exec(`DETACH DATABASE ${p}`);
    } catch {
      /* the connection is gone: so is what it attached */
    }
    if (this.ownsConnection) this.c.close();
  }
}
