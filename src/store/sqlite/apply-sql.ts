// The SQL that decides, for every staged row whose user exists, what the user becomes under the
// tenant's options, whether anything changed, and how to record it. One statement over the
// whole file (set-based), so a nightly re-sync of a million unchanged users is one join that
// writes nothing, rather than a million comparisons in JavaScript.
//
// `rows` is the staged rows: a part file's table, or the sorted copy of every part (sorted-copy.ts).
// Named parameters: @tenant @kind @now @suffix (`_<year>`) and the 0/1 flags @overwrite_email,
// @overwrite_password, @archive. A column the file does not carry is not staged at all: `col`
// gives the staged column's SQL, or NULL for a column the file lacks.
import { NO_DIGEST } from '../types.js';
import { PLAIN, TRACKED, type StagedColumns } from '../tracked.js';

export type { StagedColumns };

/** `x` without a trailing `_<4 digits>` (the suffix archiving adds). */
const stripYear = (x: string) => `CASE WHEN ${x} GLOB '*_[0-9][0-9][0-9][0-9]' THEN substr(${x}, 1, length(${x}) - 5) ELSE ${x} END`;

const col = (c: StagedColumns, name: string) => (c.has(name) ? `s.${name}` : 'NULL');

/**
 * SELECT of the staged rows whose user exists and would change: key, line, n_* (new values),
 * o_* (stored values), action, fields (JSON array), old_values (JSON object, secrets left out).
 * `preview`: passwords are compared by digest (nothing is hashed in a dry run).
 * `withNew`: the rows whose user does not exist come too, as action 'create' (the same pass
 * over the directory then tells the apply which rows to insert: a re-sync of a million users
 * probes the directory once, not twice).
 */
export function changedRowsSql(rows: string, c: StagedColumns, preview: boolean, withNew = false, shortcut = true): string {
  const newPassword = !c.has('pw_digest')
    ? 'u.password_hash'
    : preview
      ? `CASE WHEN s.pw_digest IS NOT NULL AND (u.password_hash IS NULL OR @overwrite_password) AND s.pw_digest IS NOT u.password_digest THEN '(new)' ELSE u.password_hash END`
      : `coalesce(s.pw_hash, u.password_hash)`;
  const differs = TRACKED.map(([col]) => `n_${col} IS NOT o_${col}`).join(' OR ');
  // `shortcut` false: the full comparison alone (a test checks that both select the same rows).
  const unchanged = shortcut ? surelyUnchanged(c, preview) : 'false';
  const fields = TRACKED.map(([col, name]) => `CASE WHEN n_${col} IS NOT o_${col} THEN '"${name}",' ELSE '' END`).join(' || ');
  const old = TRACKED.filter(([, , secret]) => !secret)
    .map(([col]) => `CASE WHEN n_${col} IS NOT o_${col} THEN '$.${col}' ELSE '$.__' END, o_${col}`)
    .join(', ');
  return `
    WITH b AS (
      SELECT s.key, s.line, s.active AS n_active, s.pw_hash, s.pw_same, ${col(c, 'pw_digest')} AS pw_digest, ${col(c, 'attrs')} AS s_attrs,
             ${col(c, 'email')} AS s_email, ${col(c, 'username')} AS s_username,
             ${PLAIN.map((p) => (c.has(p) ? `s.${p}` : `u.${p}`) + ` AS n_${p}`).join(',\n             ')},
             u.kind AS o_kind, u.email AS o_email, u.username AS o_username, u.first_name AS o_first_name, u.last_name AS o_last_name,
             u.role AS o_role, u.site_id AS o_site_id, u.site_label AS o_site_label, u.password_hash AS o_password_hash,
             u.password_digest AS o_password_digest, u.active AS o_active, u.archived_at AS o_archived_at, u.attributes AS o_attributes,
             u.external_id AS o_key,
             ${newPassword} AS n_password_hash,
             CASE WHEN u.archived_at IS NOT NULL THEN ${stripYear('u.email')} ELSE u.email END AS b_email,
             CASE WHEN u.archived_at IS NOT NULL THEN ${stripYear('u.username')} ELSE u.username END AS b_username
        FROM ${rows} s ${withNew ? 'LEFT JOIN' : 'JOIN'} users u ON u.tenant = @tenant AND u.external_id = s.key
    ),
    x AS (
      SELECT b.*, @kind AS n_kind,
             ${c.has('email') ? 'CASE WHEN @overwrite_email OR b_email IS NULL THEN s_email ELSE b_email END' : 'b_email'} AS x_email,
             ${c.has('username') ? 's_username' : 'b_username'} AS x_username,
             ${c.has('attrs') ? 'CASE WHEN s_attrs IS NULL THEN o_attributes ELSE json_patch(o_attributes, s_attrs) END' : 'o_attributes'} AS n_attributes,
             (NOT n_active AND @archive) AS archiving
        FROM b
    ),
    d AS (
      SELECT x.*,
             CASE WHEN archiving THEN (CASE WHEN o_archived_at IS NOT NULL THEN o_email ELSE x_email || @suffix END) ELSE x_email END AS n_email,
             CASE WHEN archiving THEN (CASE WHEN o_archived_at IS NOT NULL THEN o_username ELSE x_username || @suffix END) ELSE x_username END AS n_username,
             CASE WHEN archiving THEN coalesce(o_archived_at, @now) END AS n_archived_at,
             CASE WHEN pw_hash IS NOT NULL OR pw_same THEN NULLIF(pw_digest, '${NO_DIGEST}') ELSE o_password_digest END AS n_password_digest
        FROM x
    )
    SELECT key, line,
           n_kind, n_email, n_username, n_first_name, n_last_name, n_role, n_site_id, n_site_label, n_password_hash, n_password_digest,
           n_active, n_archived_at, n_attributes,
           CASE WHEN o_key IS NULL THEN 'create'
                WHEN n_archived_at IS NOT NULL AND o_archived_at IS NULL THEN 'archive'
                WHEN NOT n_active AND o_active THEN 'deactivate'
                WHEN (o_archived_at IS NOT NULL AND n_archived_at IS NULL) OR (NOT o_active AND n_active) THEN 'restore'
                ELSE 'update' END AS action,
           '[' || rtrim(${fields}, ',') || ']' AS fields,
           json_remove(json_set('{}', ${old}), '$.__') AS old_values,
           CASE WHEN n_password_hash IS NOT o_password_hash THEN o_password_hash END AS old_password_hash,
           CASE WHEN n_password_hash IS NOT o_password_hash THEN o_password_digest END AS old_password_digest
      FROM d
     WHERE ${withNew ? 'o_key IS NULL OR ' : ''}(NOT (${unchanged}) AND (${differs}))`;
}

