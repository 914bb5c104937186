// The daemons table (migration 2): each running `provisioner run` keeps a row with a heartbeat,
// so that `trigger` can tell a support engineer whether anyone will act on the request, and
// `status` can say whether the service is up. On this machine the pid settles it (a killed
// daemon never writes stopped_at); across machines only the heartbeat can.
import os from 'node:os';
import type { Db } from '../db/database.js';
import { ownerIsAlive, workerId } from '../worker/leases.js';

/** How often a daemon writes its heartbeat. */
export const HEARTBEAT_MS = 5_000;
/** A daemon on another machine whose heartbeat is older than this is taken for dead. */
export const HEARTBEAT_STALE_MS = 60_000;
/**
 * On this machine a live pid is trusted much longer: applying a large file is one synchronous
 * SQLite transaction, during which the daemon cannot beat; it is busy, not gone.
 */
const SAME_HOST_STALE_MS = 30 * 60_000;

export interface DaemonInfo {
  owner: string;
  startedAt: string;
  heartbeatAt: string;
  tenants: string[];
}

interface DaemonRow {
  owner: string;
  started_at: string;
  heartbeat_at: string;
  stopped_at: string | null;
  tenants: string;
}

export function registerDaemon(db: Db, tenants: string[]): void {
  const now = new Date().toISOString();
  db.prepare(
    `INSERT INTO daemons (owner, started_at, heartbeat_at, stopped_at, tenants) VALUES (?, ?, ?, NULL, ?)
     ON CONFLICT (owner) DO UPDATE SET started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at,
       stopped_at = NULL, tenants = excluded.tenants`,
  ).run(workerId, now, now, JSON.stringify(tenants));
}

export function beat(db: Db): void {
  db.prepare('UPDATE daemons SET heartbeat_at = ? WHERE owner = ?').run(new Date().toISOString(), workerId);
}

export function unregisterDaemon(db: Db): void {
  db.prepare('UPDATE daemons SET stopped_at = ? WHERE owner = ?').run(new Date().toISOString(), workerId);
}

function isLive(row: DaemonRow, now: number): boolean {
  if (row.stopped_at !== null) return false;
  const age = now - Date.parse(row.heartbeat_at);
  const here = row.owner.slice(0, row.owner.lastIndexOf(':')) === os.hostname();
  return here ? ownerIsAlive(row.owner) && age < SAME_HOST_STALE_MS : age < HEARTBEAT_STALE_MS;
}

/** Daemons that appear to be running now, oldest first. */
export function liveDaemons(db: Db): DaemonInfo[] {
  const now = Date.now();
  const rows = db.prepare('SELECT * FROM daemons WHERE stopped_at IS NULL ORDER BY started_at').all() as DaemonRow[];
  return rows
    .filter((r) => isLive(r, now))
    .map((r) => ({ owner: r.owner, startedAt: r.started_at, heartbeatAt: r.heartbeat_at, tenants: JSON.parse(r.tenants) as string[] }));
}

/** The live daemon that serves `tenant`, if any. */
export function daemonFor(db: Db, tenant: string): DaemonInfo | undefined {
  return liveDaemons(db).find((d) => d.tenants.includes(tenant));
}

/** Is `owner` (host:pid) a daemon that is still running? */
export function daemonIsLive(db: Db, owner: string): boolean {
  const row = db.prepare('SELECT * FROM daemons WHERE owner = ?').get(owner) as DaemonRow | undefined;
  return !!row && isLive(row, Date.now());
}
