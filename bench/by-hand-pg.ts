// The baseline of row 7: what an operator does by hand with OpenSSH's `sftp` and `psql`. The
// fetch of rows 1 and 2, then ONE psql process on a fresh database that `\copy`s the file into a
// TEMP table and upserts every row into a table keyed on user_id, leaving equal rows alone.
import path from 'node:path';
import type { TestSftpServer } from '../test/harness/sftp-server.js';
import { COLUMNS, sftpGet, type ByHandResult } from './by-hand.js';
import { checkInterrupted } from './cleanup.js';
import { measure } from './measure.js';
import { pgCount, PSQL_FLAGS } from './postgres.js';
import { lastLines, mib, round, syncDisks, tempDir } from './provisioner.js';

/** The recipe in one line, for the table. */
export const BY_HAND_PG_RECIPE =
  'sftp -b "get FILE" + one psql: CREATE TABLE users(user_id text PRIMARY KEY, …); CREATE TEMP TABLE incoming(…); ' +
  "\\copy incoming FROM 'FILE' WITH (FORMAT csv, HEADER true); INSERT INTO users SELECT * FROM incoming " +
  'ON CONFLICT (user_id) DO UPDATE SET <every column> WHERE (users.<columns>) IS DISTINCT FROM (excluded.<columns>)';

/** The psql script; the database is fresh, so the table is created. */
export function pgUpsertScript(csvFile: string): string {
  const rest = COLUMNS.slice(1);
  const typed = COLUMNS.map((c) => `${c} text`);
  return [
    `CREATE TABLE users(${typed[0]} PRIMARY KEY, ${typed.slice(1).join(', ')});`,
    `CREATE TEMP TABLE incoming(${typed.join(', ')});`,
    `\\copy incoming FROM '${csvFile.replace(/'/g, "''")}' WITH (FORMAT csv, HEADER true)`,
    `INSERT INTO users SELECT * FROM incoming ON CONFLICT (user_id) DO UPDATE SET ${rest.map((c) => `${c}=excluded.${c}`).join(', ')}` +
      ` WHERE (${rest.map((c) => `users.${c}`).join(', ')}) IS DISTINCT FROM (${rest.map((c) => `excluded.${c}`).join(', ')});`,
    '',
  ].join('\n');
}

export interface ByHandPgRun extends ByHandResult {
  psqlSeconds: number;
}

/**
 * Fetches `remoteFile` with sftp and upserts it into the database at `url` with psql.
 * Time = sftp wall time + psql wall time. The downloaded copy is removed afterwards.
 */
export async function byHandPgUpsert(server: TestSftpServer, remoteFile: string, url: string, timeoutSeconds: number): Promise<ByHandPgRun> {
  const failed = (problem: string, sftpSeconds = 0): ByHandPgRun => ({ seconds: 0, sftpSeconds, psqlSeconds: 0, peakRssMiB: 0, usersInDb: 0, problem });
  const { dir, remove } = tempDir('provisioner-bench-by-hand-pg-');
  try {
    const got = await sftpGet(server, remoteFile, dir, timeoutSeconds);
    if (got.problem !== null) return failed(got.problem);
    const { sftp } = got;
    syncDisks();
    const psql = await measure('psql', [...PSQL_FLAGS, '-d', url, '-f', '-'], {
      cwd: dir,
      stdin: pgUpsertScript(got.local),
      stdoutFile: path.join(dir, 'psql.stdout'),
      stderrFile: path.join(dir, 'psql.stderr'),
      timeoutSeconds,
    });
    checkInterrupted();
    if (psql.code !== 0) {
      return failed(`by hand: psql ${psql.timedOut ? 'timed out' : `exited with ${psql.code ?? psql.signal}`}: ${lastLines(path.join(dir, 'psql.stderr'))}`, sftp.seconds);
    }
    return {
      seconds: round(sftp.seconds + psql.seconds),
      sftpSeconds: round(sftp.seconds),
      psqlSeconds: round(psql.seconds),
      peakRssMiB: mib(Math.max(sftp.peakRssBytes, psql.peakRssBytes)),
      usersInDb: pgCount(url, 'SELECT count(*) FROM users') ?? 0,
      problem: null,
    };
  } finally {
    await remove(); // free the disk before provisioner's run
  }
}
