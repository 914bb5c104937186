// Is a loose file (an `_auto.csv`, an OPS-COM drop, a keep-in-place file) ready to be taken
// *now*? Its modification time must be at least settleSeconds old (or we must have seen it
// unchanged that long: `put -p` keeps an old mtime while the upload runs), and its size and
// mtime must not change over a short re-check within this run — as Camel's readLock=changed.
// A file still being written is left, with the time after which it will be taken.
import path from 'node:path/posix';
import type { TenantConfig } from '../config.js';
import type { RemoteEntry, SftpSession } from '../sftp/client.js';
import type { Store } from '../store/types.js';

export interface SettlingFile {
  file: string;
  /** Why it was not taken. */
  reason: string;
  /** ISO time after which a run takes it (if it stays unchanged). */
  takeAfter: string;
}

export interface SettleResult {
  ready: RemoteEntry[];
  settling: SettlingFile[];
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function checkSettled(
  ctx: { session: SftpSession; store: Store; tenant: TenantConfig; recheckSeconds: number },
  dir: string,
  files: RemoteEntry[],
): Promise<SettleResult> {
  const { tenant, store, session } = ctx;
  const settleMs = tenant.settleSeconds * 1000;
  const result: SettleResult = { ready: [], settling: [] };
  const candidates: RemoteEntry[] = [];
  // The store's clock, as the first sightings it keeps (several workers see the same file).
  const now = (await store.now()).getTime();
  for (const f of files) {
    const remote = path.join(dir, f.name);
    const { since } = await store.uploads.observe(tenant.id, remote, f.size, f.mtime);
    const stillSince = Math.min(f.mtime, Date.parse(since));
    if (settleMs > 0 && now - f.mtime < settleMs && now - Date.parse(since) < settleMs) {
      result.settling.push({ file: f.name, reason: `changed less than ${tenant.settleSeconds} s ago`, takeAfter: new Date(stillSince + settleMs).toISOString() });
    } else candidates.push(f);
  }
  if (candidates.length === 0 || settleMs === 0 || ctx.recheckSeconds <= 0) {
    result.ready.push(...candidates);
    return result;
  }
  await sleep(ctx.recheckSeconds * 1000);
  for (const f of candidates) {
    let again: { size: number; mtime: number } | null;
    try {
      again = await session.stat(path.join(dir, f.name));
    } catch {
      again = null; // gone meanwhile
    }
    if (again && again.size === f.size && again.mtime === f.mtime) {
      result.ready.push(f);
      continue;
    }
    if (again) {
      const { since } = await store.uploads.observe(tenant.id, path.join(dir, f.name), again.size, again.mtime);
      result.settling.push({ file: f.name, reason: 'it changed while we looked: still being written', takeAfter: new Date(Date.parse(since) + settleMs).toISOString() });
    }
  }
  return result;
}
