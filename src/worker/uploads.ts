// What is waiting in a tenant's upload folder (ready epochs, epochs still being uploaded, loose
// files, links), the names we give epochs, and turning a settled loose file into an epoch.
import path from 'node:path/posix';
import type { TenantConfig } from '../config.js';
import type { Logger } from '../log.js';
import { nameProblem, type RemoteEntry, type SftpSession } from '../sftp/client.js';
import type { Store } from '../store/types.js';
import { printable } from '../text.js';

export const EPOCH_RE = /^\d{8}-\d{6}$/;
export const COMPLETE = 'COMPLETE';
export const PROCESSING_DIR = '.processing';
export const HELD_DIR = '.held';
export const PROMOTING_PREFIX = '.promoting-';
/** Written into a claimed epoch: who holds it and until when (read by workers that share no database with us). */
export const CLAIM_FILE = '.provisioner-claim.json';

/** `YYYYMMDD-HHMMSS` in UTC. */
export function epochName(at: Date): string {
  return at.toISOString().replace(/[-:]/g, '').replace('T', '-').slice(0, 15);
}

export interface UploadScan {
  /** Ready epochs (with COMPLETE), oldest first. */
  ready: string[];
  /** Epochs without COMPLETE: left alone. */
  incomplete: { epoch: string; mtime: number }[];
  /** Plain files directly in the upload folder. */
  loose: RemoteEntry[];
  /** Symbolic links and other entries that are not plain files or folders. */
  links: RemoteEntry[];
  /** Files (and links) whose names we will not take (nameProblem), with why. */
  badNames: { entry: RemoteEntry; problem: string }[];
  /** Our own folders present: .processing, .held, .promoting-<epoch>. */
  ours: string[];
}

export async function scanUpload(session: SftpSession, upload: string): Promise<UploadScan> {
  const entries = await session.list(upload);
  const scan: UploadScan = { ready: [], incomplete: [], loose: [], links: [], badNames: [], ours: [] };
  for (const e of entries) {
    const problem = e.type === 'dir' ? null : nameProblem(e.name);
    if (problem) scan.badNames.push({ entry: e, problem });
    else if (e.type === 'file') scan.loose.push(e);
    else if (e.type === 'link' || e.type === 'other') scan.links.push(e);
    else if (e.name === PROCESSING_DIR || e.name === HELD_DIR || e.name.startsWith(PROMOTING_PREFIX)) scan.ours.push(e.name);
    else if (EPOCH_RE.test(e.name)) {
      const inside = await session.list(path.join(upload, e.name));
      if (inside.some((f) => f.name === COMPLETE && f.type === 'file')) scan.ready.push(e.name);
      else scan.incomplete.push({ epoch: e.name, mtime: Math.max(e.mtime, ...inside.map((f) => f.mtime)) });
    }
  }
  scan.ready.sort();
  return scan;
}

/** Is this loose file one the tenant wants turned into an epoch? */
export function isPromotable(tenant: TenantConfig, name: string): boolean {
  if (tenant.loose === 'auto') return /_auto\.csv$/i.test(name);
  if (tenant.loose === 'all') return /\.csv$/i.test(name);
  return false;
}

/** The name a promoted file gets in its epoch: `users_auto.csv` -> `users.csv`; `all` keeps it. */
export function promotedName(tenant: TenantConfig, name: string): string {
  return tenant.loose === 'auto' ? name.replace(/_auto\.csv$/i, '.csv') : name;
}

/**
 * Moves a settled loose file into a new epoch: `users_auto.csv` -> `<epoch>/users.csv` +
 * `COMPLETE`. The epoch is assembled under a dot-name and renamed into place last, so a crash
 * halfway never leaves a half-made epoch that looks ready (or one that looks abandoned).
 */
export async function promote(session: SftpSession, store: Store, tenant: TenantConfig, file: RemoteEntry, log: Logger): Promise<string> {
  const upload = tenant.paths.upload;
  const target = promotedName(tenant, file.name);
  const epoch = await freeEpochName(session, store, tenant);
  const staging = path.join(upload, PROMOTING_PREFIX + epoch);
  await session.mkdirp(staging);
  await session.rename(path.join(upload, file.name), path.join(staging, target));
  await session.write(path.join(staging, COMPLETE), '');
  await session.rename(staging, path.join(upload, epoch));
  await store.uploads.forget(tenant.id, path.join(upload, file.name));
  log.info({ file: file.name, epoch }, `moved ${printable(file.name)} into new epoch ${epoch}/${printable(target)}`);
  return epoch;
}

/**
 * A new epoch name for the current time, moved on past any second already used by this tenant:
 * a folder in upload or bak, or a recorded import or outcome. Reusing one would make a new
 * upload look like one that was applied before.
 */
export async function freeEpochName(session: SftpSession, store: Store, tenant: TenantConfig): Promise<string> {
  const { upload, bak } = tenant.paths;
  for (let t = Date.now(); ; t += 1000) {
    const name = epochName(new Date(t));
    if (await store.uploads.epochUsed(tenant.id, name)) continue;
    const folders = [path.join(upload, name), path.join(upload, PROMOTING_PREFIX + name), path.join(bak, name)];
    let taken = false;
    for (const folder of folders) if (!taken) taken = (await session.exists(folder)) !== false;
    if (!taken) return name;
  }
}

/** Promotions an earlier run left halfway are finished (returns their epochs, ready now); empty leftovers removed. */
export async function finishInterruptedPromotions(session: SftpSession, upload: string, names: string[], log: Logger): Promise<string[]> {
  const finished: string[] = [];
  for (const name of names) {
    if (!name.startsWith(PROMOTING_PREFIX)) continue;
    const epoch = name.slice(PROMOTING_PREFIX.length);
    const dir = path.join(upload, name);
    const inside = await session.list(dir);
    if (!EPOCH_RE.test(epoch) || !inside.some((f) => f.name.toLowerCase().endsWith('.csv'))) {
      if (inside.filter((f) => f.name !== COMPLETE).length === 0) {
        if (inside.length) await session.remove(path.join(dir, COMPLETE));
        await session.rmdir(dir);
        log.info({ folder: name }, `removed the empty folder ${printable(name)} an earlier run left`);
      }
      continue;
    }
    if (!inside.some((f) => f.name === COMPLETE)) await session.write(path.join(dir, COMPLETE), '');
    await session.rename(dir, path.join(upload, epoch));
    log.warn({ epoch }, `finished the promotion of epoch ${epoch} that an earlier run left halfway`);
    finished.push(epoch);
  }
  return finished;
}

/** Which kind a file name maps to (exact name first, then globs), or undefined. */
export function kindForFile(tenant: TenantConfig, name: string): string | undefined {
  const lower = name.toLowerCase();
  for (const [pattern, kind] of Object.entries(tenant.files)) {
    if (pattern.toLowerCase() === lower) return kind;
  }
  for (const [pattern, kind] of Object.entries(tenant.files)) {
    if (/[*?]/.test(pattern) && globToRegExp(pattern).test(name)) return kind;
  }
  return undefined;
}

function globToRegExp(glob: string): RegExp {
  const body = glob.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.');
  return new RegExp(`^${body}$`, 'i');
}
