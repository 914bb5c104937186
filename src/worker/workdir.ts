// The local scratch folder. Each process works in its own folder under workDir (downloaded CSVs
// hold passwords, for a roster), removes what it made on every path, and at start removes what
// a killed process left behind.
import fs from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';

const OURS = /^(\d+)-[0-9a-f]{8}$/;
const DAY_MS = 24 * 3600_000;

function alive(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Removes folders of processes that are gone (and anything else older than a day). Returns them. */
export function sweepWorkDir(workDir: string): string[] {
  let entries: fs.Dirent[];
  try {
    entries = fs.readdirSync(workDir, { withFileTypes: true });
  } catch {
    return [];
  }
  const removed: string[] = [];
  for (const e of entries) {
    const full = path.join(workDir, e.name);
    const m = OURS.exec(e.name);
    let stale: boolean;
    if (m) stale = !alive(Number(m[1]));
    else {
      try {
        stale = Date.now() - fs.statSync(full).mtimeMs > DAY_MS;
      } catch {
        continue;
      }
    }
    if (!stale) continue;
    fs.rmSync(full, { recursive: true, force: true });
    removed.push(e.name);
  }
  return removed;
}

/** A fresh folder for one run (mode 0700: downloads may hold passwords). */
export function makeRunDir(workDir: string): string {
  const mine = path.join(workDir, `${process.pid}-${crypto.randomBytes(4).toString('hex')}`);
  fs.mkdirSync(mine, { recursive: true, mode: 0o700 });
  return mine;
}
