// The data-access contract. Everything provisioner keeps (the user directory, imports and their
// errors, runs, leases and claims, the report outbox and the mail queue, triggers, daemons) goes
// through this interface; SQL lives only in its implementations (src/store/sqlite for one
// machine, src/store/postgres for several workers). Async at the boundary: the SQLite side
// answers at once, the PostgreSQL side over the network.
//
// Timestamps are ISO-8601 strings in UTC. Leases and "now" come from the store's clock
// (PostgreSQL's now() where several machines share it).

export type ImportStatus = 'applied' | 'applied with errors' | 'rejected' | 'held' | 'failed' | 'discarded' | 'superseded';
export type RunStatus = 'running' | 'ok' | 'errors' | 'failed' | 'nothing' | 'busy' | 'interrupted';
export type RunReason = 'schedule' | 'now' | 'trigger' | 'release' | 'discard';

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

/** One processed file of one epoch, as recorded. */
export interface ImportRow {
  id: number;
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
  /** The header cells as the file had them (errors.csv is rebuilt from them). */
  header: string[] | null;
  /** For a release: the held import it applied; for discarded/superseded: the held import. */
  heldImportId: number | null;
  /** For an undo: the import it undid. */
  revertsImportId: number | null;
  startedAt: string;
  finishedAt: string;
}

/** What to record for a file that changed nothing (rejected, failed, held, discarded, superseded). */
export interface UnappliedImport {
  runId: number | null;
  tenant: string;
  epoch: string;
  file: string;
  kind: string | null;
  status: Exclude<ImportStatus, 'applied' | 'applied with errors'>;
  message: string | null;
  contentSha1: string | null;
  counts: ImportCounts;
  actor: string | null;
  header?: string[] | null;
  heldImportId?: number | null;
  startedAt: string;
}

export interface RowProblem {
  column: string;
  value: string;
  reason: string;
}

/** A failing row: its line, its cells as uploaded (secrets blanked) and what is wrong. */
export interface ErrorRow {
  line: number;
  raw: string[];
  problems: RowProblem[];
}

export interface RunSummary {
  id: number;
  tenant: string;
  reason: string;
  owner: string;
  status: RunStatus;
  message: string | null;
  dryRun: boolean;
  startedAt: string;
  finishedAt: string | null;
  settling: { file: string; reason: string; takeAfter: string }[];
}

export interface Store {
  readonly kind: 'sqlite' | 'postgres';
  /** The file, or the URL without its password: for messages. */
  readonly location: string;
  readonly schema: SchemaStore;
  readonly runs: RunStore;
  readonly leases: LeaseStore;
  readonly uploads: UploadStore;
  readonly imports: ImportStore;
  readonly directory: DirectoryStore;
  readonly outbox: OutboxStore;
  readonly mail: MailStore;
  readonly triggers: TriggerStore;
  readonly daemons: DaemonStore;
  readonly schedule: ScheduleStore;
  readonly audit: AuditStore;
  readonly sessions: SessionStore;
  readonly overview: OverviewStore;
  /** The store's clock. */
  now(): Promise<Date>;
  /** Idempotent. */
  close(): Promise<void>;
}

/** What the console's list of tenants shows of each one (overview.tenants). */
export interface TenantOverview {
  lastRun: RunSummary | null;
  /** Held uploads not released, discarded or superseded since. */
  held: number;
  /** Uploads without COMPLETE, not completed since. */
  stale: number;
  mailQueued: number;
  mailFailed: number;
}

/**
 * The console's views of many tenants at once: a page of tenants in a fixed number of queries,
 * however many tenants there are or are shown.
 */
export interface OverviewStore {
  /** Each of `tenants` (a page of them): its last run, held and stale uploads, queued and failed mail. */
  tenants(tenants: string[]): Promise<Map<string, TenantOverview>>;
}

export interface SchemaStore {
  /** The applied and the latest known migration, without migrating. */
  version(): Promise<{ current: number; latest: number }>;
  migrate(): Promise<void>;
  /** Throws when the store cannot be written (a read-only file, a read-only role). */
  probeWrite(): Promise<void>;
  /** The server's version, for `doctor`. */
  serverVersion(): Promise<string>;
  /** Why this server cannot be used (it is older than this provisioner needs) and what to do; null when it can. */
  unsupported(): Promise<{ problem: string; fix: string } | null>;
}

