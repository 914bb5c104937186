// PostgreSQL: the console's views of many tenants at once. A page of tenants costs two queries,
// not a dozen per tenant: the list stays quick with ten thousand tenants configured.
import type { OverviewStore, TenantOverview } from '../types.js';
import { runRow } from '../rows.js';
import type { PgConnection } from './connection.js';

// Held: as ImportStore.held (not released, discarded or held again since; a release or discard is
// a later import of the same upload and file). Stale: as UploadStore.stale. Each a count per tenant.
const TENANTS_SQL = `
  SELECT t.id AS of_tenant, r.*,
         (SELECT count(*) FROM imports h
           WHERE h.tenant = t.id AND h.status = 'held'
             AND NOT EXISTS (SELECT 1 FROM imports x WHERE x.tenant = h.tenant AND x.epoch = h.epoch AND x.held_import_id = h.id)
             AND NOT EXISTS (SELECT 1 FROM imports l WHERE l.tenant = h.tenant AND l.epoch = h.epoch AND l.file = h.file AND l.id > h.id)) AS held_count,
         (SELECT count(*) FROM stale_uploads s
           WHERE s.tenant = t.id AND s.resolved_at IS NULL
             AND NOT EXISTS (SELECT 1 FROM imports i WHERE i.tenant = s.tenant AND i.epoch = s.epoch)) AS stale_count
    FROM unnest($1::text[]) AS t(id)
    LEFT JOIN LATERAL (SELECT * FROM runs WHERE runs.tenant = t.id ORDER BY runs.id DESC LIMIT 1) r ON true`;

const MAIL_SQL = `
  SELECT tenant, count(*) FILTER (WHERE status = 'queued') AS queued, count(*) FILTER (WHERE status = 'failed') AS failed FROM mail_queue
   WHERE status IN ('queued', 'failed') AND tenant = ANY($1::text[]) GROUP BY tenant`;

export class PgOverview implements OverviewStore {
  constructor(private readonly c: PgConnection) {}

  async tenants(tenants: string[]): Promise<Map<string, TenantOverview>> {
    if (tenants.length === 0) return new Map();
    const [rows, mailRows] = await Promise.all([this.c.query(TENANTS_SQL, [tenants]), this.c.query(MAIL_SQL, [tenants])]);
    const mail = new Map(mailRows.map((r) => [String(r.tenant), r]));
    const out = new Map<string, TenantOverview>();
    for (const r of rows) {
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
  }
}
