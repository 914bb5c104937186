// provisioner as a black box: a work folder with config.yaml and its database, uploads put on
// the SFTP server's disk, and the real CLI (dist/src/cli.js) run as a measured child process.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import { withCleanup } from './cleanup.js';
import { measure, start, tail, type Measurement, type RunningChild } from './measure.js';

const here = path.dirname(fileURLToPath(import.meta.url)); // dist/bench
export const CLI = path.resolve(here, '../src/cli.js');

export const MiB = 1024 * 1024;
export const mib = (bytes: number): number => Math.round((bytes / MiB) * 10) / 10;
export const round = (n: number, digits = 2): number => Math.round(n * 10 ** digits) / 10 ** digits;
export const fmt = (n: number): string => n.toLocaleString('en-US');
export const say = (line: string): void => void process.stderr.write(`${line}\n`);

/** Flush dirty pages so that one step's disk writeback does not land in the next step's time. */
export function syncDisks(): void {
  spawnSync('sync', { stdio: 'ignore' });
}

/** A temporary folder removed on every path (call the result to remove it now). */
export function tempDir(prefix: string): { dir: string; remove: () => Promise<void> } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  return { dir, remove: withCleanup(() => fs.rmSync(dir, { recursive: true, force: true })) };
}

let epochCounter = 0;

/** A fresh epoch name (`YYYYMMDD-HHMMSS`), later than every one handed out before. */
export function nextEpoch(): string {
  epochCounter++;
  return `20250101-${String(Math.floor(epochCounter / 3600) % 24).padStart(2, '0')}${String(Math.floor(epochCounter / 60) % 60).padStart(2, '0')}${String(epochCounter % 60).padStart(2, '0')}`;
}

/**
 * Puts an epoch where a district's nightly job leaves it: `<root><upload>/<epoch>/` with the
 * files (hard links to generated files, or copies), then COMPLETE. Returns the remote path.
 */
export function putEpoch(serverRoot: string, upload: string, epoch: string, files: Record<string, string>): string {
  const dir = path.join(serverRoot, upload, epoch);
  fs.mkdirSync(dir, { recursive: true });
  for (const [name, source] of Object.entries(files)) {
    try {
      fs.linkSync(source, path.join(dir, name));
    } catch {
      fs.copyFileSync(source, path.join(dir, name));
    }
  }
  fs.writeFileSync(path.join(dir, 'COMPLETE'), '');
  return `${upload}/${epoch}`;
}

export interface ImportCounts {
  rows: number;
  created: number;
  updated: number;
  unchanged: number;
  deactivated: number;
  archived: number;
  failed: number;
}

/** What `run --now --json` prints, as far as the benchmark reads it. */
export interface TenantJson {
  tenant: string;
  status: string;
  message: string | null;
  epochs: Array<{ epoch: string; status: string; files: Array<{ file: string; status: string; message: string | null; counts: ImportCounts }> }>;
}

export interface CliRun {
  m: Measurement;
  json: unknown;
  stderrFile: string;
  /** Why the run does not count, if it does not (exit code, time-out, …). */
  problem: string | null;
}

export interface CliOptions {
  /** Names the output files in `work`. */
  label: string;
  timeoutSeconds: number;
  /** Extra node flags (--cpu-prof …). */
  nodeArgs?: string[];
  /** Exit codes that count as success (default [0]). */
  okCodes?: number[];
}

/** `node dist/src/cli.js --config <config> …args`, measured; stdout parsed as JSON when it is. */
export async function runCli(work: string, config: string, args: string[], o: CliOptions): Promise<CliRun> {
  const stdoutFile = path.join(work, `${o.label}.stdout`);
  const stderrFile = path.join(work, `${o.label}.stderr`);
  syncDisks();
  const m = await measure(process.execPath, [...(o.nodeArgs ?? []), CLI, '--config', config, ...args], {
    cwd: work,
    stdoutFile,
    stderrFile,
    timeoutSeconds: o.timeoutSeconds,
  });
  let json: unknown = null;
  try {
    json = JSON.parse(fs.readFileSync(stdoutFile, 'utf8'));
  } catch {
    // not JSON: the problem below says why
  }
  let problem: string | null = null;
  if (m.timedOut) problem = `timed out after ${o.timeoutSeconds} s (--timeout)`;
  else if (!(o.okCodes ?? [0]).includes(m.code ?? -1)) problem = `exited with ${m.code ?? m.signal}: ${lastLines(stderrFile)}`;
  return { m, json, stderrFile, problem };
}

/** The result of one file of one tenant in `run --now --json` output. */
export function fileResult(json: unknown, tenant: string, file: string): { status: string; counts: ImportCounts; message: string | null } | null {
  if (!Array.isArray(json)) return null;
  const t = (json as TenantJson[]).find((r) => r.tenant === tenant);
  for (const e of t?.epochs ?? []) {
    const f = e.files.find((x) => x.file === file);
    if (f) return f;
  }
  return null;
}

/** One value from a SQLite file (read-only), or null when the file or table is missing. */
export function queryValue<T>(dbFile: string, sql: string, ...params: unknown[]): T | null {
  if (!existsSync(dbFile)) return null;
  const db = new Database(dbFile, { readonly: true, fileMustExist: true });
  try {
    return (db.prepare(sql).pluck().get(...params) as T | undefined) ?? null;
  } catch {
    return null;
  } finally {
    db.close();
  }
}

/** The last few lines of a child's stderr, on one line, for a table's problem list. */
export function lastLines(file: string, n = 3): string {
  return tail(file, 2000).trim().split('\n').slice(-n).join(' | ').slice(0, 600);
}

/** The daemon (`provisioner run`), measured until it stops; its log goes to `<label>.stderr`. */
export function startDaemon(work: string, config: string, label: string): { child: RunningChild; logFile: string; stop: () => Promise<Measurement> } {
  const stdoutFile = path.join(work, `${label}.stdout`);
  const logFile = path.join(work, `${label}.stderr`);
  syncDisks();
  const child = start(process.execPath, [CLI, '--config', config, 'run'], { cwd: work, stdoutFile, stderrFile: logFile });
  const stop = withCleanup(async () => {
    await child.stop('SIGTERM');
  });
  return {
    child,
    logFile,
    stop: async () => {
      await stop();
      return child.result;
    },
  };
}

/** Polls `probe` every 100 ms until it returns true; false after `seconds`. */
export async function waitUntil(probe: () => boolean, seconds: number): Promise<boolean> {
  const deadline = Date.now() + seconds * 1000;
  while (Date.now() < deadline) {
    if (probe()) return true;
    await new Promise((r) => setTimeout(r, 100));
  }
  return probe();
}
