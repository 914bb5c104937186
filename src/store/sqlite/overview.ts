// SQLite: the console's views of many tenants at once. A page of tenants costs two queries, not a
// dozen per tenant: the list stays quick with ten thousand tenants configured.
import type { OverviewStore, TenantOverview } from '../types.js';
import { runRow } from '../rows.js';
import type { SqliteConnection } from './connection.js';

type Row = Record<string, unknown>;

// Held: as ImportStore.held (not released, discarded or held again since; a release or discard is
// a later import of the same upload and file). Stale: as UploadStore.stale. Each a count per tenant.
const TENANTS_SQL = `
  SELECT t.value AS of_tenant, r.*,
         (SELECT count(*) FROM imports h
           WHERE h.tenant = t.value AND h.status = 'held'
             AND NOT EXISTS (SELECT 1 FROM imports x WHERE x.tenant = h.tenant AND x.epoch = h.epoch AND x.held_import_id = h.id)
             AND NOT EXISTS (SELECT 1 FROM imports l WHERE l.tenant = h.tenant AND l.epoch = h.epoch AND l.file = h.file AND l.id > h.id)) AS held_count,
         (SELECT count(*) FROM stale_uploads s
           WHERE s.tenant = t.value AND s.resolved_at IS NULL
             AND NOT EXISTS (SELECT 1 FROM imports i WHERE i.tenant = s.tenant AND i.epoch = s.epoch)) AS stale_count
    FROM json_each(?) t
    LEFT JOIN runs r ON r.id = (SELECT max(id) FROM runs WHERE tenant = t.value)`;

const MAIL_SQL = `
  SELECT tenant, sum(status = 'queued') AS queued, sum(status = 'failed') AS failed FROM mail_queue
   WHERE status IN ('queued', 'failed') AND tenant IN (SELECT value FROM json_each(?)) GROUP BY tenant`;

export class SqliteOverview implements OverviewStore {
  constructor(private readonly c: SqliteConnection) {}

  tenants(tenants: string[]): Promise<Map<string, TenantOverview>> {
    if (tenants.length === 0) return Promise.resolve(new Map());
    return this.c.read(() => {
      const ids = JSON.stringify(tenants);
      const mail = new Map((this.c.stmt(MAIL_SQL).all(ids) as Row[]).map((r) => [String(r.tenant), r]));
      const out = new Map<string, TenantOverview>();
      for (const r of this.c.stmt(TENANTS_SQL).all(ids) as Row[]) {
        const id = String(r.of_tenant);
        const m = mail.get(id);
        out.set(id, {
          lastRun: r.id === null ? null : runRow(r),
          held: Number(r.held_count),
          stale: Number(r.stale_count),
          mailQueued: Number(m?.queued ?? 0),
          mailFailed: Number(m?.failed ?? 0),
        });
      }
      return out;
    });
  }
}
