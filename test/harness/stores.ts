/**
 * The two stores under test: SQLite files, and a PostgreSQL server (PROVISIONER_TEST_PG, which
 * .ci/run sets: the server on 127.0.0.1:5432 where there is one, else one it starts). Each test
 * gets a database of its own, dropped afterwards unless the test failed.
 *
 * Reading a store back from a test: `query` (async) and `querySync` (for polling in waitFor),
 * with rows in SQLite's shapes whatever the store (booleans as 1/0, timestamps and JSON as text),
 * so that one assertion serves both.
 */
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import Database from 'better-sqlite3';
import pg from 'pg';

export type StoreKind = 'sqlite' | 'postgres';

export function availableStores(): StoreKind[] {
  const only = process.env.PROVISIONER_TEST_STORE;
  if (only === 'sqlite' || only === 'postgres') return [only];
  if (only) throw new Error(`PROVISIONER_TEST_STORE must be "sqlite" or "postgres", not "${only}"`);
  return process.env.PROVISIONER_TEST_PG ? ['sqlite', 'postgres'] : ['sqlite'];
}

/** A new, empty PostgreSQL database on the test server; its URL and how to drop it. */
export async function createPgDatabase(): Promise<{ url: string; drop(): Promise<void> }> {
  const admin = process.env.PROVISIONER_TEST_PG;
  if (!admin) throw new Error('PROVISIONER_TEST_PG is not set: no PostgreSQL server for the tests');
  const name = `provisioner_test_${crypto.randomBytes(5).toString('hex')}`;
  const client = new pg.Client({ connectionString: admin });
  await client.connect();
  try {
    await client.query(`CREATE DATABASE ${name}`);
  } finally {
    await client.end();
  }
  const url = new URL(admin);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    async drop() {
      const c = new pg.Client({ connectionString: admin });
      await c.connect();
      try {
        await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      } finally {
        await c.end();
      }
    },
  };
}

const isPg = (database: string) => /^postgres(ql)?:\/\//.test(database);

/** `?` placeholders to `$1, $2, …`. */
const numbered = (sql: string) => {
  let n = 0;
  return sql.replace(/\?/g, () => `$${++n}`);
};

/** A value as SQLite would give it. */
function sqliteShape(v: unknown): unknown {
  if (v === true) return 1;
  if (v === false) return 0;
  if (v instanceof Date) return v.toISOString();
  if (v !== null && typeof v === 'object') return JSON.stringify(v);
  return v;
}

function shaped<T>(rows: Record<string, unknown>[]): T[] {
  return rows.map((r) => Object.fromEntries(Object.entries(r).map(([k, v]) => [k, sqliteShape(v)])) as T);
}

export async function query<T = Record<string, unknown>>(database: string, sql: string, ...params: unknown[]): Promise<T[]> {
  if (!isPg(database)) return querySync<T>(database, sql, ...params);
  const client = new pg.Client({ connectionString: database });
  await client.connect();
  try {
    return shaped<T>((await client.query(numbered(sql), params)).rows);
  } finally {
    await client.end();
  }
}

/** Writes to a store from outside provisioner, as another program (the vendor's platform, a test) would. */
export async function execute(database: string, sql: string, ...params: unknown[]): Promise<void> {
  if (!isPg(database)) {
    const db = new Database(database, { fileMustExist: true, timeout: 10_000 });
    try {
      db.prepare(sql).run(...params);
    } finally {
      db.close();
    }
    return;
  }
  await query(database, sql, ...params);
}

/**
 * A write another program makes in a transaction it commits `ms` later: resolves once the row is
 * written (and locked), with `committed` for the commit. Whatever waits on that row meanwhile
 * sees it only after the commit.
 */
export async function writeCommittedLater(database: string, ms: number, sql: string, ...params: unknown[]): Promise<{ committed: Promise<void> }> {
  const later = <T>(fn: () => Promise<T>) => new Promise<T>((resolve, reject) => setTimeout(() => fn().then(resolve, reject), ms));
  if (!isPg(database)) {
    const db = new Database(database, { fileMustExist: true, timeout: 10_000 });
    db.exec('BEGIN IMMEDIATE');
    db.prepare(sql).run(...params);
    return { committed: later(async () => void db.exec('COMMIT')).finally(() => db.close()) };
  }
  const client = new pg.Client({ connectionString: database });
  await client.connect();
  await client.query('BEGIN');
  await client.query(numbered(sql), params);
  return { committed: later(async () => void (await client.query('COMMIT'))).finally(() => client.end()) };
}

/** The same, synchronously (psql for PostgreSQL): for probes polled by waitFor. */
export function querySync<T = Record<string, unknown>>(database: string, sql: string, ...params: unknown[]): T[] {
  if (!isPg(database)) {
    const db = new Database(database, { readonly: true, fileMustExist: true });
    try {
      return db.prepare(sql).all(...params) as T[];
    } finally {
      db.close();
    }
  }
  let i = 0;
  const literal = (v: unknown) => (v === null || v === undefined ? 'NULL' : typeof v === 'number' ? String(v) : `'${String(v).replace(/'/g, "''")}'`);
  const text = sql.replace(/\?/g, () => literal(params[i++]));
  const out = execFileSync('psql', [database, '-X', '-A', '-t', '-v', 'ON_ERROR_STOP=1', '-c', `SELECT coalesce(json_agg(t), '[]') FROM (${text}) t`], { encoding: 'utf8' });
  const rows = JSON.parse(out.trim() || '[]') as Record<string, unknown>[];
  // json_agg renders timestamps as text and jsonb as nested JSON: the same shapes as above.
  return shaped<T>(rows);
}