/**
 * A condition on the stored and staged values as they are that implies that no tracked field
 * differs (it may be false for some unchanged rows: those take the full comparison). It reads
 * columns only, where the full comparison works out every new value through the options (about
 * 0.4 s of a re-sync of 1,000,000 users, most of whom did not change): the user is of this kind,
 * neither archived nor being archived, and every value the file carries is the stored one, with
 * no new password hash and no attributes to merge. Then the options cannot make a difference:
 * a kept and an overwritten e-mail are the same e-mail.
 */
function surelyUnchanged(c: StagedColumns, preview: boolean): string {
  const same = (staged: string, stored: string) => `${staged} IS ${stored}`;
  const terms = ['o_kind = @kind', 'o_archived_at IS NULL', 'n_active = o_active', '(n_active OR NOT @archive)'];
  if (c.has('email')) terms.push(same('s_email', 'o_email'));
  if (c.has('username')) terms.push(same('s_username', 'o_username'));
  for (const p of PLAIN) if (c.has(p)) terms.push(same(`n_${p}`, `o_${p}`));
  if (c.has('pw_digest')) terms.push(preview ? 'pw_digest IS NULL' : 'pw_hash IS NULL');
  if (c.has('attrs')) terms.push('s_attrs IS NULL');
  return terms.join(' AND ');
}

/**
 * New users straight from the staging table (most of a first import). `newLines`: a table of
 * the changes whose action is 'create' (see changedRowsSql), when the directory already had
 * users; otherwise every staged row is new but for a conflict.
 */
export function createUsersSql(rows: string, c: StagedColumns, newLines: string | null): string {
  const archived = `(@archive AND NOT s.active)`;
  const v = (name: string) => col(c, name);
  return `
    INSERT INTO users (tenant, external_id, kind, email, username, first_name, last_name, role, site_id, site_label,
                       password_hash, password_digest, active, archived_at, attributes, created_at, updated_at, updated_by,
                       last_import_id, created_import_id)
    SELECT @tenant, s.key, @kind,
           ${c.has('email') ? `CASE WHEN ${archived} THEN s.email || @suffix ELSE s.email END` : 'NULL'},
           ${c.has('username') ? `CASE WHEN ${archived} THEN s.username || @suffix ELSE s.username END` : 'NULL'},
           ${v('first_name')}, ${v('last_name')}, ${v('role')}, ${v('site_id')}, ${v('site_label')},
           s.pw_hash, ${c.has('pw_digest') ? `CASE WHEN s.pw_hash IS NOT NULL THEN NULLIF(s.pw_digest, '${NO_DIGEST}') END` : 'NULL'}, s.active,
           CASE WHEN ${archived} THEN @now END,
           ${c.has('attrs') ? `CASE WHEN s.attrs IS NULL THEN '{}' ELSE json_patch('{}', s.attrs) END` : `'{}'`},
           @now, @now, @actor, @import_id, @import_id
      FROM ${rows} s
     WHERE ${newLines ? `s.line IN (SELECT line FROM ${newLines} WHERE action = 'create')` : 'true'}
    -- Into an empty directory, a conflict is met where the insert finds its place anyway: a
    -- NOT EXISTS probe before each insert cost as much again as the insert itself.
    ON CONFLICT (tenant, external_id) DO NOTHING`;
}

/**
 * Users of the tenant and kind, active, that the file does not carry (not even in a failing row).
 * A file staged in several parts: `parts` names each part's schema (its rows and failed_keys).
 */
export const missingUsersWhere = (parts: string[]) =>
  `u.tenant = @tenant AND u.kind = @kind AND u.active = 1
   ${parts.map((p) => `AND NOT EXISTS (SELECT 1 FROM ${p}.rows k WHERE k.key = u.external_id)
   AND NOT EXISTS (SELECT 1 FROM ${p}.failed_keys f WHERE f.key = u.external_id)`).join('\n   ')}`;
