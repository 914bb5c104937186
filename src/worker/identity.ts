// Who this process is, for leases, claims, runs and triggers: host, pid and a random part (a pid
// is reused after a restart; a lease held by the process that had it before must not look live).
// Worker threads of the daemon share their process's identity (it comes in their workerData).
import crypto from 'node:crypto';
import os from 'node:os';
import { isMainThread, workerData } from 'node:worker_threads';

const inherited = !isMainThread ? (workerData as { processId?: string } | null)?.processId : undefined;

/**
 * This machine's name in identities and in the daemons table. PROVISIONER_TEST_HOSTNAME stands in
 * for it, for tests only: processes on one machine then look like workers on machines of their
 * own, so a killed one is recovered by its leases running out, as across machines, and not at
 * once by its pid (which only a process on the same machine can check).
 */
export const hostName: string = process.env.PROVISIONER_TEST_HOSTNAME || os.hostname();

export const processId: string = inherited ?? `${hostName}:${process.pid}:${crypto.randomBytes(4).toString('hex')}`;

/** The random part of an owner id (`host:pid:random`), or null for an older `host:pid`. */
export function tokenOf(owner: string): string | null {
  const parts = owner.split(':');
  const last = parts[parts.length - 1];
  return parts.length >= 3 && /^[0-9a-f]+$/.test(last) && /^\d+$/.test(parts[parts.length - 2]) ? last : null;
}

/** This process's random identity: unlike its pid, never the same for two processes. */
export const processToken: string = tokenOf(processId) ?? crypto.randomBytes(4).toString('hex');

/** host and pid of an owner id (`host:pid:random`, or an older `host:pid`). */
export function parseOwner(owner: string): { host: string; pid: number } {
  const parts = owner.split(':');
  const tail = parts.length >= 3 && /^[0-9a-f]+$/.test(parts[parts.length - 1]) && /^\d+$/.test(parts[parts.length - 2]) ? 2 : 1;
  return { host: parts.slice(0, parts.length - tail).join(':'), pid: Number(parts[parts.length - tail]) };
}

/**
 * Is the owner of a lease certainly gone? Only a process on this machine can be known to be
 * gone (its pid no longer runs, or now belongs to another incarnation); elsewhere the lease's
 * expiry decides.
 */
export function ownerIsGone(owner: string): boolean {
  if (owner === processId) return false;
  const { host, pid } = parseOwner(owner);
  if (host !== hostName || !Number.isInteger(pid) || pid <= 0) return false;
  if (pid === process.pid) return true; // this pid, another incarnation: it died
  try {
    process.kill(pid, 0);
    return false;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ESRCH';
  }
}

/** `$USER@host`: who asked, for the audit trail. */
export function requester(): string {
  let user = process.env.USER ?? process.env.LOGNAME;
  if (!user) {
    try {
      user = os.userInfo().username;
    } catch {
      user = 'unknown';
    }
  }
  return `${user}@${hostName}`;
}
