// The baseline of rows 1 and 2: what an operator does by hand with OpenSSH's `sftp` and the
// `sqlite3` CLI. Fetch the file in batch mode, then ONE sqlite3 process that imports it into a
// TEMP table and upserts every row into a WITHOUT ROWID table keyed on user_id. Row 7's
// baseline (by-hand-pg.ts) fetches the file the same way.
import fs from 'node:fs';
import path from 'node:path';
import type { TestSftpServer } from '../test/harness/sftp-server.js';
import { checkInterrupted } from './cleanup.js';
import { measure, type Measurement } from './measure.js';
import { lastLines, mib, queryValue, round, syncDisks, tempDir } from './provisioner.js';

export const COLUMNS = ['user_id', 'first_name', 'last_name', 'email', 'role', 'school_id', 'active'];

/** The recipe in one line, for the table. */
export const BY_HAND_RECIPE =
  'sftp -b "get FILE" + one sqlite3 -batch: CREATE TABLE IF NOT EXISTS users(user_id TEXT PRIMARY KEY, …) WITHOUT ROWID; ' +
  '.import --csv --skip 1 into a TEMP table; INSERT INTO users SELECT * FROM temp WHERE true ON CONFLICT(user_id) DO UPDATE SET <every column>';

/** The sqlite3 script: the same for a first load and a re-sync. */
export function upsertScript(csvFile: string): string {
  const rest = COLUMNS.slice(1);
  return [
    `CREATE TABLE IF NOT EXISTS users(user_id TEXT PRIMARY KEY, ${rest.join(', ')}) WITHOUT ROWID;`,
    `CREATE TEMP TABLE incoming(${COLUMNS.join(', ')});`,
    `.import --csv --skip 1 --schema temp '${csvFile.replace(/'/g, "''")}' incoming`,
    `INSERT INTO users SELECT * FROM incoming WHERE true ON CONFLICT(user_id) DO UPDATE SET ${rest.map((c) => `${c}=excluded.${c}`).join(', ')};`,
    '',
  ].join('\n');
}

/** What every by-hand baseline reports; each adds the time of its loading step. */
export interface ByHandResult {
  seconds: number;
  sftpSeconds: number;
  /** The larger of the two processes' peaks. */
  peakRssMiB: number;
  usersInDb: number;
  problem: string | null;
}

export interface ByHandRun extends ByHandResult {
  sqlite3Seconds: number;
}

/** `sftp -b` with the server's key, host key checks off (loopback, a fresh key each run). */
export function sftpArgs(server: TestSftpServer, batchFile: string): string[] {
  return [
    '-q', '-b', batchFile, '-P', String(server.port), '-i', server.privateKeyPath!,
    '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'BatchMode=yes',
    '-o', 'IdentitiesOnly=yes', '-o', 'LogLevel=ERROR',
    `${server.username}@${server.host}`,
  ];
}

/**
 * `sftp -b "get remoteFile"` into `<dir>/users.csv`, measured: the fetch of every by-hand
 * baseline. The local copy and sftp's measurement, or what went wrong.
 */
export async function sftpGet(
  server: TestSftpServer,
  remoteFile: string,
  dir: string,
  timeoutSeconds: number,
): Promise<{ problem: string } | { problem: null; local: string; sftp: Measurement }> {
  if (!server.privateKeyPath) return { problem: 'by hand: the server has no key for sftp batch mode' };
  const local = path.join(dir, 'users.csv');
  const batch = path.join(dir, 'batch');
  fs.writeFileSync(batch, `get ${remoteFile} ${local}\n`);
  syncDisks();
  const sftp = await measure('sftp', sftpArgs(server, batch), {
    cwd: dir,
    stdoutFile: path.join(dir, 'sftp.stdout'),
    stderrFile: path.join(dir, 'sftp.stderr'),
    timeoutSeconds,
  });
  checkInterrupted();
  if (sftp.code !== 0 || !fs.existsSync(local)) {
    return { problem: `by hand: sftp ${sftp.timedOut ? 'timed out' : `exited with ${sftp.code ?? sftp.signal}`}: ${lastLines(path.join(dir, 'sftp.stderr'))}` };
  }
  return { problem: null, local, sftp };
}

/**
 * Fetches `remoteFile` with sftp and upserts it into `dbFile` with sqlite3 (created when new).
 * Time = sftp wall time + sqlite3 wall time. The downloaded copy is removed afterwards.
 */
export async function byHandUpsert(server: TestSftpServer, remoteFile: string, dbFile: string, timeoutSeconds: number): Promise<ByHandRun> {
  const failed = (problem: string, sftpSeconds = 0): ByHandRun => ({ seconds: 0, sftpSeconds, sqlite3Seconds: 0, peakRssMiB: 0, usersInDb: 0, problem });
  const { dir, remove } = tempDir('provisioner-bench-by-hand-');
  try {
    const got = await sftpGet(server, remoteFile, dir, timeoutSeconds);
    if (got.problem !== null) return failed(got.problem);
    const { sftp } = got;
    syncDisks();
    const sqlite = await measure('sqlite3', ['-batch', '-bail', dbFile], {
      cwd: dir,
      stdin: upsertScript(got.local),
      stdoutFile: path.join(dir, 'sqlite3.stdout'),
      stderrFile: path.join(dir, 'sqlite3.stderr'),
      timeoutSeconds,
    });
    checkInterrupted();
    if (sqlite.code !== 0) {
      return failed(`by hand: sqlite3 ${sqlite.timedOut ? 'timed out' : `exited with ${sqlite.code ?? sqlite.signal}`}: ${lastLines(path.join(dir, 'sqlite3.stderr'))}`, sftp.seconds);
    }
    return {
      seconds: round(sftp.seconds + sqlite.seconds),
      sftpSeconds: round(sftp.seconds),
      sqlite3Seconds: round(sqlite.seconds),
      peakRssMiB: mib(Math.max(sftp.peakRssBytes, sqlite.peakRssBytes)),
      usersInDb: queryValue<number>(dbFile, 'SELECT count(*) FROM users') ?? 0,
      problem: null,
    };
  } finally {
    await remove(); // free the disk before the next step
  }
}
