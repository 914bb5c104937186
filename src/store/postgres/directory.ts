// PostgreSQL: reading the user directory and its history, and undoing an import.
import type { DirectoryStore, DirectoryUser, ImportCounts, RevertRequest, RevertResult, Stage, StageSpec, UserChangeRow } from '../types.js';
import { emptyCounts } from '../types.js';
import { changeRow, userRow } from '../rows.js';
import type { PgConnection } from './connection.js';
import { insertImport, insertOutcome } from './records.js';
import { PgStage } from './stage.js';

type Row = Record<string, unknown>;
const RESTORABLE = new Set(['kind', 'email', 'username', 'first_name', 'last_name', 'role', 'site_id', 'site_label', 'active', 'archived_at', 'attributes']);

/** A value from user_changes.old_values (jsonb) back into its column's type. */
function restored(column: string, v: unknown): unknown {
  if (v === null || v === undefined) return null;
  if (column === 'active') return v === true || v === 1 || v === '1';
  if (column === 'attributes') return JSON.stringify(typeof v === 'string' ? JSON.parse(v) : v);
  return v;
}

export class PgDirectory implements DirectoryStore {
  constructor(private readonly c: PgConnection) {}

  async openStage(spec: StageSpec): Promise<Stage> {
    const client = await this.c.hold();
    try {
      return await PgStage.open(client, spec);
    } catch (err) {
      client.release();
      throw err;
    }
  }

  async users(tenant: string, opts: { search?: string; limit?: number; offset?: number } = {}): Promise<DirectoryUser[]> {
    const limit = opts.limit ?? null;
    const offset = opts.offset ?? 0;
    if (!opts.search) return (await this.c.query('SELECT * FROM users WHERE tenant = $1 ORDER BY external_id LIMIT $2 OFFSET $3', [tenant, limit, offset])).map(userRow);
    const like = `%${opts.search.replace(/[\\%_]/g, (m) => `\\${m}`)}%`;
    return (
      await this.c.query(
        `SELECT * FROM users WHERE tenant = $1
           AND (external_id ILIKE $2 OR email ILIKE $2 OR username ILIKE $2 OR (coalesce(first_name, '') || ' ' || coalesce(last_name, '')) ILIKE $2)
         ORDER BY external_id LIMIT $3 OFFSET $4`,
        [tenant, like, limit, offset],
      )
    ).map(userRow);
  }

  async missingFrom(tenant: string, kind: string, keys: string[], limit: number) {
    const active = await this.c.one<{ n: string }>('SELECT count(*) AS n FROM users WHERE tenant = $1 AND kind = $2 AND active', [tenant, kind]);
    // An anti-join on the unnested keys (hashed once), not `<> ALL`, which compares every pair.
    const rows = await this.c.query(
      `SELECT u.*, count(*) OVER () AS missing_total FROM users u
        WHERE u.tenant = $1 AND u.kind = $2 AND u.active AND NOT EXISTS (SELECT 1 FROM unnest($3::text[]) AS k(key) WHERE k.key = u.external_id)
        ORDER BY u.external_id LIMIT $4`,
      [tenant, kind, keys, limit],
    );
    return { total: rows.length ? Number(rows[0].missing_total) : 0, active: Number(active?.n ?? 0), sample: rows.map(userRow) };
  }

  async user(tenant: string, externalId: string) {
    const r = await this.c.one('SELECT * FROM users WHERE tenant = $1 AND external_id = $2', [tenant, externalId]);
    return r ? { ...userRow(r), raw: r } : null;
  }

  async resolveId(tenant: string, externalId: string): Promise<string> {
    const exact = await this.c.one(
      'SELECT 1 FROM users WHERE tenant = $1 AND external_id = $2 UNION ALL SELECT 1 FROM user_changes WHERE tenant = $1 AND external_id = $2 LIMIT 1',
      [tenant, externalId],
    );
    if (exact) return externalId;
    const ids = await this.c.query<{ external_id: string }>('SELECT external_id FROM users WHERE tenant = $1 AND lower(external_id) = lower($2) LIMIT 2', [tenant, externalId]);
    return ids.length === 1 ? ids[0].external_id : externalId;
  }

  async changes(tenant: string, externalId: string): Promise<UserChangeRow[]> {
    const rows = (
      await this.c.query(
        `SELECT c.id, c.import_id, c.action, c.fields, c.old_values, c.actor, c.changed_at, i.epoch, i.file
           FROM user_changes c LEFT JOIN imports i ON i.id = c.import_id
          WHERE c.tenant = $1 AND c.external_id = $2 ORDER BY c.id`,
        [tenant, externalId],
      )
    ).map(changeRow);
    const created = await this.c.one(
      `SELECT 0 AS id, u.created_import_id AS import_id, 'create' AS action, i.created_fields AS fields, '{}'::jsonb AS old_values,
              i.actor, u.created_at AS changed_at, i.epoch, i.file
         FROM users u JOIN imports i ON i.id = u.created_import_id WHERE u.tenant = $1 AND u.external_id = $2`,
      [tenant, externalId],
    );
    return created ? [changeRow(created), ...rows] : rows;
  }

