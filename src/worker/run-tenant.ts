// One run of one tenant: take the tenant's lock, connect, recover abandoned claims, promote
// settled loose files, then claim and process ready epochs oldest first, file the processed
// upload away, and leave a trace (runs, imports, remote log, report). Every failure is caught
// here and recorded against this tenant only.
import fs from 'node:fs';
import path from 'node:path';
import posix from 'node:path/posix';
import type { Config, TenantConfig } from '../config.js';
import type { Db } from '../db/database.js';
import { errorMessage, HostKeyMismatchError } from '../errors.js';
import { emptyCounts, type ImportStatus } from '../import/apply.js';
import { importFile, sha1File, type FileImportResult, type RecordedImport } from '../import/import-file.js';
import type { KindRegistry } from '../import/kinds.js';
import type { Logger } from '../log.js';
import { isNoSuchFile, isSafeName, SftpSession } from '../sftp/client.js';
import { claimIsAbandoned, dropClaim, hasSettled, recordClaim, releaseTenantLock, renewTenantLock, tryLockTenant, workerId } from './leases.js';
import { COMPLETE, epochName, EPOCH_RE, freeEpochName, HELD_DIR, isPromotable, kindForFile, PROCESSING_DIR, promotedName, promoteLooseFiles, scanUpload } from './uploads.js';

export interface RunOptions {
  reason: 'schedule' | 'now' | 'trigger';
  force: boolean;
  dryRun: boolean;
  /** Called with rows read so far, per file (terminal progress). */
  onProgress?: (tenant: string, file: string, rows: number) => void;
  /** Abort between epochs (graceful shutdown). */
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
}

export type RunStatus = 'ok' | 'errors' | 'failed' | 'nothing' | 'busy' | 'interrupted';

export interface TenantRunResult {
  tenant: string;
  runId: number | null;
  status: RunStatus;
  message: string | null;
  epochs: EpochOutcome[];
  /** Loose files not yet settled. */
  settling: string[];
  /** Epochs without COMPLETE older than staleAfterHours, reported for the first time. */
  newlyStale: string[];
}

/** Hooks the run calls inside the transaction of an epoch's last file (queue the report). */
export interface EpochReporter {
  (db: Db, tenant: TenantConfig, outcome: EpochOutcome, newlyStale: string[], dryRun: boolean): void;
}

export interface RunDeps {
  config: Config;
  db: Db;
  kinds: KindRegistry;
  log: Logger;
  report?: EpochReporter;
}

const STATUS_RANK: Record<ImportStatus, number> = { applied: 0, 'applied with errors': 1, held: 2, rejected: 3, failed: 4 };
export const worstStatus = (statuses: ImportStatus[]): ImportStatus =>
  statuses.reduce<ImportStatus>((w, s) => (STATUS_RANK[s] > STATUS_RANK[w] ? s : w), 'applied');

/**
 * An epoch with a held file waits in .held for `--force`, whatever its other files did: filed
 * in bak with a rejected sibling, the held file could never be released.
 */
export const epochIsHeld = (outcome: { files: { status: ImportStatus }[] }): boolean => outcome.files.some((f) => f.status === 'held');

