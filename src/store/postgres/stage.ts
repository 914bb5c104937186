// PostgreSQL staging: checked rows are COPYed (pg-copy-streams) into temporary tables of one
// session held for the file, then one transaction applies the whole file set-based
// (apply-sql.ts). The parse thread writes the rows in COPY's text format already.
import { once } from 'node:events';
import type { Writable } from 'node:stream';
import { finished } from 'node:stream/promises';
import { from as copyFrom } from 'pg-copy-streams';
import type {
  ApplyOptions,
  ApplyRequest,
  ApplyResult,
  ErrorRow,
  HoldCheck,
  ImportCounts,
  PasswordWork,
  RowProblem,
  BatchStage,
  StageBatch,
  StageSpec,
  StageSummary,
} from '../types.js';
import { createdFields, emptyCounts, NO_DIGEST, stageColumns } from '../types.js';
import { importRow } from '../rows.js';
import { bind, changedRowsSql, createUsersSql, missingUsersWhere, type StagedColumns } from './apply-sql.js';
import type { Client } from './connection.js';
import { insertImport } from './records.js';

let nextStageId = 1;

/**
 * The file sets this user's password now (see the UPDATE in apply): it has a new hash for it, and
 * either overwritePassword is on or the user still has none.
 */
const SETS_PASSWORD = `c.sets_password AND (:overwrite_password OR users.password_hash IS NULL)`;

export class PgStage implements BatchStage {
  readonly sink = 'batches' as const;
  private readonly rows: string;
  private readonly failedKeys: string;
  private readonly errors: string;
  private readonly columns: string[];
  private readonly staged: StagedColumns;
  private valid = 0;
  private failed = 0;
  private repeats: number[] = [];
  private duplicates: number[] = [];
  private closed = false;
  /** The stored hash each verified password was checked against (passwordWork). */
  private readonly checked = new Map<number, string>();
  /**
   * The COPY that batches of valid rows stream into, open from the first batch until anything
   * else needs the session: the server takes rows without a round trip per batch (one COPY a
   * batch cost a million-row file about half a second).
   */
  private copy: { stream: Writable; done: Promise<void> } | null = null;

  private constructor(
    private readonly client: Client,
    private readonly spec: StageSpec,
  ) {
    const id = `${process.pid}_${nextStageId++}`;
    this.rows = `stage_rows_${id}`;
    this.failedKeys = `stage_failed_keys_${id}`;
    this.errors = `stage_errors_${id}`;
    this.columns = stageColumns(spec.present);
    const has = new Set(this.columns);
    this.staged = { has: (name) => has.has(name) };
  }

  static async open(client: Client, spec: StageSpec): Promise<PgStage> {
    const stage = new PgStage(client, spec);
    const fields = stage.columns.slice(3).map((c) => `${c} text, `).join('');
    await client.query(`
      CREATE TEMP TABLE ${stage.rows} (line integer NOT NULL, key text NOT NULL, active smallint NOT NULL, ${fields} pw_hash text, pw_same boolean NOT NULL DEFAULT false, pw_checked text);
      CREATE TEMP TABLE ${stage.failedKeys} (key text PRIMARY KEY, line integer NOT NULL);
      CREATE TEMP TABLE ${stage.errors} (line integer NOT NULL, seq integer NOT NULL, "column" text, value text, reason text NOT NULL, raw jsonb);
    `);
    return stage;
  }

  async write(batch: StageBatch): Promise<void> {
    if (batch.failed.length) {
      await this.endCopy(); // the session takes one statement at a time
      await this.client.query(`INSERT INTO ${this.failedKeys} SELECT * FROM unnest($1::text[], $2::integer[]) ON CONFLICT DO NOTHING`, [
        batch.failed.filter((f) => f.key).map((f) => f.key),
        batch.failed.filter((f) => f.key).map((f) => f.line),
      ]);
      await this.addProblems(batch.failed.flatMap((f) => f.problems.map((p, seq) => ({ line: f.line, seq, p, raw: seq === 0 ? f.raw : null }))));
      this.failed += batch.failed.length;
    }
    if (batch.rows) {
      const copy = (this.copy ??= this.openCopy());
      if (!copy.stream.write(batch.rows)) await Promise.race([once(copy.stream, 'drain'), copy.done]);
      this.valid += batch.count;
    }
    for (const line of batch.repeats) this.repeats.push(line);
  }

