// The vendor's platform may write users.password_hash (with password_digest = NULL) whenever a
// user changes a password, and provisioner then keeps that password (README: "What it may
// write"). Here the platform writes it in the middle of an import: after the file was staged and
// its passwords looked at, and committed while the apply's transaction runs (after it read the
// users that change). What it wrote survives an import that changes the user's other fields, and
// a later file still wins under overwritePassword: true.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DEFAULT_OPTIONS, type ImportOptions } from '../src/config.js';
import { ScryptPool } from '../src/import/hash-pool.js';
import { importFile, type FileImportResult } from '../src/import/import-file.js';
import { KindRegistry } from '../src/import/kinds.js';
import { hashPassword, verifyPassword } from '../src/import/passwords.js';
import { openStore } from '../src/store/open.js';
import type { Store } from '../src/store/types.js';
import { availableStores, createPgDatabase, execute, querySync, writeCommittedLater } from './harness/stores.js';

const ROSTER = 'STUDENT_ID,FIRST_NAME,LAST_NAME,GRADE,SITE_ID,EMAIL,PASSWORD';
const kinds = new KindRegistry();
const hasher = new ScryptPool(2);
const digestKey = Buffer.from('a test key of thirty-two bytes..');

describe.each(availableStores())('a password the platform writes during an import, on %s', (storeKind) => {
  let dir: string;
  let database: string;
  let store: Store;
  let drop: (() => Promise<void>) | undefined;
  let n = 0;
  /** Runs once between the next import's staging (passwords looked at) and its apply. */
  let beforeApply: (() => Promise<void>) | null = null;
  let committed: Promise<void> | undefined;

  beforeEach(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'provisioner-platform-'));
    if (storeKind === 'postgres') {
      const db = await createPgDatabase();
      database = db.url;
      drop = db.drop;
    } else database = path.join(dir, 'provisioner.db');
    store = await openStore(database);
    const open = store.directory.openStage.bind(store.directory);
    store.directory.openStage = async (spec) => {
      const stage = await open(spec);
      const apply = stage.apply.bind(stage);
      stage.apply = async (req) => {
        const hook = beforeApply;
        beforeApply = null;
        await hook?.();
        return apply(req);
      };
      return stage;
    };
  });
  afterEach(async () => {
    await committed;
    committed = undefined;
    await store.close();
    await drop?.();
    drop = undefined;
    fs.rmSync(dir, { recursive: true, force: true });
  });

  async function load(options: Partial<ImportOptions>, ...rows: string[]): Promise<FileImportResult> {
    const file = path.join(dir, `upload-${++n}.csv`);
    fs.writeFileSync(file, [ROSTER, ...rows].join('\n') + '\n');
    const r = await importFile({
      store, kinds, hasher, tenant: 'lincoln', kind: 'roster-students', options: { ...DEFAULT_OPTIONS, siteMap: {}, ...options }, encoding: 'utf-8',
      maxRecordBytes: 1 << 20, digestKey, localPath: file, epoch: `20240101-0000${String(n).padStart(2, '0')}`, file: 'students.csv', runId: null, mode: 'apply',
    });
    expect(r.status, r.message ?? '').toBe('applied');
    return r;
  }
  const user = () => querySync<{ last_name: string; password_hash: string | null; password_digest: string | null }>(database, `SELECT * FROM users WHERE external_id = '1001'`)[0];
  /** What the platform does when a user changes a password (the contract: the digest NULLed in the same statement). */
  const SET_PASSWORD = `UPDATE users SET password_hash = ?, password_digest = NULL WHERE tenant = 'lincoln' AND external_id = '1001'`;
  const platformSets = (hash: string) => execute(database, SET_PASSWORD, hash);
  /** The platform's write, made now and committed a second later: in the middle of the apply that starts now. */
  const platformSetsDuringApply = async (hash: string) => {
    ({ committed } = await writeCommittedLater(database, 1000, SET_PASSWORD, hash));
  };

  it('keeps the hash the platform wrote while a file that changes the user was being applied', async () => {
    await load({}, '1001,Ada,Lovelace,5,100,ada@lincoln.example,first-secret');
    const platform = await hashPassword('changed-on-the-platform');
    beforeApply = () => platformSetsDuringApply(platform);
    const r = await load({}, '1001,Ada,Byron,5,100,ada@lincoln.example,first-secret');
    expect(r.counts).toMatchObject({ updated: 1, unchanged: 0 });
    expect(user().last_name).toBe('Byron');
    expect(user().password_hash).toBe(platform);
    expect(user().password_digest).toBeNull();
  });

  it.skipIf(storeKind === 'sqlite')(
    'under overwritePassword: true, a password found unchanged is not vouched for once the platform changed it meanwhile: the next file wins',
    async () => {
      const o = { overwritePassword: true };
      await load(o, '1001,Ada,Lovelace,5,100,ada@lincoln.example,first-secret');
      // The user set the same password on the platform: the next file checks it once (scrypt)...
      await platformSets(await hashPassword('first-secret'));
      const platform = await hashPassword('changed-again');
      // ...and while that file is applied, the user changes it again.
      beforeApply = () => platformSetsDuringApply(platform);
      await load(o, '1001,Ada,Byron,5,100,ada@lincoln.example,first-secret');
      expect(user().password_hash).toBe(platform);
      expect(user().password_digest).toBeNull();
      // The district's file wins with the next upload (the platform's password is checked, and differs).
      const r = await load(o, '1001,Ada,Byron,5,100,ada@lincoln.example,first-secret');
      expect(r.counts).toMatchObject({ updated: 1 });
      expect(await verifyPassword('first-secret', user().password_hash!)).toBe(true);
      expect(user().password_digest).not.toBeNull();
    },
  );
});