export async function runTenant(deps: RunDeps, tenant: TenantConfig, opts: RunOptions): Promise<TenantRunResult> {
  const { db, config } = deps;
  const base: TenantRunResult = { tenant: tenant.id, runId: null, status: 'nothing', message: null, epochs: [], settling: [], newlyStale: [] };
  let lock = tryLockTenant(db, tenant.id, config.leaseSeconds);
  const waitUntil = Date.now() + (opts.waitForLockSeconds ?? 0) * 1000;
  if (!lock.ok && opts.waitForLockSeconds) {
    deps.log.info({ tenant: tenant.id, owner: lock.owner }, `tenant ${tenant.id} is being processed by ${lock.owner}; waiting for it to finish`);
  }
  while (!lock.ok && Date.now() < waitUntil && !opts.signal?.aborted) {
    await new Promise((r) => setTimeout(r, 250));
    lock = tryLockTenant(db, tenant.id, config.leaseSeconds);
  }
  if (!lock.ok) {
    return { ...base, status: 'busy', message: `tenant ${tenant.id} is already being processed by ${lock.owner}; try again when it finishes` };
  }
  const runId = Number(
    db
      .prepare('INSERT INTO runs (tenant, reason, owner, started_at, dry_run) VALUES (?, ?, ?, ?, ?)')
      .run(tenant.id, opts.reason, workerId, new Date().toISOString(), opts.dryRun ? 1 : 0).lastInsertRowid,
  );
  const log = deps.log.child({ tenant: tenant.id, run: runId });
  const heartbeat = setInterval(() => renewTenantLock(db, tenant.id, config.leaseSeconds), Math.max(1000, (config.leaseSeconds * 1000) / 3));
  heartbeat.unref();
  const workDir = fs.mkdtempSync(path.join(ensureDir(config.workDir), `${tenant.id}-`));
  let result: TenantRunResult = { ...base, runId };
  let session: SftpSession | undefined;
  try {
    session = await SftpSession.connect(tenant.sftp, tenant.id);
    const run = new TenantRun(deps, tenant, opts, session, runId, workDir, log);
    result = await run.execute();
  } catch (err) {
    const message = err instanceof HostKeyMismatchError ? err.message : `run failed: ${errorMessage(err)}`;
    log.error({ err: errorMessage(err) }, message);
    result = { ...result, status: 'failed', message };
  } finally {
    clearInterval(heartbeat);
    await session?.close();
    fs.rmSync(workDir, { recursive: true, force: true });
    db.prepare('UPDATE runs SET finished_at = ?, status = ?, message = ? WHERE id = ?').run(new Date().toISOString(), result.status, result.message, runId);
    releaseTenantLock(db, tenant.id);
  }
  log.info({ status: result.status, epochs: result.epochs.length }, `run finished: ${result.status}${result.message ? ` (${result.message})` : ''}`);
  return result;
}

class TenantRun {
  private readonly paths: TenantConfig['paths'];
  private readonly result: TenantRunResult;

  constructor(
    private readonly deps: RunDeps,
    private readonly tenant: TenantConfig,
    private readonly opts: RunOptions,
    private readonly session: SftpSession,
    runId: number,
    private readonly workDir: string,
    private readonly log: Logger,
  ) {
    this.paths = tenant.paths;
    this.result = { tenant: tenant.id, runId, status: 'nothing', message: null, epochs: [], settling: [], newlyStale: [] };
  }

  async execute(): Promise<TenantRunResult> {
    const { session, tenant, opts } = this;
    if (!(await session.exists(this.paths.upload))) {
      throw new Error(`the upload folder ${this.paths.upload} does not exist on the SFTP host; create it or fix paths.upload`);
    }
    const work: { epoch: string; dir: string }[] = [];
    if (!opts.dryRun) work.push(...(await this.abandonedClaims()));
    let scan = await scanUpload(session, this.paths.upload);
    if ((tenant.loose === 'auto' || tenant.loose === 'all') && !opts.dryRun) {
      const { promoted, settling } = await promoteLooseFiles(session, this.deps.db, tenant, scan.loose, this.log);
      this.result.settling = settling;
      if (promoted.length) scan = await scanUpload(session, this.paths.upload);
    }
    this.result.newlyStale = this.noteStaleUploads(scan.incomplete);
    if (opts.force) work.push(...(await this.heldEpochs()));
    for (const epoch of scan.ready) work.push({ epoch, dir: posix.join(this.paths.upload, epoch) });

    for (const item of work) {
      if (this.interrupted()) return this.result;
      const claimed = opts.dryRun ? item.dir : await this.claim(item.epoch, item.dir);
      if (!claimed) continue;
      this.result.epochs.push(await this.processEpoch(item.epoch, claimed));
    }
    if (tenant.loose === 'keep') await this.processKeepFiles(scan.loose);
    // A dry run moves nothing, so loose files that a real run would promote are checked where they lie.
    else if (opts.dryRun) await this.previewLooseFiles(scan.loose);
    if (this.result.status === 'interrupted') return this.result;
    if (this.result.newlyStale.length && this.result.epochs.length === 0 && !opts.dryRun) {
      // Keyed on the first stale epoch: never the same key as that epoch's own report later.
      this.deps.report?.(this.deps.db, tenant, { epoch: `stale-${this.result.newlyStale[0]}`, status: 'applied', files: [], remotePath: null }, this.result.newlyStale, false);
    }
    this.result.status = this.overallStatus();
    return this.result;
  }

