// Applying a staged file to the user directory: one synchronous SQLite transaction that also
// writes the import record and its row errors, so a file is applied whole or not at all, and
// is never applied twice (imports_applied_once).
import type { ImportOptions } from '../config.js';
import type { Db } from '../db/database.js';
import type { StagedUser } from './rows.js';
import type { Stage } from './stage.js';

export interface ImportCounts {
  rows: number;
  created: number;
  updated: number;
  unchanged: number;
  deactivated: number;
  archived: number;
  failed: number;
}

export const emptyCounts = (): ImportCounts => ({ rows: 0, created: 0, updated: 0, unchanged: 0, deactivated: 0, archived: 0, failed: 0 });

export type ImportStatus = 'applied' | 'applied with errors' | 'rejected' | 'held' | 'failed';

export interface ImportRecord {
  runId: number | null;
  tenant: string;
  epoch: string;
  file: string;
  kind: string | null;
  status: ImportStatus;
  message: string | null;
  contentSha1: string | null;
  counts: ImportCounts;
  actor: string | null;
  startedAt: string;
}

export interface ApplyContext {
  tenant: string;
  kind: string;
  options: ImportOptions;
  /** Apply a full sync even over the deactivation limit. */
  force: boolean;
  /** Compute everything, then roll back. */
  dryRun: boolean;
  record: Omit<ImportRecord, 'status' | 'counts' | 'message'>;
  /** Runs inside the same transaction, after the import is recorded (e.g. queue the report). */
  inTransaction?: (importId: number, counts: ImportCounts, status: ImportStatus) => void;
}

export type ApplyOutcome =
  | { status: 'applied' | 'applied with errors'; importId: number | null; counts: ImportCounts }
  | { status: 'held'; importId: number | null; counts: ImportCounts; message: string };

interface UserRow {
  tenant: string;
  external_id: string;
  kind: string;
  email: string | null;
  username: string | null;
  first_name: string | null;
  last_name: string | null;
  role: string | null;
  site_id: string | null;
  site_label: string | null;
  password_hash: string | null;
  active: number;
  archived_at: string | null;
  attributes: string;
}

/** Fields compared to decide created / updated / unchanged; password_hash is never logged. */
const TRACKED = ['kind', 'email', 'username', 'first_name', 'last_name', 'role', 'site_id', 'site_label', 'password_hash', 'active', 'archived_at', 'attributes'] as const;
type Tracked = (typeof TRACKED)[number];
const SECRET: ReadonlySet<Tracked> = new Set(['password_hash']);

class Rollback extends Error {
  constructor(readonly outcome: ApplyOutcome) {
    super('rollback');
  }
}

const statementsByDb = new WeakMap<Db, ReturnType<typeof prepare>>();

function prepare(db: Db) {
  return {
    insertImport: db.prepare(`INSERT INTO imports (run_id, tenant, epoch, file, kind, status, message, content_sha1, rows, created, updated, unchanged, deactivated, archived, failed, actor, started_at, finished_at)
      VALUES (@runId, @tenant, @epoch, @file, @kind, @status, @message, @contentSha1, @rows, @created, @updated, @unchanged, @deactivated, @archived, @failed, @actor, @startedAt, @finishedAt)`),
    // Positional parameters: binding a fresh object of named fields per row cost a third of the time.
    updateUser: db.prepare(`UPDATE users SET kind = ?, email = ?, username = ?, first_name = ?, last_name = ?, role = ?,
      site_id = ?, site_label = ?, password_hash = ?, active = ?, archived_at = ?, attributes = ?,
      updated_at = ?, updated_by = ?, last_import_id = ? WHERE tenant = ? AND external_id = ?`),
    insertChange: db.prepare(`INSERT INTO user_changes (import_id, tenant, external_id, action, fields, old_values, actor, changed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`),
    insertError: db.prepare('INSERT INTO import_errors (import_id, line, column, value, reason) VALUES (?, ?, ?, ?, ?)'),
    countActive: db.prepare('SELECT count(*) FROM users WHERE tenant = ? AND kind = ? AND active = 1').pluck(),
  };
}

export function recordImport(db: Db, rec: ImportRecord): number {
  const s = statementsByDb.get(db) ?? prepare(db);
  statementsByDb.set(db, s);
  const info = s.insertImport.run({ ...rec, ...rec.counts, finishedAt: new Date().toISOString() });
  return Number(info.lastInsertRowid);
}