export interface RunStore {
  start(run: { tenant: string; reason: RunReason; owner: string; dryRun: boolean }): Promise<number>;
  /** `settling`: JSON of the loose files seen and not yet taken (status shows when they will be). */
  finish(id: number, status: RunStatus, message: string | null, settling?: string | null): Promise<void>;
  /** Runs still marked running, for crash recovery. */
  running(): Promise<{ id: number; tenant: string; owner: string; startedAt: string }[]>;
  markInterrupted(ids: number[], message: string): Promise<void>;
  last(tenant: string): Promise<RunSummary | null>;
  recent(tenant: string, limit: number): Promise<RunSummary[]>;
  /**
   * Per tenant, when its last successful import finished: applied, with or without row errors
   * (undos are not deliveries). A feed that stopped shows here (overdue, metrics).
   */
  lastSuccess(): Promise<Map<string, string>>;
  /** Per tenant, when its first real (not dry) run started: a feed that never delivered counts from there. */
  firstRuns(): Promise<Map<string, string>>;
  /** Runs by status, all time (metrics; the same on every daemon of a cluster). */
  countsByStatus(): Promise<Record<string, number>>;
}

export type LeaseResult = { ok: true } | { ok: false; owner: string; expiresAt: string };

export interface LeaseStore {
  /**
   * Takes the tenant's lease for `owner`, unless a live holder has it: an unexpired lease whose
   * owner `holderIsGone` does not declare dead.
   */
  acquireTenant(tenant: string, owner: string, seconds: number, holderIsGone: (holder: string) => boolean): Promise<LeaseResult>;
  releaseTenant(tenant: string, owner: string): Promise<void>;
  /** Renews every tenant lease and claim `owner` holds. */
  renew(owner: string, seconds: number): Promise<void>;
  recordClaim(tenant: string, epoch: string, owner: string, seconds: number): Promise<void>;
  dropClaim(tenant: string, epoch: string): Promise<void>;
  claim(tenant: string, epoch: string): Promise<{ owner: string; expiresAt: string } | null>;
  claims(tenant?: string): Promise<{ tenant: string; epoch: string; owner: string; claimedAt: string; expiresAt: string }[]>;
  /** Tenants whose lease `owner` holds (status: what a daemon has in hand). */
  tenantsHeldBy(owner: string): Promise<string[]>;
  /** Owners of unexpired tenant leases (by the store's clock): the processes running a tenant now. */
  liveOwners(): Promise<string[]>;
}

export interface UploadStore {
  /** Records a sighting of a loose file; returns when it was first seen with this size and mtime. */
  observe(tenant: string, path: string, size: number, mtime: number): Promise<{ since: string }>;
  forget(tenant: string, path: string): Promise<void>;
  /** Has this keep-in-place content been processed? */
  contentSeen(tenant: string, path: string, sha1: string): Promise<boolean>;
  /** Remembers keep-in-place content that was processed without being applied (held). */
  rememberContent(tenant: string, path: string, sha1: string, importId: number | null): Promise<void>;
  /** Is this epoch name used by any import or outcome of the tenant? */
  epochUsed(tenant: string, epoch: string): Promise<boolean>;
  /** Stale uploads (no COMPLETE): those not yet reported of `epochs`. */
  unreportedStale(tenant: string, epochs: string[]): Promise<string[]>;
  stale(tenant: string): Promise<{ epoch: string; firstSeen: string }[]>;
  /**
   * Something the worker will not take and has told the district about (a failed epoch it could
   * not move, a symlink, a name it cannot handle). Taken again only once its signature changes.
   */
  setAside(tenant: string, path: string, signature: string, reason: string): Promise<void>;
  isSetAside(tenant: string, path: string, signature: string): Promise<boolean>;
  setAsideList(tenant: string): Promise<{ path: string; reason: string; at: string }[]>;
}

export interface HeldUpload {
  importId: number;
  epoch: string;
  file: string;
  kind: string | null;
  heldAt: string;
  message: string | null;
  counts: ImportCounts;
  /** Where the held upload waits on the SFTP host. */
  location: string | null;
  /** An import of the same tenant and kind applied after it was held. */
  supersededBy: number | null;
}

export interface ImportStore {
  /** The applied import of this exact content under this epoch and file name, if any. */
  findApplied(tenant: string, epoch: string, file: string, sha1: string): Promise<ImportRow | null>;
  recordUnapplied(rec: UnappliedImport): Promise<number>;
  get(id: number): Promise<ImportRow | null>;
  byRun(runId: number): Promise<ImportRow[]>;
  /** The latest import of each file of an epoch. */
  ofEpoch(tenant: string, epoch: string): Promise<ImportRow[]>;
  recent(tenant: string, limit: number, offset?: number): Promise<ImportRow[]>;
  /** The first problems of an import, in line order (reports, the terminal, the console). */
  errors(importId: number, limit: number, offset?: number): Promise<{ line: number; column: string | null; value: string | null; reason: string }[]>;
  /** Every failing row with its cells, in line order, a page at a time (errors.csv). */
  errorRows(importId: number): AsyncIterable<ErrorRow[]>;
  /** Held uploads not released, discarded or superseded since. */
  held(tenant: string): Promise<HeldUpload[]>;
  heldImport(tenant: string, epoch: string): Promise<HeldUpload | null>;
  /** Imports by status, and the rows of applied imports by action (metrics). */
  totals(): Promise<{ byStatus: Record<string, number>; rows: Record<string, number> }>;
}