  private openCopy(): { stream: Writable; done: Promise<void> } {
    const stream = this.client.query(copyFrom(`COPY ${this.rows} (${this.columns.join(', ')}) FROM STDIN`));
    const done = finished(stream);
    done.catch(() => {}); // seen by whoever waits for it (endCopy, or a write's back-pressure)
    return { stream, done };
  }

  /** Ends the open COPY, if any, and waits for the server to have every row (or its error). */
  private async endCopy(): Promise<void> {
    const copy = this.copy;
    if (!copy) return;
    this.copy = null;
    copy.stream.end();
    await copy.done;
  }

  async reset(): Promise<void> {
    await this.endCopy().catch(() => {}); // the rows go anyway
    await this.client.query(`TRUNCATE ${this.rows}, ${this.failedKeys}, ${this.errors}`);
    this.valid = 0;
    this.failed = 0;
    this.repeats = [];
  }

  private async addProblems(items: { line: number; seq: number; p: RowProblem; raw: string[] | null }[]): Promise<void> {
    if (items.length === 0) return;
    await this.client.query(`INSERT INTO ${this.errors} SELECT * FROM unnest($1::integer[], $2::integer[], $3::text[], $4::text[], $5::text[], $6::jsonb[])`, [
      items.map((i) => i.line),
      items.map((i) => i.seq),
      items.map((i) => i.p.column || null),
      items.map((i) => i.p.value || null),
      items.map((i) => i.p.reason),
      items.map((i) => (i.raw ? JSON.stringify(i.raw) : null)),
    ]);
  }

  async finish(): Promise<StageSummary> {
    await this.endCopy();
    // Statistics for the planner (a temporary table has none: it would guess a nested loop over a
    // million rows). A small sample is enough to see the size and that keys are distinct.
    await this.client.query(`BEGIN; SET LOCAL default_statistics_target = 10; ANALYZE ${this.rows}; COMMIT`);
    if (this.repeats.length) {
      const column = this.spec.keyColumn;
      const { rows } = await this.client.query(
        `WITH cand AS (SELECT DISTINCT key FROM ${this.rows} WHERE line = ANY($1::integer[]))
         SELECT s.line, s.key, least(min(s.line) OVER (PARTITION BY s.key), f.line) AS first
           FROM ${this.rows} s JOIN cand USING (key) LEFT JOIN ${this.failedKeys} f ON f.key = s.key
          ORDER BY s.line`,
        [this.repeats],
      );
      const dups = (rows as { line: number; key: string; first: number }[]).filter((r) => r.line > r.first);
      if (dups.length) {
        await this.client.query(`DELETE FROM ${this.rows} WHERE line = ANY($1::integer[])`, [dups.map((d) => d.line)]);
        await this.addProblems(
          dups.map((d) => ({ line: d.line, seq: 0, raw: null, p: { column, value: d.key, reason: `duplicate ${column}: it already appears on line ${d.first}; each ${column} may appear only once` } })),
        );
      }
      this.duplicates = dups.map((d) => d.line);
    }
    this.valid -= this.duplicates.length;
    this.failed += this.duplicates.length;
    return { valid: this.valid, failed: this.failed, duplicateLines: this.duplicates };
  }

  async setDuplicateCells(rows: { line: number; raw: string[] }[]): Promise<void> {
    if (rows.length === 0) return;
    await this.client.query(`UPDATE ${this.errors} e SET raw = v.raw FROM unnest($1::integer[], $2::jsonb[]) AS v(line, raw) WHERE e.line = v.line AND e.seq = 0`, [
      rows.map((r) => r.line),
      rows.map((r) => JSON.stringify(r.raw)),
    ]);
  }

