// Another program has the SQLite file for a moment: a worker waits for it and goes on. Against real
// files: a worker starting on a new database while another process reads it as fast as it can
// (a `status` loop, a monitoring scrape, the sqlite3 shell) prepares it every time; and each of
// SQLite's "locked" answers, extended codes included, is waited out rather than failing the run.
// SQLITE_BUSY_RECOVERY, the one a starting worker met, comes only while another process rebuilds
// the WAL's index: too rare to meet on purpose, so its test raises SQLite's own error at the point
// SQLite would.
import { spawn, type ChildProcess } from 'node:child_process';
import { createRequire } from 'node:module';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { openStore } from '../src/store/open.js';
import { SqliteConnection } from '../src/store/sqlite/connection.js';

let dir: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'provisioner-connection-'));
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

/** Before the fix, one new database in 200 to 600 failed to prepare under a reader like this one. */
const STARTS = 600;
const LOCKED_CODES = ['SQLITE_BUSY', 'SQLITE_BUSY_RECOVERY', 'SQLITE_BUSY_SNAPSHOT', 'SQLITE_BUSY_TIMEOUT', 'SQLITE_LOCKED', 'SQLITE_LOCKED_SHAREDCACHE'];

describe('another process has the file for a moment', () => {
  let c: SqliteConnection;
  beforeEach(() => {
    c = new SqliteConnection(path.join(dir, 'p.db'));
  });
  afterEach(() => c.close());

  it.each(LOCKED_CODES)('a read that meets %s waits and returns the rows', async (code) => {
    let refused = 0;
    const rows = await c.read(() => {
      if (refused < 3) {
        refused++;
        throw new Database.SqliteError('database is locked', code);
      }
      return c.db.prepare('SELECT 1 AS one').all();
    });
    expect(rows).toEqual([{ one: 1 }]);
    expect(refused).toBe(3);
  });

  it('a write that meets SQLITE_BUSY_RECOVERY is rolled back, tried again and committed once', async () => {
    c.db.exec('CREATE TABLE t (x)');
    let tries = 0;
    await c.write(() => {
      c.db.prepare('INSERT INTO t VALUES (?)').run(++tries);
      if (tries === 1) throw new Database.SqliteError('database is locked', 'SQLITE_BUSY_RECOVERY');
    });
    expect(c.db.prepare('SELECT x FROM t').pluck().all()).toEqual([2]);
  });

  it('anything else is not waited for: a constraint fails the write at once', async () => {
    c.db.exec('CREATE TABLE t (x PRIMARY KEY)');
    c.db.exec('INSERT INTO t VALUES (1)');
    let tries = 0;
    await expect(c.write(() => (tries++, c.db.prepare('INSERT INTO t VALUES (1)').run()))).rejects.toMatchObject({ code: 'SQLITE_CONSTRAINT_PRIMARYKEY' });
    expect(tries).toBe(1);
  });
});

describe('a new database another process reads all the while', () => {
  let reader: ChildProcess | undefined;
  afterEach(() => {
    reader?.kill('SIGKILL');
    reader = undefined;
  });

  /**
   * Another process reading the newest of `<dir>/p-0.db`, `p-1.db`, … over and over: it opens it
   * read-only as soon as it exists, reads it and closes it again.
   */
  function readForever(): Promise<void> {
    const script = `
      const fs = require('node:fs');
      const path = require('node:path');
      const Database = require(${JSON.stringify(createRequire(import.meta.url).resolve('better-sqlite3'))});
      const dir = process.argv[1];
      process.stdout.write('reading\\n');
      for (let i = 0; ; ) {
        if (fs.existsSync(path.join(dir, 'p-' + (i + 1) + '.db'))) i++;
        try {
          const db = new Database(path.join(dir, 'p-' + i + '.db'), { readonly: true, fileMustExist: true });
          try { db.prepare('SELECT count(*) FROM sqlite_master').get(); } finally { db.close(); }
        } catch {}
      }`;
    reader = spawn(process.execPath, ['-e', script, dir], { stdio: ['ignore', 'pipe', 'inherit'] });
    return new Promise((resolve) => reader!.stdout!.once('data', () => resolve()));
  }

  it('is prepared by every worker that starts on it', async () => {
    await readForever();
    for (let i = 0; i < STARTS; i++) {
      const store = await openStore(path.join(dir, `p-${i}.db`));
      expect((await store.schema.version()).current).toBeGreaterThan(0);
      await store.close();
    }
  }, 60_000);
});