// ---------------------------------------------------------------------------------------------
// The user directory: staging and applying a file
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// Reporting: the outbox of outcomes, and the mail queue
// ---------------------------------------------------------------------------------------------

export type OutcomeKind = 'epoch' | 'released' | 'discarded' | 'stale' | 'overdue' | 'reverted';

/**
 * Something to tell a district (and sometimes the operators) about, stored in the transaction that
 * records it; the report is rendered and queued from it afterwards. An epoch outcome is recorded
 * before its upload is moved (`filed: false`) and confirmed once it is where the report says.
 */
export interface Outcome {
  id: number;
  tenant: string;
  kind: OutcomeKind;
  dedupeKey: string;
  epoch: string | null;
  payload: OutcomePayload;
  filed: boolean;
  createdAt: string;
  reportedAt: string | null;
}

export interface OutcomeFile {
  file: string;
  kind: string | null;
  status: ImportStatus;
  message: string | null;
  counts: ImportCounts;
  importId: number | null;
}

export interface OutcomePayload {
  status: ImportStatus;
  files: OutcomeFile[];
  /** Where the upload is on the SFTP host (null: nowhere to show, e.g. stale notices). */
  location: string | null;
  /** Why it is not where it would normally go (bak not usable, …). */
  locationNote?: string | null;
  /**
   * It could not be put where it belongs (bak is a file, say): a problem the district and the
   * operators are told about whatever notify.when says, and `status` shows.
   */
  misfiled?: boolean;
  /** The epoch folder it came from, when it was claimed from a reused name, etc. */
  notes: string[];
  staleUploads: string[];
  /** Operators get this one whatever the tenant's notify.when (holds, failures). */
  operators: boolean;
  /** Where the upload was (for keep-in-place files, the file itself). */
  source?: string | null;
  /** The report's first sentence and subject, when the files do not say it (an undo, an overdue feed). */
  headline?: string | null;
  summary?: string | null;
  finishedAt: string;
}

export interface NewOutcome {
  tenant: string;
  kind: OutcomeKind;
  dedupeKey: string;
  epoch: string | null;
  payload: OutcomePayload;
  filed: boolean;
}

export interface OutboxStore {
  /** Stores an outcome once per dedupe key; returns its id (the existing one when known). */
  record(o: NewOutcome): Promise<{ id: number; created: boolean }>;
  /** Uploads that never completed: marked reported in the same transaction that stores the notice. */
  recordStale(tenant: string, epochs: string[], o: NewOutcome): Promise<void>;
  /** Confirms where the upload now is; `misfiled`: not where it belongs (the operators are told too). */
  file(id: number, location: string | null, note: string | null, misfiled?: boolean): Promise<void>;
  /** An outcome recorded for this epoch whose upload was not yet filed away (crash recovery). */
  unfiled(tenant: string, epoch: string): Promise<Outcome | null>;
  /** Filed outcomes not yet reported, oldest first. */
  unreported(tenant?: string): Promise<Outcome[]>;
  /** Marks it reported; queues the mail (if any) in the same transaction. */
  markReported(id: number, mail: NewMail[]): Promise<void>;
  get(id: number): Promise<Outcome | null>;
  recent(tenant: string, limit: number): Promise<Outcome[]>;
  /** The outcomes recorded for one epoch, newest first (where the upload is now; its result.json). */
  ofEpoch(tenant: string, epoch: string): Promise<Outcome[]>;
}

export interface QueuedAttachment {
  filename: string;
  contentType: string;
  /** base64 */
  content: string;
}

export interface NewMail {
  tenant: string;
  /** Unique per logical message: queueing the same key again does nothing. */
  dedupeKey: string;
  from: string;
  to: string[];
  replyTo?: string | null;
  subject: string;
  text: string;
  html: string;
  attachments: QueuedAttachment[];
}

export type MailStatus = 'queued' | 'sent' | 'failed';

export interface MailRow {
  id: number;
  tenant: string;
  dedupeKey: string;
  from: string;
  to: string[];
  replyTo: string | null;
  subject: string;
  text: string;
  html: string;
  attachments: QueuedAttachment[];
  status: MailStatus;
  attempts: number;
  nextAttemptAt: string;
  lastError: string | null;
  createdAt: string;
  sentAt: string | null;
  messageId: string | null;
}

export interface MailQueueSummary {
  queued: number;
  sent: number;
  failed: number;
  oldestQueuedAt: string | null;
  lastError: string | null;
}