  /** True (and the result says so) once a graceful stop was asked for. */
  private interrupted(): boolean {
    if (!this.opts.signal?.aborted) return false;
    this.result.status = 'interrupted';
    this.result.message = 'stopped before all uploads were processed; the rest stay for the next run';
    return true;
  }

  private overallStatus(): RunStatus {
    if (this.result.epochs.length === 0) return 'nothing';
    const worst = worstStatus(this.result.epochs.map((e) => e.status));
    return worst === 'applied' ? 'ok' : worst === 'failed' ? 'failed' : 'errors';
  }

  /** Atomically take an epoch: rename it into .processing. Whoever renames first owns it. */
  private async claim(epoch: string, dir: string): Promise<string | null> {
    const processing = posix.join(this.paths.upload, PROCESSING_DIR);
    const target = posix.join(processing, epoch);
    if (dir === target) return target; // recovering our own or an abandoned claim
    await this.session.mkdirp(processing);
    // Recorded before the rename: a worker killed right after renaming still leaves a lease
    // that the next run can see is dead.
    recordClaim(this.deps.db, this.tenant.id, epoch, this.deps.config.leaseSeconds);
    try {
      await this.session.rename(dir, target);
    } catch (err) {
      dropClaim(this.deps.db, this.tenant.id, epoch);
      if (!(await this.session.exists(dir))) {
        this.log.info({ epoch }, `epoch ${epoch} was claimed by another worker; skipped`);
        return null;
      }
      throw err;
    }
    return target;
  }

  private async abandonedClaims(): Promise<{ epoch: string; dir: string }[]> {
    const processing = posix.join(this.paths.upload, PROCESSING_DIR);
    if (!(await this.session.exists(processing))) return [];
    const found: { epoch: string; dir: string }[] = [];
    for (const e of await this.session.list(processing)) {
      if (e.type !== 'dir' || !EPOCH_RE.test(e.name)) continue;
      if (!claimIsAbandoned(this.deps.db, this.tenant.id, e.name, e.mtime, this.deps.config.leaseSeconds)) continue;
      recordClaim(this.deps.db, this.tenant.id, e.name, this.deps.config.leaseSeconds);
      this.log.warn({ epoch: e.name }, `recovering epoch ${e.name}: its claim was left by a worker that stopped`);
      found.push({ epoch: e.name, dir: posix.join(processing, e.name) });
    }
    return found.sort((a, b) => a.epoch.localeCompare(b.epoch));
  }

  private async heldEpochs(): Promise<{ epoch: string; dir: string }[]> {
    const held = posix.join(this.paths.upload, HELD_DIR);
    if (!(await this.session.exists(held))) return [];
    return (await this.session.list(held))
      .filter((e) => e.type === 'dir' && EPOCH_RE.test(e.name))
      .map((e) => ({ epoch: e.name, dir: posix.join(held, e.name) }))
      .sort((a, b) => a.epoch.localeCompare(b.epoch));
  }

