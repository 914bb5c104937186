// `provisioner users --tenant ID`: the tenant's user directory as it stands; with
// `--history EXTERNAL_ID`, every change to one user, so support can answer "why did this
// student's e-mail change?" (which upload, which file, who, from what to what).
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

export interface FieldChange {
  field: string;
  /** Values as stored; a password is never shown, only that it changed. */
  from: unknown;
  to: unknown;
}

export interface UserChange {
  id: number;
  changedAt: string;
  action: 'create' | 'update' | 'deactivate' | 'archive' | 'restore';
  actor: string | null;
  importId: number | null;
  epoch: string | null;
  file: string | null;
  fields: string[];
  changes: FieldChange[];
}

/** user_changes field names -> users columns (they differ only for the password). */
const COLUMN_OF: Record<string, string> = { password: 'password_hash' };
const SECRET_FIELDS = new Set(['password']);
const HIDDEN = '(hidden)';

/**
 * The changes of one user, oldest first. Only old values are stored (and never secrets); each
 * change's new value is the next change's old value, or, for the last one, the value now.
 */
export function userHistory(db: Db, tenant: string, externalId: string): { externalId: string; changes: UserChange[] } {
  const id = resolveExternalId(db, tenant, externalId);
  const rows = db
    .prepare(
      `SELECT c.id, c.import_id, c.action, c.fields, c.old_values, c.actor, c.changed_at, i.epoch, i.file
         FROM user_changes c LEFT JOIN imports i ON i.id = c.import_id
        WHERE c.tenant = ? AND c.external_id = ? ORDER BY c.id`,
    )
    .all(tenant, id) as {
    id: number;
    import_id: number | null;
    action: UserChange['action'];
    fields: string;
    old_values: string;
    actor: string | null;
    changed_at: string;
    epoch: string | null;
    file: string | null;
  }[];
  const current = db.prepare('SELECT * FROM users WHERE tenant = ? AND external_id = ?').get(tenant, id) as Record<string, unknown> | undefined;
  const parsed = rows.map((r) => ({ ...r, fieldList: JSON.parse(r.fields) as string[], old: JSON.parse(r.old_values) as Record<string, unknown> }));
  const changes = parsed.map((r, i): UserChange => ({
    id: r.id,
    changedAt: r.changed_at,
    action: r.action,
    actor: r.actor,
    importId: r.import_id,
    epoch: r.epoch,
    file: r.file,
    fields: r.fieldList,
    changes: r.fieldList.map((field) => {
      if (SECRET_FIELDS.has(field)) return { field, from: r.action === 'create' ? null : HIDDEN, to: HIDDEN };
      const column = COLUMN_OF[field] ?? field;
      const from = r.action === 'create' ? null : (r.old[column] ?? null);
      const later = parsed.slice(i + 1).find((n) => n.fieldList.includes(field));
      const to = later ? (later.old[column] ?? null) : (current?.[column] ?? null);
      return { field, from: readable(column, from), to: readable(column, to) };
    }),
  }));
  return { externalId: id, changes };
}

/** Exact id first; otherwise a case-insensitive match when there is exactly one (e-mail keys). */
function resolveExternalId(db: Db, tenant: string, externalId: string): string {
  const exact = db.prepare('SELECT 1 FROM user_changes WHERE tenant = ? AND external_id = ? LIMIT 1').get(tenant, externalId);
  if (exact) return externalId;
  const ids = db
    .prepare('SELECT DISTINCT external_id FROM user_changes WHERE tenant = ? AND lower(external_id) = lower(?) LIMIT 2')
    .pluck()
    .all(tenant, externalId) as string[];
  return ids.length === 1 ? ids[0] : externalId;
}

function readable(column: string, value: unknown): unknown {
  if (value === null || value === undefined) return null;
  if (column === 'attributes' && typeof value === 'string') return JSON.parse(value) as unknown;
  if (column === 'active') return value === 1 || value === true;
  return value;
}

function historyText(tenant: { id: string; name: string }, externalId: string, changes: UserChange[]): string {
  if (changes.length === 0) return `${tenant.name}: no changes recorded for ${externalId} (check the id with \`provisioner users --tenant ${tenant.id}\`)\n`;
  const show = (v: unknown) => (v === null ? '(empty)' : typeof v === 'string' ? v : JSON.stringify(v));
  const out = [`${tenant.name}: history of ${externalId}, oldest first`];
  for (const c of changes) {
    const from = c.epoch ? ` from upload ${c.epoch}${c.file ? ` ${c.file}` : ''}` : '';
    out.push(`${c.changedAt.slice(0, 19).replace('T', ' ')}  ${c.action}${from} by ${c.actor ?? 'unknown'} (import ${c.importId ?? '-'})`);
    for (const f of c.changes) {
      out.push(c.action === 'create' ? `    ${f.field}: ${show(f.to)}` : `    ${f.field}: ${show(f.from)} -> ${show(f.to)}`);
    }
  }
  return out.join('\n') + '\n';
}

export function usersCommand(flags: { config?: string; tenant: string; json?: boolean; history?: string }): number {
  const app = openApp(flags.config);
  try {
    const [tenant] = selectTenants(app.config, [flags.tenant]);
    if (flags.history !== undefined) {
      const { externalId, changes } = userHistory(app.db, tenant.id, flags.history);
      process.stdout.write(flags.json ? JSON.stringify(changes, null, 2) + '\n' : historyText(tenant, externalId, changes));
      return 0;
    }
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
