// The local scratch folder. Each run works in a folder of its own under workDir (downloaded CSVs
// hold passwords, for a roster), named after the process's random identity, not its pid: a pid
// is reused (a container's process is always PID 1), so a folder named by pid could look alive
// forever. A run removes its folder on every path; what a killed process left is removed by the
// next start (and by the daemon's housekeeping) once its owner holds no live lease.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { processToken } from './identity.js';

/** `w-<process identity>-<run>`. */
const OURS = /^w-([0-9a-f]+)-[0-9a-f]{8}$/;
/** What versions before identities made: `<pid>-<random>`. */
const BY_PID = /^(\d+)-[0-9a-f]{8}$/;
const DAY_MS = 24 * 3600_000;

/** The processes running a tenant now (holding its lease): their identities, and their pids on this machine. */
export interface LiveOwners {
  tokens: Set<string>;
  pids: Set<number>;
}

/**
 * Removes the folders whose owner is not running: every `w-<identity>-…` folder whose identity
 * is neither ours nor among `live()` (from the store's leases); a folder named by pid (older
 * versions) whose pid holds no lease either; anything else older than a day. `live()` null (the
 * store could not be asked): only what is older than a day. Returns the names removed.
 */
export async function sweepWorkDir(workDir: string, live: () => Promise<LiveOwners | null>): Promise<string[]> {
  let entries: fs.Dirent[];
  try {
    entries = fs.readdirSync(workDir, { withFileTypes: true });
  } catch {
    return [];
  }
  if (entries.length === 0) return [];
  // Listed first, asked second: a run takes its lease before it makes its folder, so the owner
  // of every folder listed here is among the live ones if it still runs.
  const owners = await live();
  const removed: string[] = [];
  for (const e of entries) {
    const full = path.join(workDir, e.name);
    let age: number;
    try {
      age = Date.now() - fs.statSync(full).mtimeMs;
    } catch {
      continue; // removed meanwhile
    }
    const ours = OURS.exec(e.name);
    const byPid = BY_PID.exec(e.name);
    let stale: boolean;
    if (ours) stale = ours[1] !== processToken && (owners ? !owners.tokens.has(ours[1]) : age > DAY_MS);
    else if (byPid) stale = owners ? !owners.pids.has(Number(byPid[1])) : age > DAY_MS;
    else stale = age > DAY_MS;
    if (!stale) continue;
    fs.rmSync(full, { recursive: true, force: true });
    removed.push(e.name);
  }
  return removed;
}

/** A fresh folder for one run (mode 0700: downloads may hold passwords). */
export function makeRunDir(workDir: string): string {
  const mine = path.join(workDir, `w-${processToken}-${crypto.randomBytes(4).toString('hex')}`);
  fs.mkdirSync(mine, { recursive: true, mode: 0o700 });
  return mine;
}
