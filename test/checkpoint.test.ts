// A large import's WAL is copied into the database file on a thread of its own
// (src/store/sqlite/checkpointer.ts), not inside the apply's COMMIT on the event loop. Against
// real SQLite files: the thread checkpoints every frame, the store's own connection checkpoints
// again by itself afterwards, the store closes with no WAL left and every user in the file, a
// small import never starts the thread, and a thread that cannot work hands checkpointing back
// to SQLite. A new database gets 8 KiB pages; an existing one keeps its own.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DEFAULT_OPTIONS } from '../src/config.js';
import { importFile } from '../src/import/import-file.js';
import { KindRegistry } from '../src/import/kinds.js';
import { Checkpointer } from '../src/store/sqlite/checkpointer.js';
import { SqliteConnection } from '../src/store/sqlite/connection.js';
import { SqliteStore } from '../src/store/sqlite/store.js';

const kinds = new KindRegistry();
let dir: string;

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'provisioner-checkpoint-'));
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

async function openStoreAt(file: string, checkpointAfterRows?: number): Promise<SqliteStore> {
  const store = new SqliteStore(file, { checkpointAfterRows });
  await store.schema.migrate();
  return store;
}

async function importUsers(store: SqliteStore, rows: number, epoch = '20240101-000001', id = 'u') {
  const file = path.join(dir, `users-${epoch}.csv`);
  const lines = ['user_id,first_name,last_name,email,role,school_id,active'];
  for (let i = 1; i <= rows; i++) lines.push(`${id}${i},First${i},Last${i},${id}${i}@lincoln.example.org,student,SCH${i % 7},1`);
  fs.writeFileSync(file, lines.join('\n') + '\n');
  return importFile({
    store, kinds, hasher: null, tenant: 'lincoln', kind: 'samegoal-users', options: { ...DEFAULT_OPTIONS, siteMap: {} },
    encoding: 'utf-8', maxRecordBytes: 1 << 20, digestKey: null, localPath: file, epoch, file: 'users.csv', runId: null, mode: 'apply',
  });
}

const autoCheckpoint = (c: SqliteConnection): number => c.db.pragma('wal_autocheckpoint', { simple: true }) as number;
const pageSize = (c: SqliteConnection): number => c.db.pragma('page_size', { simple: true }) as number;
/** How much WAL a commit lets pile up before it checkpoints by itself. */
const autoCheckpointBytes = (c: SqliteConnection): number => autoCheckpoint(c) * pageSize(c);
const EIGHT_MIB = 8 * 1024 * 1024;

