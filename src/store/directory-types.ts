// The data-access contract, part two (see types.ts): the user directory. A file is staged (its
// checked rows kept by the store), held or applied set-based in one short transaction, previewed
// in a dry run, and an import can be reverted.
import type { ErrorRow, ImportCounts, ImportRow, RowProblem } from './types.js';
import type { NewOutcome } from './reporting-types.js';

/** Which user fields a file carries (from its header: the same for every row). */
export interface PresentFields {
  email: boolean;
  username: boolean;
  firstName: boolean;
  lastName: boolean;
  role: boolean;
  siteId: boolean;
  siteLabel: boolean;
  password: boolean;
  /** Columns kept in `attributes`. */
  attributes: boolean;
}

/**
 * The columns a file's staged rows carry, in order: line, key, active, then only the fields the
 * file has (a samegoal users.csv stages 8 values a row, not 12: the cost of staging is per value).
 */
export function stageColumns(present: PresentFields): string[] {
  const cols = ['line', 'key', 'active'];
  const optional: [boolean, string][] = [
    [present.email, 'email'], [present.username, 'username'], [present.firstName, 'first_name'], [present.lastName, 'last_name'],
    [present.role, 'role'], [present.siteId, 'site_id'], [present.siteLabel, 'site_label'], [present.attributes, 'attrs'], [present.password, 'pw_digest'],
  ];
  for (const [has, col] of optional) if (has) cols.push(col);
  return cols;
}

/** The fields a create sets: the columns the file carries (recorded once per import). */
export function createdFields(present: PresentFields): string[] {
  const fields = ['kind'];
  const pairs: [boolean, string][] = [
    [present.email, 'email'], [present.username, 'username'], [present.firstName, 'first_name'], [present.lastName, 'last_name'], [present.role, 'role'],
    [present.siteId, 'site_id'], [present.siteLabel, 'site_label'], [present.password, 'password'],
  ];
  for (const [has, name] of pairs) if (has) fields.push(name);
  fields.push('active');
  if (present.attributes) fields.push('attributes');
  return fields;
}

/** A password row staged without a digest key: never equal to a stored digest. */
export const NO_DIGEST = '-';

/** Checked rows on their way to a stage that takes batches (PostgreSQL's COPY). */
export interface StageBatch {
  /** How many valid rows `rows` holds. */
  count: number;
  /** Valid rows, stageColumns(present) values each, in COPY's text format. */
  rows: string;
  /** Failing rows. `key` (if readable) still counts as present for a full sync and for duplicates. */
  failed: { line: number; key: string | null; raw: string[]; problems: RowProblem[] }[];
  /** Lines of valid rows whose key may have come earlier in the file (confirmed by finish()). */
  repeats: number[];
}

/** One part of a file, staged by the thread that parsed it (see FileStage). */
export interface StagedPart {
  file: string;
  /** The first line the part covers: parts are consecutive ranges of lines. */
  firstLine: number;
  /** Its valid rows and failing rows. */
  valid: number;
  failed: number;
  /** Its valid rows' keys came in no useful order: the apply reads them sorted by key. */
  scattered?: boolean;
}

export interface StageSpec {
  tenant: string;
  kind: string;
  /** The key column's name, for the duplicate message. */
  keyColumn: string;
  present: PresentFields;
  /** A private folder for this file's scratch data (the caller makes it and removes it). */
  dir: string;
}

export interface StageSummary {
  valid: number;
  failed: number;
  /** Lines of rows found to repeat an earlier key: their cells are wanted for errors.csv. */
  duplicateLines: number[];
}

export interface ApplyOptions {
  fullSync: boolean;
  maxDeactivatePercent: number;
  overwriteEmail: boolean;
  overwritePassword: boolean;
  archiveInactive: boolean;
  actor: string;
}

export interface HoldCheck {
  active: number;
  missing: number;
  percent: number;
  /** Over the tenant's limit. */
  exceeds: boolean;
}

/** Rows whose password must be hashed (new or changed) or checked once (no digest yet). */
export interface PasswordWork {
  hash: number[];
  verify: { line: number; hash: string }[];
}

export interface ApplyRequest {
  runId: number | null;
  epoch: string;
  file: string;
  contentSha1: string;
  header: string[];
  options: ApplyOptions;
  /** Apply even over the deactivation limit (an operator released it). */
  releaseHold: boolean;
  /** For a release: the held import this applies. */
  heldImportId?: number | null;
  /** Keep-in-place content: remembered in the same transaction. */
  content?: { path: string; sha1: string };
  startedAt: string;
}

