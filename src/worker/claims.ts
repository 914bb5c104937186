// Claims: an epoch is taken by renaming it into .processing on the SFTP host (whoever renames
// first owns it), with a lease in the store and the same lease in a claim file beside the upload,
// for a worker that shares no database with us. A claim is taken over only when its owner is
// gone: its lease ran out, or its process is known to have died. Every time here is the store's
// clock, so workers whose clocks differ agree on when a lease runs out.
import posix from 'node:path/posix';
import { errorMessage, RemoteError } from '../errors.js';
import type { RunContext } from './context.js';
import { ownerIsGone, processId } from './identity.js';
import { CLAIM_FILE, EPOCH_RE, PROCESSING_DIR } from './uploads.js';

/** Atomically take an epoch: rename it into .processing. Whoever renames first owns it. */
export async function claimEpoch(ctx: RunContext, epoch: string, dir: string): Promise<string | null> {
  const { session, tenant, deps } = ctx;
  const processing = posix.join(tenant.paths.upload, PROCESSING_DIR);
  const target = posix.join(processing, epoch);
  await session.mkdirp(processing);
  // Recorded before the rename: a worker killed right after renaming still leaves a lease that
  // the next run can see is dead.
  await deps.store.leases.recordClaim(tenant.id, epoch, processId, deps.config.leaseSeconds);
  try {
    await session.rename(dir, target);
  } catch (err) {
    await deps.store.leases.dropClaim(tenant.id, epoch);
    if (err instanceof RemoteError && err.connectionLost) throw err;
    if (!(await session.exists(dir))) {
      ctx.log.info({ epoch }, `epoch ${epoch} was claimed by another worker; skipped`);
      return null;
    }
    throw err;
  }
  await writeClaimFile(ctx, epoch, target);
  return target;
}

/** The claim, on the host too: for a worker that shares no database with us. Its lease is by the store's clock. */
export async function writeClaimFile(ctx: RunContext, epoch: string, dir: string): Promise<void> {
  ctx.claimed.set(epoch, dir);
  const now = (await ctx.deps.store.now()).getTime();
  const claim = { owner: processId, claimedAt: new Date(now).toISOString(), expiresAt: new Date(now + ctx.deps.config.leaseSeconds * 1000).toISOString() };
  try {
    await ctx.session.write(posix.join(dir, CLAIM_FILE), JSON.stringify(claim) + '\n');
  } catch (err) {
    if (err instanceof RemoteError && err.connectionLost) throw err;
    ctx.log.warn({ epoch, err: errorMessage(err) }, `could not write the claim file of ${epoch}; the database lease still holds it`);
  }
}

/**
 * Claims in .processing whose owner is gone: their lease expired or their process died (by the
 * database), or, for a claim our database does not know, its claim file's lease ran out. A
 * claim with neither is abandoned (no guessing from a folder's modification time).
 */
export async function abandonedClaims(ctx: RunContext): Promise<{ epoch: string; dir: string }[]> {
  const { session, tenant, deps } = ctx;
  const processing = posix.join(tenant.paths.upload, PROCESSING_DIR);
  const found: { epoch: string; dir: string }[] = [];
  const entries = await session.list(processing);
  const now = (await deps.store.now()).toISOString();
  for (const e of entries) {
    if (e.type !== 'dir' || !EPOCH_RE.test(e.name)) continue;
    const dir = posix.join(processing, e.name);
    const claim = (await deps.store.leases.claim(tenant.id, e.name)) ?? (await claimFile(ctx, dir));
    if (claim && claim.owner !== processId && claim.expiresAt > now && !ownerIsGone(claim.owner)) {
      ctx.log.info({ epoch: e.name, owner: claim.owner, expiresAt: claim.expiresAt }, `epoch ${e.name} is being processed by ${claim.owner} (its lease runs until ${claim.expiresAt}); left to it`);
      continue;
    }
    ctx.log.warn({ epoch: e.name, owner: claim?.owner }, `recovering epoch ${e.name}: its claim was left by a worker that stopped`);
    await deps.store.leases.recordClaim(tenant.id, e.name, processId, deps.config.leaseSeconds);
    await writeClaimFile(ctx, e.name, dir);
    found.push({ epoch: e.name, dir });
  }
  if (entries.length === 0) await session.rmdir(processing).catch(() => {});
  return found.sort((a, b) => a.epoch.localeCompare(b.epoch));
}

/** The owner and lease a claim file records, or null (none, or unreadable: then the claim counts as abandoned). */
async function claimFile(ctx: RunContext, dir: string): Promise<{ owner: string; expiresAt: string } | null> {
  try {
    const claim = JSON.parse(await ctx.session.readText(posix.join(dir, CLAIM_FILE))) as { owner?: unknown; expiresAt?: unknown };
    if (typeof claim.owner !== 'string' || typeof claim.expiresAt !== 'string' || Number.isNaN(Date.parse(claim.expiresAt))) return null;
    // Compared as the store gives times (ISO in UTC), whatever form the file has.
    return { owner: claim.owner, expiresAt: new Date(claim.expiresAt).toISOString() };
  } catch (err) {
    if (err instanceof RemoteError && err.connectionLost) throw err;
    return null;
  }
}
