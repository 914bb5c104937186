// The data-access contract. Everything provisioner keeps (the user directory, imports and their
// errors, runs, leases and claims, the report outbox and the mail queue, triggers, daemons) goes
// through this interface; SQL lives only in its implementations (src/store/sqlite for one
// machine, src/store/postgres for several workers). Async at the boundary: the SQLite side
// answers at once, the PostgreSQL side over the network.
//
// Timestamps are ISO-8601 strings in UTC. Leases and "now" come from the store's clock
// (PostgreSQL's now() where several machines share it).
//
// The contract is in four files, re-exported here: this one (imports, runs, leases, uploads),
// directory-types.ts, reporting-types.ts and coordination-types.ts.
import type { DirectoryStore } from './directory-types.js';
import type { MailStore, OutboxStore } from './reporting-types.js';
import type { AuditStore, DaemonStore, ScheduleStore, SessionStore, TriggerStore } from './coordination-types.js';

export * from './directory-types.js';
export * from './reporting-types.js';
export * from './coordination-types.js';

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