export function applyStage(db: Db, stage: Stage, ctx: ApplyContext): ApplyOutcome {
  const s = statementsByDb.get(db) ?? prepare(db);
  statementsByDb.set(db, s);
  const now = new Date().toISOString();
  const year = new Date().getUTCFullYear();
  const { tenant, kind, options } = ctx;
  const actor = options.actor;

  const run = (): ApplyOutcome => {
    const counts = emptyCounts();
    counts.failed = stage.failed;
    counts.rows = stage.valid + stage.failed;

    // Safety hold first, so a held file writes nothing at all.
    const missingFilter = `FROM users WHERE users.tenant = ? AND users.kind = ? AND users.active = 1 AND NOT ${stage.carriesKey('users.external_id')}`;
    if (options.fullSync) {
      const active = s.countActive.get(tenant, kind) as number;
      const missing = db.prepare(`SELECT count(*) ${missingFilter}`).pluck().get(tenant, kind) as number;
      const percent = active === 0 ? 0 : (missing / active) * 100;
      if (missing > 0 && percent > options.maxDeactivatePercent && !ctx.force) {
        throw new Rollback({
          status: 'held',
          importId: null,
          counts: { ...counts, deactivated: missing },
          message:
            `held: this full sync would deactivate ${missing} of ${active} active users (${percent.toFixed(1)}%), ` +
            `more than the ${options.maxDeactivatePercent}% limit. Nothing was applied. If the file is complete and right, ` +
            `an operator applies it with \`provisioner run --tenant ${tenant} --now --force\`; otherwise upload the complete file.`,
        });
      }
    }

    const status = counts.failed > 0 ? 'applied with errors' : 'applied';
    const importId = recordImport(db, { ...ctx.record, status, message: null, counts });
    const change = (id: string, action: string, fields: string[], old: Record<string, unknown>) =>
      s.insertChange.run(importId, tenant, id, action, JSON.stringify(fields), JSON.stringify(old), actor, now);

    // Users that exist already: compared field by field, in JS, where the options decide.
    for (const { key, user, passwordHash, existing } of stage.existingUsers<UserRow>(tenant)) {
      const next = desiredRow(existing, user, passwordHash, { kind, options, year, now });
      const changed = TRACKED.filter((f) => existing[f] !== next[f]);
      if (changed.length === 0) {
        counts.unchanged++;
        continue;
      }
      s.updateUser.run(
        next.kind, next.email, next.username, next.first_name, next.last_name, next.role, next.site_id, next.site_label,
        next.password_hash, next.active, next.archived_at, next.attributes, now, actor, importId, tenant, key,
      );
      const old = Object.fromEntries(changed.filter((f) => !SECRET.has(f)).map((f) => [f, existing[f]]));
      const fields = changed.map(publicFieldName);
      let action = 'update';
      if (next.archived_at && !existing.archived_at) {
        action = 'archive';
        counts.archived++;
      } else if (!next.active && existing.active) {
        action = 'deactivate';
        counts.deactivated++;
      } else {
        // Back from the archive, or back after a full sync deactivated them.
        if ((existing.archived_at && !next.archived_at) || (!existing.active && next.active)) action = 'restore';
        counts.updated++;
      }
      change(key, action, fields, old);
    }

    // New users: set-based, straight from the staging table (most of a first import).
    counts.created = createNewUsers(db, stage, { tenant, kind, importId, actor, now, archive: options.archiveInactive, suffix: `_${year}` });

    if (options.fullSync) {
      db.prepare(
        `INSERT INTO user_changes (import_id, tenant, external_id, action, fields, old_values, actor, changed_at)
         SELECT ?, users.tenant, users.external_id, 'deactivate', '["active"]', '{"active":1}', ?, ? ${missingFilter}`,
      ).run(importId, actor, now, tenant, kind);
      const info = db
        .prepare(`UPDATE users SET active = 0, updated_at = ?, updated_by = ?, last_import_id = ?
          WHERE tenant = ? AND kind = ? AND active = 1 AND NOT ${stage.carriesKey('users.external_id')}`)
        .run(now, actor, importId, tenant, kind);
      counts.deactivated += info.changes;
    }

    for (const e of stage.errors()) {
      for (const p of e.problems) s.insertError.run(importId, e.line, p.column, p.value, p.reason);
    }
    db.prepare(
      'UPDATE imports SET created = ?, updated = ?, unchanged = ?, deactivated = ?, archived = ?, failed = ?, rows = ?, finished_at = ? WHERE id = ?',
    ).run(counts.created, counts.updated, counts.unchanged, counts.deactivated, counts.archived, counts.failed, counts.rows, new Date().toISOString(), importId);
    ctx.inTransaction?.(importId, counts, status);
    const outcome: ApplyOutcome = { status, importId, counts };
    if (ctx.dryRun) throw new Rollback({ ...outcome, importId: null });
    return outcome;
  };

  try {
    return db.transaction(run).immediate();
  } catch (err) {
    if (err instanceof Rollback) return err.outcome;
    throw err;
  }
}