export type ApplyResult =
  | { status: 'applied' | 'applied with errors'; importId: number; counts: ImportCounts }
  | { status: 'held'; counts: ImportCounts; hold: HoldCheck }
  | { status: 'applied before'; import: ImportRow };

interface StageBase {
  /** Every row is in: flushes and says what was found. */
  finish(): Promise<StageSummary>;
  /** The cells of duplicate rows, read again from the file. */
  setDuplicateCells(rows: { line: number; raw: string[] }[]): Promise<void>;
  holdCheck(options: ApplyOptions): Promise<HoldCheck | null>;
  passwordWork(overwritePassword: boolean): Promise<PasswordWork>;
  /** hash: the new hash; null: the password is the one stored (only its digest is written). */
  setPasswords(results: { line: number; hash: string | null }[]): Promise<void>;
  /** The counts an apply would give, changing nothing (dry run; passwords compared by digest). */
  preview(options: ApplyOptions): Promise<ImportCounts>;
  /** One write transaction: the users, their history, the import record and its row errors. */
  apply(request: ApplyRequest): Promise<ApplyResult>;
  /** The row errors found while staging, for `validate` (nothing is recorded). */
  errorRows(): AsyncIterable<ErrorRow[]>;
  close(): Promise<void>;
}

/** A stage the checked rows are sent to in batches (PostgreSQL: COPY into a session's tables). */
export interface BatchStage extends StageBase {
  readonly sink: 'batches';
  /** Adds a batch of checked rows (back-pressure: await it). */
  write(batch: StageBatch): Promise<void>;
  /** Forgets every row written so far (the file is read again, as one part). */
  reset(): Promise<void>;
}

/**
 * A stage whose rows the parse threads write themselves, each part of the file into a file of
 * its own (SQLite), which the stage then takes over: no row crosses threads.
 */
export interface FileStage extends StageBase {
  readonly sink: 'files';
  /** Where the thread parsing part `index` writes it (stage-part.ts). */
  partFile(index: number): string;
  /** The parts are written (in file order): read them from here on. */
  adopt(parts: StagedPart[]): Promise<void>;
}

export type Stage = BatchStage | FileStage;

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

export type ChangeAction = 'create' | 'update' | 'deactivate' | 'archive' | 'restore' | 'revert';

/** One recorded change: old values of the fields it changed (secrets left out). */
export interface UserChangeRow {
  id: number;
  importId: number | null;
  action: ChangeAction;
  fields: string[];
  oldValues: Record<string, unknown>;
  actor: string | null;
  changedAt: string;
  epoch: string | null;
  file: string | null;
}

export interface DirectoryStore {
  openStage(spec: StageSpec): Promise<Stage>;
  users(tenant: string, opts?: { search?: string; limit?: number; offset?: number }): Promise<DirectoryUser[]>;
  /** The stored row of one user (columns as stored), or null. */
  user(tenant: string, externalId: string): Promise<(DirectoryUser & { raw: Record<string, unknown> }) | null>;
  /** Exact id first, else a case-insensitive match when there is exactly one. */
  resolveId(tenant: string, externalId: string): Promise<string>;
  /** Every change of one user, oldest first (creates included). */
  changes(tenant: string, externalId: string): Promise<UserChangeRow[]>;
  /**
   * Undoes an import: every user it changed gets its previous values back (users it created are
   * deactivated), as a new import. Refused when a later import changed the same users, unless forced.
   */
  revert(req: RevertRequest): Promise<RevertResult>;
  /**
   * The active users of a tenant and kind whose external id is not in `keys` (what a full sync of
   * a file with those keys deactivates): how many, how many are active, and the first `limit` by id.
   */
  missingFrom(tenant: string, kind: string, keys: string[], limit: number): Promise<{ total: number; active: number; sample: DirectoryUser[] }>;
}

export interface RevertRequest {
  tenant: string;
  importId: number;
  actor: string;
  force: boolean;
  runId: number | null;
  /** The district's report of the undo, stored in the same transaction (never lost, never twice). */
  outcome?: (done: { importId: number; counts: ImportCounts }) => NewOutcome;
}

export type RevertResult =
  | { ok: true; importId: number; counts: ImportCounts }
  | { ok: false; reason: string; conflicts?: { externalId: string; importId: number }[] };
