// Row 7's PostgreSQL server: which one, whether it answers, and fresh databases on it, each
// dropped on every path. All through the psql CLI, as an operator would: provisioner stays a
// black box and the benchmark needs no driver of its own.
import { spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import { withCleanup } from './cleanup.js';

/** The server the tests use (PROVISIONER_TEST_PG) or, without it, the usual local one. */
const LOCAL = 'postgres://postgres@127.0.0.1:5432/postgres';
/** A server that does not answer within this is no server (a firewall drops, not refuses). */
const CONNECT_SECONDS = 5;

/** psql without the operator's ~/.psqlrc, stopping at the first error. */
export const PSQL_FLAGS = ['-X', '-q', '-v', 'ON_ERROR_STOP=1'];

/** The first value psql prints for `sql`, as text; throws with psql's first line of error. */
function psqlValue(url: string, sql: string): string {
  const r = spawnSync('psql', [...PSQL_FLAGS, '-A', '-t', '-d', url, '-c', sql], {
    encoding: 'utf8',
    env: { ...process.env, PGCONNECT_TIMEOUT: String(CONNECT_SECONDS) },
  });
  if (r.error) throw r.error;
  if (r.status !== 0) throw new Error(r.stderr.trim().split('\n')[0]?.replace(/^psql: error: /, '') || `psql exited with ${r.status ?? r.signal}`);
  return r.stdout.trim();
}

/** A count, or null when psql fails (no such table: the step that makes it failed). */
export function pgCount(url: string, sql: string): number | null {
  try {
    return Number(psqlValue(url, sql));
  } catch {
    return null;
  }
}

/** The URL without its password: it goes to the table and latest.json. */
export function shownUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return url;
  }
}

export type PgServer = { url: string; version: string } | { skipped: string };

/** The server row 7 runs against, or why the row is skipped (no psql, no server, no CREATEDB). */
export function findPgServer(): PgServer {
  const url = process.env.PROVISIONER_TEST_PG || LOCAL;
  const where = process.env.PROVISIONER_TEST_PG ? `PROVISIONER_TEST_PG (${shownUrl(url)})` : shownUrl(url);
  try {
    const version = psqlValue(url, 'SHOW server_version');
    const mayCreate = psqlValue(url, 'SELECT rolcreatedb OR rolsuper FROM pg_roles WHERE rolname = current_user') === 't';
    return mayCreate ? { url, version } : { skipped: `the role of ${where} may not create databases (CREATEDB)` };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { skipped: 'no psql (the PostgreSQL client) on PATH' };
    return { skipped: `no PostgreSQL server at ${where}: ${(err as Error).message}` };
  }
}

/**
 * PostgreSQL's counterpart of syncDisks: a CHECKPOINT writes out the server's dirty pages, so that
 * one step's writes are not flushed during the next. A role that may not checkpoint goes without.
 */
export function checkpoint(server: string): void {
  try {
    psqlValue(server, 'CHECKPOINT');
  } catch {
    // neither superuser nor pg_checkpoint: the steps then share the server's background writes
  }
}

/** A new, empty database (a unique name) on `server`: its URL, and how to drop it now. */
export function freshDatabase(server: string, prefix: string): { url: string; drop: () => Promise<void> } {
  const name = `${prefix}_${crypto.randomBytes(5).toString('hex')}`;
  psqlValue(server, `CREATE DATABASE ${name}`);
  // FORCE: a provisioner stopped by a time-out or Ctrl-C may still hold a connection.
  const drop = withCleanup(() => void psqlValue(server, `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`));
  const url = new URL(server);
  url.pathname = `/${name}`;
  return { url: url.toString(), drop };
}
