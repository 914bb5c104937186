// "Why did this student's e-mail change?": every change to one user, oldest first, with the
// upload and file it came from, who made it, and each field from what to what. Only old values
// are stored (never secrets); each change's new value is the next change's old value, or, for
// the last one, the value now. Shared by `users --history` and the console.
import type { Store, UserChangeRow } from '../store/types.js';

export interface FieldChange {
  field: string;
  /** Values as stored; a password is never shown, only that it changed. */
  from: unknown;
  to: unknown;
}

export interface UserChange {
  id: number;
  changedAt: string;
  action: UserChangeRow['action'];
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

export async function userHistory(store: Store, tenant: string, externalId: string): Promise<{ externalId: string; changes: UserChange[] }> {
  const id = await store.directory.resolveId(tenant, externalId);
  const rows = await store.directory.changes(tenant, id);
  const current = (await store.directory.user(tenant, id))?.raw;
  const changes = rows.map((r, i): UserChange => ({
    id: r.id,
    changedAt: r.changedAt,
    action: r.action,
    actor: r.actor,
    importId: r.importId,
    epoch: r.epoch,
    file: r.file,
    fields: r.fields,
    changes: r.fields.map((field) => {
      if (SECRET_FIELDS.has(field)) return { field, from: r.action === 'create' ? null : HIDDEN, to: HIDDEN };
      const column = COLUMN_OF[field] ?? field;
      const from = r.action === 'create' ? null : (r.oldValues[column] ?? null);
      const later = rows.slice(i + 1).find((n) => n.fields.includes(field));
      const to = later ? (later.oldValues[column] ?? null) : (current?.[column] ?? null);
      return { field, from: readable(column, from), to: readable(column, to) };
    }),
  }));
  return { externalId: id, changes };
}

function readable(column: string, value: unknown): unknown {
  if (value === null || value === undefined) return null;
  if (column === 'attributes' && typeof value === 'string') return JSON.parse(value) as unknown;
  if (column === 'attributes' && typeof value === 'object') return value;
  if (column === 'active') return value === 1 || value === true || value === '1';
  if (value instanceof Date) return value.toISOString();
  return value;
}