  private noteStaleUploads(incomplete: { epoch: string; mtime: number }[]): string[] {
    const { db } = this.deps;
    const cutoff = Date.now() - this.tenant.staleAfterHours * 3600_000;
    const fresh: string[] = [];
    const now = new Date().toISOString();
    for (const { epoch, mtime } of incomplete) {
      if (mtime > cutoff) continue;
      const row = db.prepare('SELECT reported_at FROM stale_uploads WHERE tenant = ? AND epoch = ?').get(this.tenant.id, epoch) as
        | { reported_at: string | null }
        | undefined;
      if (row?.reported_at) continue;
      if (!this.opts.dryRun) {
        db.prepare(
          `INSERT INTO stale_uploads (tenant, epoch, first_seen, reported_at) VALUES (?, ?, ?, ?)
           ON CONFLICT (tenant, epoch) DO UPDATE SET reported_at = excluded.reported_at`,
        ).run(this.tenant.id, epoch, now, now);
      }
      this.log.warn({ epoch }, `upload ${epoch} never completed: it has no ${COMPLETE} file; it is left alone`);
      fresh.push(epoch);
    }
    return fresh;
  }

  /** Process every file of a claimed epoch, then file it away (bak, or .held). */
  private async processEpoch(epoch: string, dir: string): Promise<EpochOutcome> {
    const { session } = this;
    const entries = (await session.list(dir)).filter((e) => e.type === 'file' && e.name !== COMPLETE && !isOurOutput(e.name));
    const csvs = entries.sort((a, b) => a.name.localeCompare(b.name));
    const outcome: EpochOutcome = { epoch, status: 'applied', files: [], remotePath: dir };
    this.log.info({ epoch, files: csvs.map((f) => f.name) }, `processing epoch ${epoch}`);
    const expected = Object.keys(this.tenant.files).join(', ');
    if (csvs.length === 0) {
      outcome.files.push(this.rejectedWithoutImport(epoch, '(none)', `epoch ${epoch} has a COMPLETE file but no CSV files; upload the CSV files (${expected}) before COMPLETE`));
    }
    for (let i = 0; i < csvs.length; i++) {
      const name = csvs[i].name;
      const last = i === csvs.length - 1;
      const finish = (recorded: RecordedImport, file: FileImportResult | null) => {
        if (!last || this.opts.dryRun) return;
        const files = [...outcome.files, { ...(file ?? this.placeholder(name)), ...recorded }];
        const attempt = { ...outcome, files, status: worstStatus(files.map((f) => f.status)) };
        this.deps.report?.(this.deps.db, this.tenant, attempt, this.result.newlyStale, false);
      };
      outcome.files.push(await this.processFile(epoch, dir, name, finish));
    }
    outcome.status = worstStatus(outcome.files.map((f) => f.status));
    if (!this.opts.dryRun) outcome.remotePath = await this.fileAway(epoch, dir, outcome);
    return outcome;
  }

  private placeholder(file: string): FileImportResult {
    return { file, kind: '', status: 'applied', message: null, counts: emptyCounts(), importId: null, contentSha1: '', errorsCsv: null, sampleErrors: [] };
  }

  /** A file name the tenant's `files` does not map to a kind. */
  private misnamed(name: string): string {
    return `misnamed file "${name}"; expected one of ${Object.keys(this.tenant.files).map((f) => `"${f}"`).join(', ')}.`;
  }

  private rejectedWithoutImport(epoch: string, file: string, message: string): FileImportResult {
    this.log.warn({ epoch, file }, message);
    return { ...this.placeholder(file), status: 'rejected', message };
  }

  private async processFile(
    epoch: string,
    dir: string,
    name: string,
    finish: (recorded: RecordedImport, file: FileImportResult | null) => void,
  ): Promise<FileImportResult> {
    const { db } = this.deps;
    const kind = kindForFile(this.tenant, name);
    if (!kind || !isSafeName(name)) {
      const message = `${this.misnamed(name)} Rename it and upload the epoch again.`;
      return this.recordRejection(epoch, name, message, finish);
    }
    const local = path.join(this.workDir, epoch, name);
    await this.session.download(posix.join(dir, name), local);
    // The same content under the same epoch and name was applied already (a recovered claim):
    // never apply it twice. Different content under a reused epoch name is a new upload.
    const contentSha1 = await sha1File(local);
    const previous = db
      .prepare(`SELECT * FROM imports WHERE tenant = ? AND epoch = ? AND file = ? AND content_sha1 = ? AND status IN ('applied', 'applied with errors') ORDER BY id DESC LIMIT 1`)
      .get(this.tenant.id, epoch, name, contentSha1) as Record<string, unknown> | undefined;
    if (previous && !this.opts.dryRun) {
      this.log.info({ epoch, file: name }, `${name} of epoch ${epoch} was applied before (import ${String(previous.id)}); not applied again`);
      return importRowToResult(previous);
    }
    const result = await this.importLocal(epoch, name, kind, local, (recorded) => finish(recorded, null));
    this.logFileResult(epoch, result);
    return result;
  }