/**
 * Inserts the staged users that do not exist yet, and their "create" history, in two
 * statements. A new user is just the file's values (absent columns stay NULL); with
 * archiveInactive, one uploaded as inactive is created archived, its identifiers suffixed.
 */
function createNewUsers(
  db: Db,
  stage: Stage,
  c: { tenant: string; kind: string; importId: number; actor: string; now: string; archive: boolean; suffix: string },
): number {
  const isNew = `NOT EXISTS (SELECT 1 FROM users u WHERE u.tenant = @tenant AND u.external_id = s.key)`;
  const archived = `(@archive AND s.active = 0)`;
  const fields = JSON.stringify(createdFields(stage));
  db.prepare(
    `INSERT INTO user_changes (import_id, tenant, external_id, action, fields, old_values, actor, changed_at)
     SELECT @importId, @tenant, s.key, CASE WHEN ${archived} THEN 'archive' ELSE 'create' END, @fields, '{}', @actor, @now
       FROM ${stage.rowsTable} s WHERE ${isNew} ORDER BY s.line`,
  ).run({ ...c, archive: c.archive ? 1 : 0, fields });
  return db
    .prepare(
      `INSERT INTO users (tenant, external_id, kind, email, username, first_name, last_name, role, site_id, site_label, password_hash,
                          active, archived_at, attributes, created_at, updated_at, updated_by, last_import_id)
       SELECT @tenant, s.key, @kind,
              CASE WHEN ${archived} THEN s.email || @suffix ELSE s.email END,
              CASE WHEN ${archived} THEN s.username || @suffix ELSE s.username END,
              s.first_name, s.last_name, s.role, s.site_id, s.site_label, s.password_hash, s.active,
              CASE WHEN ${archived} THEN @now END, s.attributes, @now, @now, @actor, @importId
         FROM ${stage.rowsTable} s WHERE ${isNew} ORDER BY s.line`,
    )
    .run({ ...c, archive: c.archive ? 1 : 0 }).changes;
}

const FIELD_COLUMNS: Partial<Record<keyof StagedUser, string>> = {
  email: 'email', username: 'username', firstName: 'first_name', lastName: 'last_name', role: 'role',
  siteId: 'site_id', siteLabel: 'site_label', password: 'password',
};

/** The fields a create sets: the columns the file carries (the same for every row). */
function createdFields(stage: Stage): string[] {
  const fields = ['kind'];
  for (const [field, column] of Object.entries(FIELD_COLUMNS)) if (stage.present.has(field as keyof StagedUser)) fields.push(column!);
  fields.push('active');
  if (stage.present.has('attributes')) fields.push('attributes');
  return fields;
}

/** The users row this staged user should produce, given what is stored and the options. */
function desiredRow(
  existing: UserRow | undefined,
  user: StagedUser,
  passwordHash: string | null,
  ctx: { kind: string; options: ImportOptions; year: number; now: string },
): Pick<UserRow, Tracked> {
  const { options } = ctx;
  const pick = <T>(value: T | undefined, current: T | null): T | null => (value === undefined ? current : value);
  const stripYear = (v: string | null) => (v === null ? null : v.replace(/_\d{4}$/, ''));
  const base = existing && existing.archived_at
    ? { ...existing, email: stripYear(existing.email), username: stripYear(existing.username) }
    : existing;

  const attributes = { ...(base ? (JSON.parse(base.attributes) as Record<string, string>) : {}) };
  for (const [k, v] of Object.entries(user.attributes)) {
    if (v === null) delete attributes[k];
    else attributes[k] = v;
  }
  const email = !base || options.overwriteEmail || base.email === null ? pick(user.email, base?.email ?? null) : base.email;
  const row: Pick<UserRow, Tracked> = {
    kind: ctx.kind,
    email,
    username: pick(user.username, base?.username ?? null),
    first_name: pick(user.firstName, base?.first_name ?? null),
    last_name: pick(user.lastName, base?.last_name ?? null),
    role: pick(user.role, base?.role ?? null),
    site_id: pick(user.siteId, base?.site_id ?? null),
    site_label: pick(user.siteLabel, base?.site_label ?? null),
    password_hash: passwordHash ?? base?.password_hash ?? null,
    active: user.active ? 1 : 0,
    archived_at: null,
    attributes: JSON.stringify(sortKeys(attributes)),
  };
  if (!user.active && options.archiveInactive) {
    if (existing?.archived_at) return { ...row, email: existing.email, username: existing.username, archived_at: existing.archived_at };
    const suffix = `_${ctx.year}`;
    row.archived_at = ctx.now;
    row.email = row.email === null ? null : row.email + suffix;
    row.username = row.username === null ? null : row.username + suffix;
  }
  return row;
}

const publicFieldName = (f: Tracked): string => (f === 'password_hash' ? 'password' : f);

function sortKeys(o: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(o).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}
