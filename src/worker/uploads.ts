// What is waiting in a tenant's upload folder: ready epochs, epochs still being uploaded,
// loose files to promote into epochs, and keep-in-place files.
import path from 'node:path/posix';
import type { TenantConfig } from '../config.js';
import type { Db } from '../db/database.js';
import type { Logger } from '../log.js';
import { type RemoteEntry, type SftpSession } from '../sftp/client.js';
import { forgetObservation, hasSettled } from './leases.js';

export const EPOCH_RE = /^\d{8}-\d{6}$/;
export const COMPLETE = 'COMPLETE';
export const PROCESSING_DIR = '.processing';
export const HELD_DIR = '.held';
const PROMOTING_PREFIX = '.promoting-';

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
}

export async function scanUpload(session: SftpSession, upload: string): Promise<UploadScan> {
  const entries = await session.list(upload);
  const scan: UploadScan = { ready: [], incomplete: [], loose: [] };
  for (const e of entries) {
    if (e.type === 'file') scan.loose.push(e);
    if (e.type !== 'dir' || !EPOCH_RE.test(e.name)) continue;
    const inside = await session.list(path.join(upload, e.name));
    if (inside.some((f) => f.name === COMPLETE && f.type === 'file')) scan.ready.push(e.name);
    else scan.incomplete.push({ epoch: e.name, mtime: Math.max(e.mtime, ...inside.map((f) => f.mtime)) });
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
 * Moves settled loose files into new epochs: `users_auto.csv` -> `<epoch>/users.csv` +
 * `COMPLETE`. The epoch is assembled under a dot-name and renamed into place last, so a crash
 * halfway never leaves a half-made epoch that looks ready (or one that looks abandoned).
 */
export async function promoteLooseFiles(
  session: SftpSession,
  db: Db,
  tenant: TenantConfig,
  loose: RemoteEntry[],
  log: Logger,
): Promise<{ promoted: string[]; settling: string[] }> {
  const upload = tenant.paths.upload;
  const promoted: string[] = [];
  const settling: string[] = [];
  await finishInterruptedPromotions(session, upload, log);
  for (const f of loose) {
    if (!isPromotable(tenant, f.name)) continue;
    const remote = path.join(upload, f.name);
    if (!hasSettled(db, tenant.id, remote, f.size, f.mtime, tenant.settleSeconds)) {
      settling.push(f.name);
      continue;
    }
    const target = promotedName(tenant, f.name);
    const epoch = await freeEpochName(session, db, tenant);
    const staging = path.join(upload, PROMOTING_PREFIX + epoch);
    await session.mkdirp(staging);
    await session.rename(remote, path.join(staging, target));
    await session.write(path.join(staging, COMPLETE), '');
    await session.rename(staging, path.join(upload, epoch));
    forgetObservation(db, tenant.id, remote);
    log.info({ file: f.name, epoch }, `moved ${f.name} into new epoch ${epoch}/${target}`);
    promoted.push(epoch);
  }
  return { promoted, settling };
}

/**
 * A new epoch name for the current time, moved on past any second already used by this tenant:
 * a folder in upload or bak, or an import record. Reusing one would make a new upload look like
 * one that was applied before.
 */
export async function freeEpochName(session: SftpSession, db: Db, tenant: TenantConfig): Promise<string> {
  const recorded = db.prepare('SELECT 1 FROM imports WHERE tenant = ? AND epoch = ? LIMIT 1');
  const { upload, bak } = tenant.paths;
  for (let t = Date.now(); ; t += 1000) {
    const name = epochName(new Date(t));
    if (recorded.get(tenant.id, name)) continue;
    const folders = [path.join(upload, name), path.join(upload, PROMOTING_PREFIX + name), path.join(bak, name)];
    let taken = false;
    for (const folder of folders) if (!taken) taken = (await session.exists(folder)) !== false;
    if (!taken) return name;
  }
}

async function finishInterruptedPromotions(session: SftpSession, upload: string, log: Logger): Promise<void> {
  for (const e of await session.list(upload)) {
    if (e.type !== 'dir' || !e.name.startsWith(PROMOTING_PREFIX)) continue;
    const epoch = e.name.slice(PROMOTING_PREFIX.length);
    if (!EPOCH_RE.test(epoch)) continue;
    const dir = path.join(upload, e.name);
    const inside = await session.list(dir);
    if (!inside.some((f) => f.name.toLowerCase().endsWith('.csv'))) continue;
    if (!inside.some((f) => f.name === COMPLETE)) await session.write(path.join(dir, COMPLETE), '');
    await session.rename(dir, path.join(upload, epoch));
    log.warn({ epoch }, `finished the promotion of epoch ${epoch} that an earlier run left halfway`);
  }
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
