// Opening the store the configuration names: a file path is SQLite (one machine), a
// postgres:// or postgresql:// URL is PostgreSQL (several workers sharing the tenants).
import { StoreError } from '../errors.js';
import type { Store } from './types.js';
import { SqliteStore } from './sqlite/store.js';
import { isBusy, type WaitLog } from './sqlite/connection.js';

export interface OpenStoreOptions {
  /** Run migrations (default). `doctor` opens without, to see whether the schema is current. */
  migrate?: boolean;
  log?: WaitLog;
  /** How long to wait for another process's lock or for the server. */
  busyWaitMs?: number;
}

export const isPostgresUrl = (database: string): boolean => /^postgres(ql)?:\/\//i.test(database);

/** The database for messages: a URL without its password. */
export function describeDatabase(database: string): string {
  if (!isPostgresUrl(database)) return database;
  try {
    const u = new URL(database);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return database.replace(/:[^:@/]*@/, ':***@');
  }
}

export async function openStore(database: string, opts: OpenStoreOptions = {}): Promise<Store> {
  let store: Store;
  if (isPostgresUrl(database)) {
    const { PostgresStore } = await import('./postgres/store.js');
    store = await PostgresStore.connect(database, describeDatabase(database));
  } else {
    store = await openSqlite(database, opts);
  }
  try {
    if (opts.migrate !== false) await store.schema.migrate();
  } catch (err) {
    await store.close();
    if (err instanceof StoreError) throw err;
    throw new StoreError(`cannot prepare the database ${describeDatabase(database)}: ${(err as Error).message}`, { cause: err });
  }
  return store;
}

/**
 * A SQLite file another process is creating, switching to WAL or recovering can refuse to open
 * for a moment (SQLite does not always wait by itself then): tried again, without blocking the
 * event loop, for up to a few seconds.
 */
async function openSqlite(database: string, opts: OpenStoreOptions): Promise<Store> {
  const started = Date.now();
  for (let delay = 10; ; delay = Math.min(delay * 2, 250)) {
    try {
      return new SqliteStore(database, { log: opts.log, busyWaitMs: opts.busyWaitMs });
    } catch (err) {
      if (!isBusy(err) || Date.now() - started > 10_000) {
        throw new StoreError(`cannot open the database ${database}: ${(err as Error).message}`, { cause: err });
      }
      await new Promise((r) => setTimeout(r, delay));
    }
  }
}
