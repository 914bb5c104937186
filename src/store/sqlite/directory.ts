// SQLite: reading the user directory and its history, and undoing an import.
import type { DirectoryStore, DirectoryUser, ImportCounts, RevertRequest, RevertResult, Stage, StageSpec, UserChangeRow } from '../types.js';
import { emptyCounts } from '../types.js';
import { changeRow, userRow } from '../rows.js';
import type { SqliteConnection } from './connection.js';
import { insertImport, SqliteOutbox } from './records.js';
import { SqliteStage } from './stage.js';

type Row = Record<string, unknown>;

/** Columns a change may name, as stored in users. */
const COLUMN_OF: Record<string, string> = { password: 'password_hash' };
const RESTORABLE = new Set(['kind', 'email', 'username', 'first_name', 'last_name', 'role', 'site_id', 'site_label', 'active', 'archived_at', 'attributes']);

export class SqliteDirectory implements DirectoryStore {
  /**
   * @param connectForStage a connection for one file's stage: its own for a database file (a
   *   file's parts are attached to it, and SQLite allows only ten attachments to one
   *   connection), null for an in-memory database (only this connection can see it)
   */
  constructor(
    private readonly c: SqliteConnection,
    private readonly connectForStage: (() => SqliteConnection) | null,
    /** Told how many users an apply wrote (see checkpointer.ts). */
    private readonly afterApply?: (written: number) => void,
  ) {}

  async openStage(spec: StageSpec): Promise<Stage> {
    return this.connectForStage ? new SqliteStage(this.connectForStage(), true, spec, this.afterApply) : new SqliteStage(this.c, false, spec);
  }

  users(tenant: string, opts: { search?: string; limit?: number; offset?: number } = {}): Promise<DirectoryUser[]> {
    return this.c.read(() => {
      const limit = opts.limit ?? -1;
      const offset = opts.offset ?? 0;
      if (!opts.search) return (this.c.stmt('SELECT * FROM users WHERE tenant = ? ORDER BY external_id LIMIT ? OFFSET ?').all(tenant, limit, offset) as Row[]).map(userRow);
      const like = `%${opts.search.replace(/[\\%_]/g, (m) => `\\${m}`)}%`;
      return (
        this.c
          .stmt(
            `SELECT * FROM users WHERE tenant = @tenant
               AND (external_id LIKE @like ESCAPE '\\' OR email LIKE @like ESCAPE '\\' OR username LIKE @like ESCAPE '\\'
                    OR (coalesce(first_name, '') || ' ' || coalesce(last_name, '')) LIKE @like ESCAPE '\\')
             ORDER BY external_id LIMIT @limit OFFSET @offset`,
          )
          .all({ tenant, like, limit, offset }) as Row[]
      ).map(userRow);
    });
  }

  missingFrom(tenant: string, kind: string, keys: string[], limit: number) {
    return this.c.read(() => {
      const active = this.c.stmt('SELECT count(*) FROM users WHERE tenant = ? AND kind = ? AND active = 1').pluck().get(tenant, kind) as number;
      // The keys arrive as one JSON array; NOT IN builds one temporary index of them.
      const rows = this.c
        .stmt(
          `SELECT *, count(*) OVER () AS missing_total FROM users
            WHERE tenant = ? AND kind = ? AND active = 1 AND external_id NOT IN (SELECT value FROM json_each(?))
            ORDER BY external_id LIMIT ?`,
        )
        .all(tenant, kind, JSON.stringify(keys), limit) as Row[];
      return { total: rows.length ? Number(rows[0].missing_total) : 0, active, sample: rows.map(userRow) };
    });
  }

  user(tenant: string, externalId: string) {
    return this.c.read(() => {
      const r = this.c.stmt('SELECT * FROM users WHERE tenant = ? AND external_id = ?').get(tenant, externalId) as Row | undefined;
      return r ? { ...userRow(r), raw: r } : null;
    });
  }

  resolveId(tenant: string, externalId: string): Promise<string> {
    return this.c.read(() => {
      const exact = this.c.stmt('SELECT 1 FROM users WHERE tenant = ? AND external_id = ?').get(tenant, externalId) || this.c.stmt('SELECT 1 FROM user_changes WHERE tenant = ? AND external_id = ? LIMIT 1').get(tenant, externalId);
      if (exact) return externalId;
      const ids = this.c.stmt('SELECT DISTINCT external_id FROM users WHERE tenant = ? AND lower(external_id) = lower(?) LIMIT 2').pluck().all(tenant, externalId) as string[];
      return ids.length === 1 ? ids[0] : externalId;
    });
  }

  changes(tenant: string, externalId: string): Promise<UserChangeRow[]> {
    return this.c.read(() => {
      const rows = (
        this.c
          .stmt(
            `SELECT c.id, c.import_id, c.action, c.fields, c.old_values, c.actor, c.changed_at, i.epoch, i.file
               FROM user_changes c LEFT JOIN imports i ON i.id = c.import_id
              WHERE c.tenant = ? AND c.external_id = ? ORDER BY c.id`,
          )
          .all(tenant, externalId) as Row[]
      ).map(changeRow);
      // Creates are recorded once per import (created_import_id), not once per user.
      const created = this.c
        .stmt(
          `SELECT 0 AS id, u.created_import_id AS import_id, 'create' AS action, i.created_fields AS fields, '{}' AS old_values,
                  i.actor, u.created_at AS changed_at, i.epoch, i.file
             FROM users u JOIN imports i ON i.id = u.created_import_id WHERE u.tenant = ? AND u.external_id = ?`,
        )
        .get(tenant, externalId) as Row | undefined;
      return created ? [changeRow(created), ...rows] : rows;
    });
  }

