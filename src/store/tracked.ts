// What the set-based apply of either store compares and records: one list, so that SQLite and
// PostgreSQL keep the same history for the same file.

/** Tracked fields in history order: [users column, name in user_changes.fields, secret]. */
export const TRACKED: [string, string, boolean][] = [
  ['kind', 'kind', false],
  ['email', 'email', false],
  ['username', 'username', false],
  ['first_name', 'first_name', false],
  ['last_name', 'last_name', false],
  ['role', 'role', false],
  ['site_id', 'site_id', false],
  ['site_label', 'site_label', false],
  ['password_hash', 'password', true],
  ['active', 'active', false],
  ['archived_at', 'archived_at', false],
  ['attributes', 'attributes', false],
];

/** Fields a file either carries (and then sets) or leaves as they are. */
export const PLAIN = ['first_name', 'last_name', 'role', 'site_id', 'site_label'];

/** The staged columns of a file: has(name) is false for a column the file does not carry. */
export interface StagedColumns {
  has(name: string): boolean;
}