  private params(options: ApplyOptions, extra: Record<string, unknown> = {}): Record<string, unknown> {
    return {
      tenant: this.spec.tenant,
      kind: this.spec.kind,
      suffix: `_${new Date().getUTCFullYear()}`,
      overwrite_email: options.overwriteEmail,
      overwrite_password: options.overwritePassword,
      archive: options.archiveInactive,
      ...extra,
    };
  }

  private async query<T = Record<string, unknown>>(sql: string, params: Record<string, unknown>): Promise<T[]> {
    const { text, values } = bind(sql, params);
    return (await this.client.query(text, values)).rows as T[];
  }

  private async countHold(options: ApplyOptions): Promise<HoldCheck | null> {
    if (!options.fullSync) return null;
    const p = { tenant: this.spec.tenant, kind: this.spec.kind };
    const [a] = await this.query<{ n: number }>(`SELECT count(*) AS n FROM users u WHERE u.tenant = :tenant AND u.kind = :kind AND u.active`, p);
    const [m] = await this.query<{ n: number }>(`SELECT count(*) AS n FROM users u WHERE ${missingUsersWhere(this.rows, this.failedKeys)}`, p);
    const active = Number(a.n);
    const missing = Number(m.n);
    const percent = active === 0 ? 0 : (missing / active) * 100;
    return { active, missing, percent, exceeds: missing > 0 && percent > options.maxDeactivatePercent };
  }

  holdCheck(options: ApplyOptions): Promise<HoldCheck | null> {
    return this.countHold(options);
  }

  async passwordWork(overwritePassword: boolean): Promise<PasswordWork> {
    if (!this.staged.has('pw_digest')) return { hash: [], verify: [] };
    const { rows } = await this.client.query(
      `SELECT s.line, u.external_id AS existing, u.password_hash AS hash, u.password_digest AS digest, s.pw_digest
         FROM ${this.rows} s LEFT JOIN users u ON u.tenant = $1 AND u.external_id = s.key
        WHERE s.pw_digest IS NOT NULL ORDER BY s.line`,
      [this.spec.tenant],
    );
    const work: PasswordWork = { hash: [], verify: [] };
    this.checked.clear();
    for (const r of rows as { line: number; existing: string | null; hash: string | null; digest: string | null; pw_digest: string }[]) {
      if (r.existing === null || r.hash === null) work.hash.push(r.line);
      else if (!overwritePassword || r.digest === r.pw_digest) continue;
      else if (r.digest === null) {
        work.verify.push({ line: r.line, hash: r.hash });
        this.checked.set(r.line, r.hash);
      }
      else work.hash.push(r.line);
    }
    return work;
  }

  async setPasswords(results: { line: number; hash: string | null }[]): Promise<void> {
    if (results.length === 0) return;
    await this.client.query(
      `UPDATE ${this.rows} s SET pw_hash = v.hash, pw_same = v.hash IS NULL, pw_checked = v.checked
         FROM unnest($1::integer[], $2::text[], $3::text[]) AS v(line, hash, checked) WHERE s.line = v.line`,
      [results.map((r) => r.line), results.map((r) => r.hash), results.map((r) => (r.hash === null ? (this.checked.get(r.line) ?? null) : null))],
    );
  }

