// `provisioner users --tenant ID`: the tenant's user directory as it stands.
import Table from 'cli-table3';
import { openApp, selectTenants } from '../app.js';
import type { Db } from '../db/database.js';

export interface DirectoryUser {
  externalId: string;
  kind: string;
  email: string | null;
  username: string | null;
  firstName: string | null;
  lastName: string | null;
  role: string | null;
  siteId: string | null;
  siteLabel: string | null;
  active: boolean;
  archivedAt: string | null;
  hasPassword: boolean;
  attributes: Record<string, string>;
  createdAt: string;
  updatedAt: string;
  updatedBy: string | null;
}

export function listUsers(db: Db, tenant: string): DirectoryUser[] {
  const rows = db.prepare('SELECT * FROM users WHERE tenant = ? ORDER BY external_id').all(tenant) as Record<string, unknown>[];
  return rows.map((r) => ({
    externalId: String(r.external_id),
    kind: String(r.kind),
    email: r.email as string | null,
    username: r.username as string | null,
    firstName: r.first_name as string | null,
    lastName: r.last_name as string | null,
    role: r.role as string | null,
    siteId: r.site_id as string | null,
    siteLabel: r.site_label as string | null,
    active: r.active === 1,
    archivedAt: r.archived_at as string | null,
    hasPassword: r.password_hash !== null,
    attributes: JSON.parse(String(r.attributes)) as Record<string, string>,
    createdAt: String(r.created_at),
    updatedAt: String(r.updated_at),
    updatedBy: r.updated_by as string | null,
  }));
}

export function usersCommand(flags: { config?: string; tenant: string; json?: boolean }): number {
  const app = openApp(flags.config);
  try {
    const [tenant] = selectTenants(app.config, [flags.tenant]);
    const users = listUsers(app.db, tenant.id);
    if (flags.json) {
      process.stdout.write(JSON.stringify(users, null, 2) + '\n');
      return 0;
    }
    const table = new Table({ head: ['id', 'kind', 'name', 'email', 'username', 'site', 'active', 'updated'], style: { head: [], border: [] } });
    for (const u of users) {
      table.push([
        u.externalId,
        u.kind,
        [u.firstName, u.lastName].filter(Boolean).join(' '),
        u.email ?? '',
        u.username ?? '',
        u.siteLabel ?? u.siteId ?? '',
        u.archivedAt ? `archived ${u.archivedAt.slice(0, 10)}` : u.active ? 'yes' : 'no',
        u.updatedAt.slice(0, 19).replace('T', ' '),
      ]);
    }
    process.stdout.write(`${tenant.name}: ${users.length} user(s), ${users.filter((u) => u.active).length} active\n${table.toString()}\n`);
    return 0;
  } finally {
    app.close();
  }
}