  revert(req: RevertRequest): Promise<RevertResult> {
    const { tenant, importId, actor } = req;
    return this.c.tx(async (q): Promise<RevertResult> => {
      // Locked: two undos of one import at once (two daemons, a double click) apply once; the second then sees the first.
      const target = (await q.query('SELECT * FROM imports WHERE id = $1 AND tenant = $2 FOR UPDATE', [importId, tenant])).rows[0] as Row | undefined;
      if (!target) return { ok: false, reason: `import ${importId} is not an import of ${tenant}` };
      if (target.status !== 'applied' && target.status !== 'applied with errors') {
        return { ok: false, reason: `import ${importId} was ${String(target.status)}: it changed no user, so there is nothing to undo` };
      }
      const undone = (await q.query(`SELECT id FROM imports WHERE reverts_import_id = $1 AND status = 'applied'`, [importId])).rows[0] as Row | undefined;
      if (undone) return { ok: false, reason: `import ${importId} was already undone by import ${String(undone.id)}` };
      const later = (
        await q.query(
          `SELECT external_id, min(import_id) AS import_id FROM user_changes
            WHERE tenant = $1 AND import_id > $2 AND external_id IN (SELECT external_id FROM user_changes WHERE import_id = $2
                                                                    UNION SELECT external_id FROM users WHERE tenant = $1 AND created_import_id = $2)
            GROUP BY external_id ORDER BY external_id LIMIT 20`,
          [tenant, importId],
        )
      ).rows as { external_id: string; import_id: number }[];
      if (later.length && !req.force) {
        return {
          ok: false,
          reason: `later imports changed ${later.length === 20 ? 'at least 20' : later.length} of the same users (first: ${later[0].external_id} in import ${later[0].import_id}); undoing ${importId} would overwrite those changes. Pass --force to undo it anyway.`,
          conflicts: later.map((l) => ({ externalId: l.external_id, importId: Number(l.import_id) })),
        };
      }
      const counts: ImportCounts = emptyCounts();
      const revertId = await insertImport(q, {
        runId: req.runId, tenant, epoch: String(target.epoch), file: String(target.file), kind: (target.kind as string | null) ?? null,
        status: 'applied', message: `undo of import ${importId}`, contentSha1: null, counts, actor, startedAt: new Date().toISOString(), header: null,
      });
      await q.query('UPDATE imports SET reverts_import_id = $2 WHERE id = $1', [revertId, importId]);
      const changes = (await q.query('SELECT * FROM user_changes WHERE import_id = $1 ORDER BY id', [importId])).rows as Row[];
      for (const ch of changes) {
        const id = String(ch.external_id);
        const current = (await q.query('SELECT * FROM users WHERE tenant = $1 AND external_id = $2', [tenant, id])).rows[0] as Row | undefined;
        if (!current) continue;
        const fields = ch.fields as string[];
        const old = ch.old_values as Record<string, unknown>;
        const sets: string[] = [];
        const values: unknown[] = [];
        const before: Record<string, unknown> = {};
        for (const field of fields) {
          if (field === 'password') {
            values.push(ch.old_password_hash ?? null, ch.old_password_digest ?? null);
            sets.push(`password_hash = $${values.length - 1}`, `password_digest = $${values.length}`);
            continue;
          }
          if (!RESTORABLE.has(field)) continue;
          values.push(restored(field, old[field]));
          sets.push(`${field} = $${values.length}${field === 'attributes' ? '::jsonb' : ''}`);
          before[field] = current[field];
        }
        if (sets.length === 0) continue;
        values.push(actor, revertId, tenant, id);
        const n = values.length;
        await q.query(`UPDATE users SET ${sets.join(', ')}, updated_at = now(), updated_by = $${n - 3}, last_import_id = $${n - 2} WHERE tenant = $${n - 1} AND external_id = $${n}`, values);
        await q.query(
          `INSERT INTO user_changes (import_id, tenant, external_id, action, fields, old_values, actor, changed_at, old_password_hash, old_password_digest)
           VALUES ($1, $2, $3, 'revert', $4, $5, $6, now(), $7, $8)`,
          [revertId, tenant, id, JSON.stringify(fields), JSON.stringify(before), actor, fields.includes('password') ? current.password_hash : null, fields.includes('password') ? current.password_digest : null],
        );
        counts.updated++;
      }
      const created = (await q.query('SELECT external_id FROM users WHERE tenant = $1 AND created_import_id = $2 AND active', [tenant, importId])).rows as Row[];
      for (const r of created) {
        await q.query('UPDATE users SET active = false, updated_at = now(), updated_by = $3, last_import_id = $4 WHERE tenant = $1 AND external_id = $2', [tenant, r.external_id, actor, revertId]);
        await q.query(
          `INSERT INTO user_changes (import_id, tenant, external_id, action, fields, old_values, actor, changed_at) VALUES ($1, $2, $3, 'revert', '["active"]', '{"active":true}', $4, now())`,
          [revertId, tenant, r.external_id, actor],
        );
        counts.deactivated++;
      }
      counts.rows = counts.updated + counts.deactivated;
      await q.query('UPDATE imports SET rows = $2, updated = $3, deactivated = $4 WHERE id = $1', [revertId, counts.rows, counts.updated, counts.deactivated]);
      if (req.outcome) await insertOutcome(q, req.outcome({ importId: revertId, counts }));
      return { ok: true, importId: revertId, counts };
    });
  }
}
