// Leases kept in SQLite: the per-tenant lock (never two runs of one tenant at once, across
// processes sharing the database) and the record of claimed epochs. A lease is dead when it
// has expired, or when its owner is a process on this host that no longer exists.
import os from 'node:os';
import type { Db } from '../db/database.js';

export const workerId = `${os.hostname()}:${process.pid}`;

export function ownerIsAlive(owner: string): boolean {
  const i = owner.lastIndexOf(':');
  const host = owner.slice(0, i);
  const pid = Number(owner.slice(i + 1));
  if (host !== os.hostname() || !Number.isInteger(pid)) return true; // cannot tell: trust the expiry
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

const inSeconds = (s: number): string => new Date(Date.now() + s * 1000).toISOString();

function leaseIsLive(row: { owner: string; expires_at: string } | undefined): boolean {
  return !!row && row.expires_at > new Date().toISOString() && ownerIsAlive(row.owner);
}

/** Takes the tenant's lock, or returns who holds it. */
export function tryLockTenant(db: Db, tenant: string, leaseSeconds: number): { ok: true } | { ok: false; owner: string } {
  return db
    .transaction(() => {
      const row = db.prepare('SELECT owner, expires_at FROM tenant_locks WHERE tenant = ?').get(tenant) as
        | { owner: string; expires_at: string }
        | undefined;
      if (row && row.owner !== workerId && leaseIsLive(row)) return { ok: false as const, owner: row.owner };
      db.prepare(
        `INSERT INTO tenant_locks (tenant, owner, acquired_at, expires_at) VALUES (?, ?, ?, ?)
         ON CONFLICT (tenant) DO UPDATE SET owner = excluded.owner, acquired_at = excluded.acquired_at, expires_at = excluded.expires_at`,
      ).run(tenant, workerId, new Date().toISOString(), inSeconds(leaseSeconds));
      return { ok: true as const };
    })
    .immediate();
}

export function renewTenantLock(db: Db, tenant: string, leaseSeconds: number): void {
  db.prepare('UPDATE tenant_locks SET expires_at = ? WHERE tenant = ? AND owner = ?').run(inSeconds(leaseSeconds), tenant, workerId);
  db.prepare('UPDATE claims SET expires_at = ? WHERE tenant = ? AND owner = ?').run(inSeconds(leaseSeconds), tenant, workerId);
}

export function releaseTenantLock(db: Db, tenant: string): void {
  db.prepare('DELETE FROM tenant_locks WHERE tenant = ? AND owner = ?').run(tenant, workerId);
}

export function recordClaim(db: Db, tenant: string, epoch: string, leaseSeconds: number): void {
  db.prepare(
    `INSERT INTO claims (tenant, epoch, owner, claimed_at, expires_at) VALUES (?, ?, ?, ?, ?)
     ON CONFLICT (tenant, epoch) DO UPDATE SET owner = excluded.owner, claimed_at = excluded.claimed_at, expires_at = excluded.expires_at`,
  ).run(tenant, epoch, workerId, new Date().toISOString(), inSeconds(leaseSeconds));
}

/** May a claim found in .processing be taken over? Only when nobody live holds it. */
export function claimIsAbandoned(db: Db, tenant: string, epoch: string, remoteMtime: number, leaseSeconds: number): boolean {
  const row = db.prepare('SELECT owner, expires_at FROM claims WHERE tenant = ? AND epoch = ?').get(tenant, epoch) as
    | { owner: string; expires_at: string }
    | undefined;
  if (row) return row.owner === workerId || !leaseIsLive(row);
  // Claimed by a worker that shares no database with us: trust the remote time only.
  return Date.now() - remoteMtime > leaseSeconds * 1000;
}

export function dropClaim(db: Db, tenant: string, epoch: string): void {
  db.prepare('DELETE FROM claims WHERE tenant = ? AND epoch = ?').run(tenant, epoch);
}

/**
 * Records a sighting of a loose file; true once its size and mtime have stayed the same for
 * `settleSeconds` by our clock. The remote mtime alone cannot be trusted (`put -p` keeps an
 * old one while the upload is still running).
 */
export function hasSettled(db: Db, tenant: string, path: string, size: number, mtime: number, settleSeconds: number): boolean {
  const row = db.prepare('SELECT size, mtime, first_seen FROM file_observations WHERE tenant = ? AND path = ?').get(tenant, path) as
    | { size: number; mtime: number; first_seen: string }
    | undefined;
  const now = new Date();
  if (!row || row.size !== size || row.mtime !== mtime) {
    db.prepare(
      `INSERT INTO file_observations (tenant, path, size, mtime, first_seen) VALUES (?, ?, ?, ?, ?)
       ON CONFLICT (tenant, path) DO UPDATE SET size = excluded.size, mtime = excluded.mtime, first_seen = excluded.first_seen`,
    ).run(tenant, path, size, mtime, now.toISOString());
    return settleSeconds === 0;
  }
  return now.getTime() - Date.parse(row.first_seen) >= settleSeconds * 1000;
}

export function forgetObservation(db: Db, tenant: string, path: string): void {
  db.prepare('DELETE FROM file_observations WHERE tenant = ? AND path = ?').run(tenant, path);
}