describe('checkpoints after a large import', () => {
  it('copies the whole WAL on the thread, gives the store back its own checkpoints, and closes with every user in the file', async () => {
    const file = path.join(dir, 'provisioner.db');
    const store = await openStoreAt(file, 1000);
    const result = await importUsers(store, 3000);
    expect(result.status).toBe('applied');
    expect(result.counts.created).toBe(3000);
    await store.checkpointer!.idle();
    const checkpointer = store.checkpointer!;
    expect(checkpointer.completed).toBe(1);
    expect(checkpointer.last!.log).toBeGreaterThan(0);
    expect(checkpointer.last!.checkpointed).toBe(checkpointer.last!.log);
    expect(autoCheckpointBytes(store.connection)).toBe(EIGHT_MIB);

    // Another 3,000 new users: the same thread checkpoints again. (Re-sending the same users
    // writes nothing, so it would not.)
    expect((await importUsers(store, 3000, '20240102-000001')).counts.unchanged).toBe(3000);
    await store.checkpointer!.idle();
    expect(store.checkpointer!.completed).toBe(1);
    expect((await importUsers(store, 3000, '20240103-000001', 'v')).counts.created).toBe(3000);
    await store.checkpointer!.idle();
    expect(store.checkpointer!.completed).toBe(2);

    await store.close();
    await store.close(); // idempotent
    expect(fs.existsSync(`${file}-wal`)).toBe(false);
    const db = new Database(file, { readonly: true });
    expect(db.prepare("SELECT count(*) FROM users WHERE tenant = 'lincoln'").pluck().get()).toBe(6000);
    expect(db.pragma('integrity_check', { simple: true })).toBe('ok');
    db.close();
  });

  it('commits without copying the WAL into the database file; the thread copies it afterwards', async () => {
    const file = path.join(dir, 'provisioner.db');
    const main = new SqliteConnection(file);
    main.db.exec('CREATE TABLE t (x TEXT)');
    const bigWrite = (c: SqliteConnection) => c.write(() => c.db.prepare('WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000) INSERT INTO t SELECT hex(randomblob(500)) FROM n').run());
    const dbBytes = () => fs.statSync(file).size;

    // SQLite's default: the commit itself copies the 20 MB into the file.
    const before = dbBytes();
    await bigWrite(main);
    expect(dbBytes() - before).toBeGreaterThan(15e6);

    // The applying connection's way: the commit leaves them in the WAL, the thread copies them.
    const applying = new SqliteConnection(file, { autoCheckpoint: false });
    const checkpointer = new Checkpointer(file, main);
    const committed = dbBytes();
    await bigWrite(applying);
    expect(dbBytes()).toBe(committed);
    checkpointer.request();
    await checkpointer.idle();
    expect(dbBytes() - committed).toBeGreaterThan(15e6);
    expect(checkpointer.completed).toBe(1);
    expect(checkpointer.last!.checkpointed).toBe(checkpointer.last!.log);
    await checkpointer.close();
    applying.close();
    main.close();
  });

  it('leaves a small import to SQLite: no thread is started', async () => {
    const store = await openStoreAt(path.join(dir, 'provisioner.db'));
    const result = await importUsers(store, 50);
    expect(result.counts.created).toBe(50);
    await store.checkpointer!.idle();
    expect(store.checkpointer!.completed).toBe(0);
    expect(store.checkpointer!.last).toBeNull();
    expect(autoCheckpointBytes(store.connection)).toBe(EIGHT_MIB);
    await store.close();
  });

  it('hands checkpointing back to SQLite, with a warning, when the thread cannot do it', async () => {
    const main = new SqliteConnection(path.join(dir, 'provisioner.db'));
    const warnings: string[] = [];
    const checkpointer = new Checkpointer(path.join(dir, 'gone', 'provisioner.db'), main, { warn: (_o, msg) => warnings.push(msg) });
    checkpointer.request();
    expect(autoCheckpoint(main)).toBe(0); // paused while the thread works
    await checkpointer.idle();
    expect(checkpointer.completed).toBe(0);
    expect(checkpointer.last).toBeNull();
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatch(/checkpoint thread failed .*SQLite checkpoints on commit again/);
    expect(autoCheckpointBytes(main)).toBe(EIGHT_MIB);
    await checkpointer.close();
    main.close();
  });
});

describe('page size', () => {
  it('gives a new database 8 KiB pages; one made with 4 KiB pages keeps them, takes an import, and checkpoints at the same 8 MiB of WAL', async () => {
    const fresh = await openStoreAt(path.join(dir, 'new.db'));
    expect(pageSize(fresh.connection)).toBe(8192);
    expect(autoCheckpointBytes(fresh.connection)).toBe(EIGHT_MIB);
    await fresh.close();

    // A directory an earlier version made: its pages stay as they are (SQLite cannot change a
    // WAL database's page size without rewriting it).
    const file = path.join(dir, 'old.db');
    const old = new Database(file);
    old.pragma('page_size = 4096');
    old.pragma('journal_mode = WAL');
    old.exec('CREATE TABLE t (x)');
    old.close();
    const store = await openStoreAt(file);
    expect(pageSize(store.connection)).toBe(4096);
    expect(autoCheckpointBytes(store.connection)).toBe(EIGHT_MIB);
    expect((await importUsers(store, 200)).counts.created).toBe(200);
    await store.close();
    const check = new Database(file, { readonly: true });
    expect(check.pragma('page_size', { simple: true })).toBe(4096);
    expect(check.pragma('integrity_check', { simple: true })).toBe('ok');
    expect(check.prepare("SELECT count(*) FROM users WHERE tenant = 'lincoln'").pluck().get()).toBe(200);
    check.close();
  });
});