export interface MailStore {
  enqueue(mail: NewMail): Promise<number>;
  /** Ids due now, oldest first. */
  due(now: Date, tenant?: string): Promise<number[]>;
  /** Takes a due message for one attempt (a lease until `until`); null when someone else did. */
  claim(id: number, now: Date, until: Date): Promise<MailRow | null>;
  markSent(id: number, messageId: string, note: string | null): Promise<void>;
  markRetry(id: number, error: string, at: Date): Promise<void>;
  markFailed(id: number, error: string): Promise<void>;
  summary(tenant?: string): Promise<MailQueueSummary>;
  list(tenant: string, limit: number): Promise<MailRow[]>;
  get(id: number): Promise<MailRow | null>;
  /** A copy of a sent or failed message, queued again (the console's "resend"). */
  requeue(id: number, dedupeKey: string): Promise<number>;
}

// ---------------------------------------------------------------------------------------------
// Coordination: triggers, daemons, schedule ticks; the audit trail
// ---------------------------------------------------------------------------------------------

export interface TriggerRow {
  id: number;
  tenant: string;
  requestedAt: string;
  requestedBy: string | null;
  pickedUpAt: string | null;
  pickedUpBy: string | null;
  runId: number | null;
  finishedAt: string | null;
  status: string | null;
  message: string | null;
}

/** Told of new triggers as they are requested (PostgreSQL's LISTEN/NOTIFY). */
export interface TriggerListener {
  /** False once its connection is lost: listen again (the daemon's poll covers the gap). */
  readonly alive: boolean;
  close(): Promise<void>;
}

export interface TriggerStore {
  /** Records a request and tells the listeners. */
  request(tenant: string, requestedBy: string): Promise<number>;
  /**
   * Calls `onRequest` when a trigger is requested from any machine; null where there is nothing
   * to listen to (SQLite: one machine, whose poll is one indexed read).
   */
  listen(onRequest: () => void): Promise<TriggerListener | null>;
  get(id: number): Promise<TriggerRow | null>;
  pending(tenant?: string): Promise<TriggerRow[]>;
  /** Takes the oldest pending trigger of one of `tenants` for `owner`; null when none. */
  take(tenants: string[], owner: string): Promise<TriggerRow | null>;
  finish(ids: number[], outcome: { runId: number | null; status: string; message: string | null }): Promise<void>;
  release(ids: number[]): Promise<void>;
  /** Triggers taken by owners that `isGone` declares dead: pending again. */
  recoverOrphans(isGone: (owner: string) => boolean): Promise<number>;
}

export interface DaemonInfo {
  owner: string;
  host: string;
  pid: number;
  startedAt: string;
  heartbeatAt: string;
  stoppedAt: string | null;
  tenants: string[];
  /** Tenants it is running now. */
  running: string[];
}

export interface DaemonStore {
  register(info: { owner: string; host: string; pid: number; tenants: string[] }): Promise<void>;
  beat(owner: string, running: string[]): Promise<void>;
  unregister(owner: string): Promise<void>;
  /** Daemons not stopped, with the age of their heartbeat by the store's clock. */
  list(): Promise<(DaemonInfo & { heartbeatAgeMs: number })[]>;
}

export interface ScheduleStore {
  /** Claims one scheduled tick of a tenant cluster-wide: true for exactly one caller. */
  claimTick(tenant: string, dueAt: string, owner: string): Promise<boolean>;
  /** Forgets ticks older than `before`. */
  prune(before: string): Promise<void>;
  /** Overdue feeds reported, per episode. */
  overdueReported(tenant: string, since: string): Promise<boolean>;
}

export interface AuditEntry {
  id: number;
  at: string;
  actor: string;
  action: string;
  tenant: string | null;
  target: string | null;
  result: string;
  detail: string | null;
}

export interface AuditStore {
  record(e: Omit<AuditEntry, 'id' | 'at'>): Promise<number>;
  recent(opts: { tenant?: string; limit: number }): Promise<AuditEntry[]>;
}

/** A signed-in console user. Only a hash of the session's cookie is stored. */
export interface ConsoleSession {
  username: string;
  role: string;
  /** The session's CSRF token (every form of the session carries it). */
  csrf: string;
  createdAt: string;
  expiresAt: string;
}

/** Console sessions, in the store so that every daemon of a cluster knows them. */
export interface SessionStore {
  create(s: { idHash: string; username: string; role: string; csrf: string; seconds: number }): Promise<void>;
  /** The session, unless it expired (by the store's clock). */
  get(idHash: string): Promise<ConsoleSession | null>;
  delete(idHash: string): Promise<void>;
  /** Forgets expired sessions; returns how many. */
  prune(): Promise<number>;
}