  private recordRejection(epoch: string, file: string, message: string, finish: (r: RecordedImport, f: FileImportResult | null) => void): FileImportResult {
    const result = this.rejectedWithoutImport(epoch, file, message);
    if (this.opts.dryRun) return result;
    const { db } = this.deps;
    db.transaction(() => {
      const importId = Number(
        db
          .prepare(`INSERT INTO imports (run_id, tenant, epoch, file, kind, status, message, actor, started_at, finished_at) VALUES (?, ?, ?, ?, NULL, 'rejected', ?, ?, ?, ?)`)
          .run(this.result.runId, this.tenant.id, epoch, file, message, this.tenant.options.actor, new Date().toISOString(), new Date().toISOString()).lastInsertRowid,
      );
      result.importId = importId;
      finish({ importId, status: 'rejected', counts: result.counts, message, errorsCsv: null, sampleErrors: [] }, result);
    })();
    return result;
  }

  private logFileResult(epoch: string, r: FileImportResult): void {
    const c = r.counts;
    const line = `${r.file}: ${r.status}${r.message ? ` - ${r.message}` : ''} (rows ${c.rows}, created ${c.created}, updated ${c.updated}, unchanged ${c.unchanged}, deactivated ${c.deactivated}, archived ${c.archived}, failed ${c.failed})`;
    if (r.status === 'applied') this.log.info({ epoch, file: r.file, ...c }, line);
    else this.log.warn({ epoch, file: r.file, ...c }, line);
  }

  /**
   * Writes result.json and errors.csv beside the upload, then moves the epoch to bak (or to
   * .held, where `run --now --force` finds it). The move is the last step: until then a crash
   * leaves the claim to be recovered, and the imports table stops a second application.
   */
  private async fileAway(epoch: string, dir: string, outcome: EpochOutcome): Promise<string> {
    const { session } = this;
    await this.writeResults(dir, outcome);
    await this.appendRemoteLog(epoch, outcome.files);
    const held = epochIsHeld(outcome);
    const parent = held ? posix.join(this.paths.upload, HELD_DIR) : this.paths.bak;
    if (posix.dirname(dir) === parent) return dir; // a held epoch being held again
    await session.mkdirp(parent);
    let target = posix.join(parent, epoch);
    for (let n = 2; await session.exists(target); n++) target = posix.join(parent, `${epoch}-${n}`);
    await session.rename(dir, target);
    dropClaim(this.deps.db, this.tenant.id, epoch);
    this.log.info({ epoch, to: target }, `moved epoch ${epoch} to ${target}`);
    return target;
  }

  private async writeResults(dir: string, outcome: EpochOutcome): Promise<void> {
    const withErrors = outcome.files.filter((f) => f.errorsCsv);
    for (const f of withErrors) {
      await this.session.write(posix.join(dir, errorsCsvName(f.file, outcome.files.length)), fs.readFileSync(f.errorsCsv!));
    }
    const summary = {
      tenant: this.tenant.id,
      epoch: outcome.epoch,
      status: outcome.status,
      processedAt: new Date().toISOString(),
      files: outcome.files.map((f) => ({
        file: f.file,
        kind: f.kind || null,
        status: f.status,
        message: f.message,
        ...f.counts,
        errorsCsv: f.errorsCsv ? errorsCsvName(f.file, outcome.files.length) : null,
      })),
    };
    await this.session.write(posix.join(dir, 'result.json'), JSON.stringify(summary, null, 2) + '\n');
  }

