// What a tenant's run works with, and what it answers: shared by the run, its epochs and its
// keep-in-place files (run-tenant.ts, epoch.ts, keep-files.ts).
import type { Config, TenantConfig } from '../config.js';
import type { FileImportResult } from '../import/import-file.js';
import type { Hasher } from '../import/hash-pool.js';
import type { KeptSessions } from '../sftp/kept-sessions.js';
import type { KindRegistry } from '../import/kinds.js';
import type { Logger } from '../log.js';
import type { SftpSession } from '../sftp/client.js';
import type { ImportStatus, RunReason, RunStatus, Store } from '../store/types.js';
import type { SettlingFile } from './settle.js';

export interface RunDeps {
  config: Config;
  store: Store;
  kinds: KindRegistry;
  log: Logger;
  /** Hashes passwords; null where nothing may be hashed (a dry run). */
  hasher: Hasher | null;
  digestKey: Buffer | null;
  /** Shared by the runs of a process: at most `concurrency` process uploads at once. */
  processing?: { acquire(): Promise<() => void> };
  /** The daemon's: connections kept open between a tenant's runs (`sftp.keepOpenSeconds`). */
  keptSessions?: KeptSessions;
}

export interface RunOptions {
  reason: RunReason;
  /** Process a keep-in-place file again even if its content was processed before. */
  force: boolean;
  dryRun: boolean;
  /** Called with rows read so far, per file (terminal progress). */
  onProgress?: (tenant: string, file: string, rows: number) => void;
  /** Stop between epochs (graceful shutdown). */
  signal?: AbortSignal;
  /** When another process is running this tenant: wait this long for it, then give up. */
  waitForLockSeconds?: number;
}

export interface EpochOutcome {
  epoch: string;
  status: ImportStatus;
  files: FileImportResult[];
  /** Where the upload is now on the SFTP host. */
  remotePath: string | null;
  /** Said to the district with the report (a reused epoch name, where the upload went and why). */
  notes: string[];
  /** Why it is not where it belongs (bak unusable): the run counts as failed, whatever was applied. */
  misfiled?: string;
}

export interface TenantRunResult {
  tenant: string;
  runId: number | null;
  status: RunStatus;
  message: string | null;
  epochs: EpochOutcome[];
  /** Loose files not taken yet, and when they will be. */
  settling: SettlingFile[];
  /** Epochs without COMPLETE older than staleAfterHours, reported for the first time. */
  newlyStale: string[];
  /** Things not taken and reported to the district (symlinks, names we cannot handle). */
  skipped: { name: string; reason: string }[];
}

export interface RunContext {
  deps: RunDeps;
  tenant: TenantConfig;
  opts: RunOptions;
  session: SftpSession;
  runId: number;
  /** This run's local folder (removed when the run ends). */
  workDir: string;
  log: Logger;
  result: TenantRunResult;
  /** Epochs this run holds a claim on (their claim files are renewed with the lease). */
  claimed: Map<string, string>;
}

// A superseded upload is one an operator asked to apply and that was not: like row errors, it
// makes `release` exit 1. A discarded one is what the operator asked for.
const STATUS_RANK: Record<ImportStatus, number> = { applied: 0, discarded: 0, superseded: 1, 'applied with errors': 1, held: 2, rejected: 3, failed: 4 };

/** The worst status of an epoch's files; an epoch whose only file was discarded is `discarded`, not `applied`. */
export const worstStatus = (statuses: ImportStatus[]): ImportStatus =>
  statuses.length === 0 ? 'applied' : statuses.reduce((w, s) => (STATUS_RANK[s] > STATUS_RANK[w] ? s : w));

export const emptyResult = (tenant: string, runId: number | null = null): TenantRunResult => ({
  tenant, runId, status: 'nothing', message: null, epochs: [], settling: [], newlyStale: [], skipped: [],
});