  revert(req: RevertRequest): Promise<RevertResult> {
    const { tenant, importId, actor } = req;
    return this.c.write((): RevertResult => {
      const target = this.c.stmt('SELECT * FROM imports WHERE id = ? AND tenant = ?').get(importId, tenant) as Row | undefined;
      if (!target) return { ok: false, reason: `import ${importId} is not an import of ${tenant}` };
      if (target.status !== 'applied' && target.status !== 'applied with errors') {
        return { ok: false, reason: `import ${importId} was ${String(target.status)}: it changed no user, so there is nothing to undo` };
      }
      const undone = this.c.stmt(`SELECT id FROM imports WHERE reverts_import_id = ? AND status = 'applied'`).pluck().get(importId) as number | undefined;
      if (undone) return { ok: false, reason: `import ${importId} was already undone by import ${undone}` };
      const changes = this.c.stmt('SELECT * FROM user_changes WHERE import_id = ? ORDER BY id').all(importId) as Row[];
      const created = this.c.stmt('SELECT external_id FROM users WHERE tenant = ? AND created_import_id = ?').pluck().all(tenant, importId) as string[];
      const later = this.c
        .stmt(
          `SELECT external_id, min(import_id) AS import_id FROM user_changes
            WHERE tenant = ? AND import_id > ? AND external_id IN (SELECT external_id FROM user_changes WHERE import_id = ?
                                                                     UNION SELECT external_id FROM users WHERE tenant = ? AND created_import_id = ?)
            GROUP BY external_id ORDER BY external_id LIMIT 20`,
        )
        .all(tenant, importId, importId, tenant, importId) as { external_id: string; import_id: number }[];
      if (later.length && !req.force) {
        return {
          ok: false,
          reason: `later imports changed ${later.length === 20 ? 'at least 20' : later.length} of the same users (first: ${later[0].external_id} in import ${later[0].import_id}); undoing ${importId} would overwrite those changes. Pass --force to undo it anyway.`,
          conflicts: later.map((l) => ({ externalId: l.external_id, importId: l.import_id })),
        };
      }
      const now = new Date().toISOString();
      const counts: ImportCounts = emptyCounts();
      const revertId = insertImport(this.c, {
        runId: req.runId, tenant, epoch: String(target.epoch), file: String(target.file), kind: (target.kind as string | null) ?? null,
        status: 'applied', message: `undo of import ${importId}`, contentSha1: null, counts, actor, startedAt: now, header: null,
      });
      this.c.stmt('UPDATE imports SET reverts_import_id = ? WHERE id = ?').run(importId, revertId);
      const readUser = this.c.stmt('SELECT * FROM users WHERE tenant = ? AND external_id = ?');
      const record = this.c.stmt(
        `INSERT INTO user_changes (import_id, tenant, external_id, action, fields, old_values, actor, changed_at, old_password_hash, old_password_digest)
         VALUES (?, ?, ?, 'revert', ?, ?, ?, ?, ?, ?)`,
      );
      for (const ch of changes) {
        const id = String(ch.external_id);
        const current = readUser.get(tenant, id) as Row | undefined;
        if (!current) continue;
        const fields = JSON.parse(String(ch.fields)) as string[];
        const old = JSON.parse(String(ch.old_values)) as Record<string, unknown>;
        const sets: string[] = [];
        const values: unknown[] = [];
        const before: Record<string, unknown> = {};
        for (const field of fields) {
          const column = COLUMN_OF[field] ?? field;
          if (column === 'password_hash') {
            sets.push('password_hash = ?', 'password_digest = ?');
            values.push(ch.old_password_hash ?? null, ch.old_password_digest ?? null);
            continue;
          }
          if (!RESTORABLE.has(column)) continue;
          sets.push(`${column} = ?`);
          values.push(old[column] ?? null);
          before[column] = current[column];
        }
        if (sets.length === 0) continue;
        this.c.db.prepare(`UPDATE users SET ${sets.join(', ')}, updated_at = ?, updated_by = ?, last_import_id = ? WHERE tenant = ? AND external_id = ?`).run(...values, now, actor, revertId, tenant, id);
        record.run(revertId, tenant, id, JSON.stringify(fields), JSON.stringify(before), actor, now, fields.includes('password') ? current.password_hash : null, fields.includes('password') ? current.password_digest : null);
        counts.updated++;
      }
      // Users the import created did not exist before it: they are deactivated (never deleted).
      for (const id of created) {
        const current = readUser.get(tenant, id) as Row | undefined;
        if (!current || current.active === 0) continue;
        this.c.stmt('UPDATE users SET active = 0, updated_at = ?, updated_by = ?, last_import_id = ? WHERE tenant = ? AND external_id = ?').run(now, actor, revertId, tenant, id);
        record.run(revertId, tenant, id, '["active"]', JSON.stringify({ active: current.active }), actor, now, null, null);
        counts.deactivated++;
      }
      counts.rows = counts.updated + counts.deactivated;
      this.c.stmt('UPDATE imports SET rows = ?, updated = ?, deactivated = ? WHERE id = ?').run(counts.rows, counts.updated, counts.deactivated, revertId);
      if (req.outcome) new SqliteOutbox(this.c).insert(req.outcome({ importId: revertId, counts }));
      return { ok: true, importId: revertId, counts };
    });
  }
}