  private counts(created: number, byAction: { action: string; n: number }[], missing: number): ImportCounts {
    const n = (a: string) => Number(byAction.find((r) => r.action === a)?.n ?? 0);
    const changed = byAction.reduce((t, r) => t + Number(r.n), 0);
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

  async preview(options: ApplyOptions): Promise<ImportCounts> {
    const params = this.params(options);
    const [c] = await this.query<{ n: number }>(`SELECT count(*) AS n FROM ${this.rows} s WHERE NOT EXISTS (SELECT 1 FROM users u WHERE u.tenant = :tenant AND u.external_id = s.key)`, params);
    const byAction = await this.query<{ action: string; n: number }>(`SELECT action, count(*) AS n FROM (${changedRowsSql(this.rows, this.staged, true)}) x GROUP BY action`, params);
    const hold = await this.countHold(options);
    return this.counts(Number(c.n), byAction, hold?.missing ?? 0);
  }

  async apply(req: ApplyRequest): Promise<ApplyResult> {
    const { tenant, kind } = this.spec;
    const q = this.client;
    await q.query('BEGIN');
    try {
      const result = await this.applyIn(req, tenant, kind);
      await q.query(result.status === 'held' || result.status === 'applied before' ? 'ROLLBACK' : 'COMMIT');
      return result;
    } catch (err) {
      await q.query('ROLLBACK').catch(() => {});
      throw err;
    }
  }

  private async applyIn(req: ApplyRequest, tenant: string, kind: string): Promise<ApplyResult> {
    const q = this.client;
    const before = (
      await q.query(
        `SELECT * FROM imports WHERE tenant = $1 AND epoch = $2 AND file = $3 AND content_sha1 = $4 AND status IN ('applied', 'applied with errors') ORDER BY id DESC LIMIT 1`,
        [tenant, req.epoch, req.file, req.contentSha1],
      )
    ).rows[0] as Record<string, unknown> | undefined;
    if (before) return { status: 'applied before', import: importRow(before) };
    const hold = await this.countHold(req.options);
    if (hold?.exceeds && !req.releaseHold) return { status: 'held', hold, counts: { ...emptyCounts(), rows: this.valid + this.failed, failed: this.failed, deactivated: hold.missing } };

    const status = this.failed > 0 ? 'applied with errors' : 'applied';
    const importId = await insertImport(q, {
      runId: req.runId, tenant, epoch: req.epoch, file: req.file, kind, status, message: null, contentSha1: req.contentSha1, counts: emptyCounts(),
      actor: req.options.actor, startedAt: req.startedAt, header: req.header, heldImportId: req.heldImportId ?? null, createdFields: createdFields(this.spec.present),
    });
    const params = this.params(req.options, { import_id: importId, actor: req.options.actor });
    // As in the SQLite store: one pass over the directory finds the users that change and the
    // rows that are new; into an empty directory every row is new and the pass is skipped.
    const changed = `stage_changed_${importId}`;
    const hasUsers = (await q.query('SELECT 1 FROM users WHERE tenant = $1 LIMIT 1', [tenant])).rowCount !== 0;
    let byAction: { action: string; n: number }[] = [];
    if (hasUsers) {
      await this.query(`CREATE TEMP TABLE ${changed} AS ${changedRowsSql(this.rows, this.staged, false, true)}`, params);
      byAction = (await q.query(`SELECT action, count(*) AS n FROM ${changed} WHERE action <> 'create' GROUP BY action`)).rows as { action: string; n: number }[];
      await this.query(
        `INSERT INTO user_changes (import_id, tenant, external_id, action, fields, old_values, actor, changed_at, old_password_hash, old_password_digest)
         SELECT :import_id, :tenant, key, action, fields, old_values, :actor, now(), old_password_hash, old_password_digest FROM ${changed}
          WHERE action <> 'create' ORDER BY line`,
        params,
      );
      // The vendor's platform may write password_hash (and NULL the digest) at any time, this
      // transaction included: the changed rows were read before, so the password columns are
      // written only where the file sets a new password, and otherwise left as they are now
      // (a hash the platform wrote meanwhile is kept). With overwritePassword false a file only
      // sets a password where there is none, so not over one the platform wrote meanwhile either.
      await this.query(
        `UPDATE users SET kind = c.n_kind, email = c.n_email, username = c.n_username, first_name = c.n_first_name, last_name = c.n_last_name,
                role = c.n_role, site_id = c.n_site_id, site_label = c.n_site_label,
                password_hash = CASE WHEN ${SETS_PASSWORD} THEN c.n_password_hash ELSE users.password_hash END,
                password_digest = CASE WHEN ${SETS_PASSWORD} THEN c.n_password_digest ELSE users.password_digest END,
                active = c.n_active, archived_at = c.n_archived_at, attributes = c.n_attributes,
                updated_at = now(), updated_by = :actor, last_import_id = :import_id
           FROM ${changed} c WHERE c.action <> 'create' AND users.tenant = :tenant AND users.external_id = c.key`,
        params,
      );
      if (this.staged.has('pw_digest')) {
        // A password checked once and found unchanged only gets its digest, and only while the
        // hash is still the one it was checked against (else the digest would vouch for a
        // password the platform has changed since).
        await q.query(
          `UPDATE users SET password_digest = NULLIF(s.pw_digest, '${NO_DIGEST}') FROM ${this.rows} s
            WHERE users.tenant = $1 AND users.external_id = s.key AND s.pw_same AND users.password_hash IS NOT DISTINCT FROM s.pw_checked
              AND users.password_digest IS DISTINCT FROM NULLIF(s.pw_digest, '${NO_DIGEST}')`,
          [tenant],
        );
      }
    }
    const { text, values } = bind(createUsersSql(this.rows, this.staged, hasUsers ? changed : null), params);
    const created = (await q.query(text, values)).rowCount ?? 0;
    let missing = 0;
    if (req.options.fullSync) {
      await this.query(
        `INSERT INTO user_changes (import_id, tenant, external_id, action, fields, old_values, actor, changed_at)
         SELECT :import_id, u.tenant, u.external_id, 'deactivate', '["active"]', '{"active":true}', :actor, now() FROM users u WHERE ${missingUsersWhere(this.rows, this.failedKeys)}`,
        params,
      );
      const u = bind(`UPDATE users u SET active = false, updated_at = now(), updated_by = :actor, last_import_id = :import_id WHERE ${missingUsersWhere(this.rows, this.failedKeys)}`, params);
      missing = (await q.query(u.text, u.values)).rowCount ?? 0;
    }
    await q.query(`INSERT INTO import_errors (import_id, line, "column", value, reason, raw) SELECT $1, line, "column", value, reason, raw FROM ${this.errors} ORDER BY line, seq`, [importId]);
    if (req.content) {
      await q.query(
        `INSERT INTO content_hashes (tenant, path, sha1, import_id, seen_at) VALUES ($1, $2, $3, $4, now())
         ON CONFLICT (tenant, path, sha1) DO UPDATE SET import_id = excluded.import_id, seen_at = excluded.seen_at`,
        [tenant, req.content.path, req.content.sha1, importId],
      );
    }
    const counts = this.counts(created, byAction, missing);
    await q.query('UPDATE imports SET rows = $2, created = $3, updated = $4, unchanged = $5, deactivated = $6, archived = $7, failed = $8, finished_at = now() WHERE id = $1', [
      importId, counts.rows, counts.created, counts.updated, counts.unchanged, counts.deactivated, counts.archived, counts.failed,
    ]);
    await q.query(`DROP TABLE IF EXISTS ${changed}`);
    return { status, importId, counts };
  }

  async *errorRows(): AsyncIterable<ErrorRow[]> {
    for (let after = -1; ; ) {
      const { rows } = await this.client.query(
        `SELECT line, "column", value, reason, raw FROM ${this.errors}
          WHERE line IN (SELECT DISTINCT line FROM ${this.errors} WHERE line > $1 ORDER BY line LIMIT 2000) ORDER BY line, seq`,
        [after],
      );
      if (rows.length === 0) return;
      const out: ErrorRow[] = [];
      for (const r of rows as { line: number; column: string | null; value: string | null; reason: string; raw: string[] | null }[]) {
        const problem = { column: r.column ?? '', value: r.value ?? '', reason: r.reason };
        const last = out[out.length - 1];
        if (last && last.line === r.line) last.problems.push(problem);
        else out.push({ line: r.line, raw: r.raw ?? [], problems: [problem] });
      }
      after = out[out.length - 1].line;
      yield out;
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    // A COPY that fails to end leaves the session unusable: it is closed, not pooled again.
    let broken: Error | undefined;
    try {
      await this.endCopy().catch((err: Error) => (broken = err));
      if (!broken) await this.client.query(`DROP TABLE IF EXISTS ${this.rows}, ${this.failedKeys}, ${this.errors}`);
    } finally {
      this.client.release(broken);
    }
  }
}