  private async appendRemoteLog(epoch: string, files: FileImportResult[]): Promise<void> {
    const logPath = this.paths.log;
    if (!logPath) return;
    try {
      await this.session.mkdirp(posix.dirname(logPath));
      // One line per file, whatever the file's name or the message hold.
      const clean = (v: string) => v.replace(/[\r\n\t]+/g, ' ').replace(/"/g, "'");
      const lines = files.map((f) => {
        const c = f.counts;
        return `${new Date().toISOString()} epoch=${epoch} file="${clean(f.file)}" status="${f.status}" rows=${c.rows} created=${c.created} updated=${c.updated} unchanged=${c.unchanged} deactivated=${c.deactivated} archived=${c.archived} failed=${c.failed}${f.contentSha1 ? ` sha1=${f.contentSha1}` : ''}${f.message ? ` message="${clean(f.message)}"` : ''}\n`;
      });
      await this.session.append(logPath, lines.join(''));
    } catch (err) {
      this.log.warn({ err: errorMessage(err) }, `could not append to the remote log ${logPath}`);
    }
  }

  /**
   * Keep-in-place files (Agylia's user-import.csv, a roster's students.csv): processed where
   * they lie when their content is new. The SHA1 is remembered here and written to the
   * tenant's tmp folder; deleting that hash file (or --force) makes the next run take it again.
   * A held file counts as seen too (like an epoch waiting in .held): it is not held again every
   * run, and `--force` applies it.
   */
  private async processKeepFiles(loose: { name: string; size: number; mtime: number }[]): Promise<void> {
    const { db } = this.deps;
    for (const f of loose) {
      if (this.interrupted()) return;
      const kind = kindForFile(this.tenant, f.name);
      if (!kind || !isSafeName(f.name)) continue;
      const remote = posix.join(this.paths.upload, f.name);
      // Never a file that is still being written: its size and mtime must have stood still.
      if (!hasSettled(db, this.tenant.id, remote, f.size, f.mtime, this.tenant.settleSeconds)) {
        this.result.settling.push(f.name);
        continue;
      }
      const local = path.join(this.workDir, 'keep', f.name);
      await this.session.download(remote, local);
      const sha1 = await sha1File(local);
      const hashFile = posix.join(this.paths.tmp, `${f.name}.sha1`);
      if (!this.opts.force && (await this.alreadyProcessed(remote, sha1, hashFile))) {
        this.log.debug({ file: f.name, sha1 }, `${f.name} has not changed since it was processed; skipped`);
        continue;
      }
      const epoch = await freeEpochName(this.session, this.deps.db, this.tenant);
      const outcome = await this.importInPlace(epoch, f.name, kind, local, remote, (recorded) => {
        // Same transaction as the import: the hash is known exactly when the import is recorded.
        db.prepare('INSERT OR REPLACE INTO content_hashes (tenant, path, sha1, import_id, seen_at) VALUES (?, ?, ?, ?, ?)').run(
          this.tenant.id, remote, sha1, recorded.importId, new Date().toISOString(),
        );
      });
      if (this.opts.dryRun) continue;
      // After the commit. A crash before this line leaves no hash file, so the next run takes
      // the file again; that is harmless, as the rows already applied come out "unchanged".
      await this.session.mkdirp(this.paths.tmp);
      await this.session.write(hashFile, `${sha1}  ${f.name}\n`);
      const bakDir = posix.join(this.paths.bak, epoch);
      await this.session.mkdirp(bakDir);
      await this.writeResults(bakDir, outcome);
      await this.appendRemoteLog(epoch, outcome.files);
    }
  }

  /**
   * Dry run of an `auto`/`all` tenant: the settled loose files a real run would move into new
   * epochs are checked in place, under the name they would get, and nothing is moved.
   */
  private async previewLooseFiles(loose: { name: string; size: number; mtime: number }[]): Promise<void> {
    for (const f of loose) {
      if (this.interrupted()) return;
      if (!isPromotable(this.tenant, f.name) || !isSafeName(f.name)) continue;
      const remote = posix.join(this.paths.upload, f.name);
      if (!hasSettled(this.deps.db, this.tenant.id, remote, f.size, f.mtime, this.tenant.settleSeconds)) {
        this.result.settling.push(f.name);
        continue;
      }
      const name = promotedName(this.tenant, f.name);
      const kind = kindForFile(this.tenant, name);
      const epoch = epochName(new Date());
      if (!kind) {
        this.result.epochs.push({ epoch, status: 'rejected', files: [this.rejectedWithoutImport(epoch, name, this.misnamed(name))], remotePath: remote });
        continue;
      }
      const local = path.join(this.workDir, 'preview', f.name);
      await this.session.download(remote, local);
      await this.importInPlace(epoch, name, kind, local, remote);
    }
  }

  /** Imports a file that stays where it is on the host; reports it like a one-file epoch. */
  private async importInPlace(
    epoch: string,
    name: string,
    kind: string,
    local: string,
    remote: string,
    alsoInTransaction?: (recorded: RecordedImport) => void,
  ): Promise<EpochOutcome> {
    const outcome: EpochOutcome = { epoch, status: 'applied', files: [], remotePath: remote };
    const result = await this.importLocal(epoch, name, kind, local, (recorded) => {
      alsoInTransaction?.(recorded);
      const files = [{ ...this.placeholder(name), ...recorded, kind }];
      this.deps.report?.(this.deps.db, this.tenant, { ...outcome, files, status: recorded.status }, this.result.newlyStale, false);
    });
    this.logFileResult(epoch, result);
    outcome.files.push(result);
    outcome.status = result.status;
    this.result.epochs.push(outcome);
    return outcome;
  }

  /** One downloaded file through check and apply, with this tenant's options and this run's mode. */
  private importLocal(epoch: string, name: string, kind: string, local: string, inTransaction: (recorded: RecordedImport) => void): Promise<FileImportResult> {
    return importFile({
      db: this.deps.db,
      kinds: this.deps.kinds,
      tenant: this.tenant.id,
      kind,
      options: this.tenant.options,
      encoding: this.tenant.encoding,
      localPath: local,
      errorsCsvPath: `${local}.errors.csv`,
      epoch,
      file: name,
      runId: this.result.runId,
      force: this.opts.force,
      mode: this.opts.dryRun ? 'dry-run' : 'apply',
      onProgress: (rows) => this.opts.onProgress?.(this.tenant.id, name, rows),
      inTransaction,
    });
  }

  private async alreadyProcessed(remote: string, sha1: string, hashFile: string): Promise<boolean> {
    const known = this.deps.db.prepare('SELECT 1 FROM content_hashes WHERE tenant = ? AND path = ? AND sha1 = ?').get(this.tenant.id, remote, sha1);
    if (!known) return false;
    try {
      return (await this.session.readText(hashFile)).trim().startsWith(sha1);
    } catch (err) {
      if (isNoSuchFile(err)) return false;
      throw err;
    }
  }
}

/** Files the worker itself writes next to an upload: never imported as data. */
function isOurOutput(name: string): boolean {
  return name === 'result.json' || name === 'errors.csv' || name.endsWith('.errors.csv');
}

export function errorsCsvName(file: string, filesInEpoch: number): string {
  return filesInEpoch === 1 ? 'errors.csv' : `${file.replace(/\.csv$/i, '')}.errors.csv`;
}

/** A recorded import (a row of `imports`) as a file result. */
export function importRowToResult(row: Record<string, unknown>): FileImportResult {
  const n = (k: string) => Number(row[k] ?? 0);
  return {
    file: String(row.file),
    kind: String(row.kind ?? ''),
    status: row.status as ImportStatus,
    message: (row.message as string | null) ?? null,
    counts: { rows: n('rows'), created: n('created'), updated: n('updated'), unchanged: n('unchanged'), deactivated: n('deactivated'), archived: n('archived'), failed: n('failed') },
    importId: n('id'),
    contentSha1: String(row.content_sha1 ?? ''),
    errorsCsv: null,
    sampleErrors: [],
  };
}

function ensureDir(dir: string): string {
  fs.mkdirSync(dir, { recursive: true });
  return dir;
}
