// The import options and the shipped file kinds, through src/import against a real SQLite
// file in a temporary folder: what each option does to the user directory, and that secrets
// stay out of it.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Papa from 'papaparse';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DEFAULT_OPTIONS, type ImportOptions } from '../src/config.js';
import { writeErrorsCsv } from '../src/import/errors-csv.js';
import { ScryptPool } from '../src/import/hash-pool.js';
import { importFile, type FileImportResult } from '../src/import/import-file.js';
import { KindRegistry } from '../src/import/kinds.js';
import { verifyPassword } from '../src/import/passwords.js';
import { formatDatePassword } from '../src/import/rows.js';
import { userHistory } from '../src/service/user-history.js';
import { openStore } from '../src/store/open.js';
import type { Store } from '../src/store/types.js';
import { availableStores, createPgDatabase, querySync, type StoreKind } from './harness/stores.js';

const OPTIONS: ImportOptions = { ...DEFAULT_OPTIONS, siteMap: {} };

const kinds = new KindRegistry();
const hasher = new ScryptPool(2);
const digestKey = Buffer.from('a test key of thirty-two bytes..');
let dir: string;
let store: Store;
/** The database: a SQLite file, or a PostgreSQL URL. */
let database: string;
let dropDatabase: (() => Promise<void>) | undefined;
let n = 0;

async function openTestStore(kind: StoreKind): Promise<void> {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'provisioner-import-'));
  if (kind === 'postgres') {
    const pgdb = await createPgDatabase();
    database = pgdb.url;
    dropDatabase = pgdb.drop;
  } else database = path.join(dir, 'provisioner.db');
  store = await openStore(database);
  n = 0;
}

async function closeTestStore(): Promise<void> {
  await store.close();
  await dropDatabase?.();
  dropDatabase = undefined;
  fs.rmSync(dir, { recursive: true, force: true });
}

/** Rows, one row, or one value of a query, in SQLite's shapes whatever the store. */
const rowsOf = <T = Record<string, unknown>>(sql: string, ...params: unknown[]): T[] => querySync<T>(database, sql, ...params);
const one = <T = Record<string, unknown>>(sql: string, ...params: unknown[]): T | undefined => rowsOf<T>(sql, ...params)[0];
const scalar = (sql: string, ...params: unknown[]): unknown => Object.values(one(sql, ...params) ?? {})[0];
const column = (sql: string, ...params: unknown[]): unknown[] => rowsOf(sql, ...params).map((r) => Object.values(r)[0]);

interface Run {
  kind: string;
  options?: Partial<ImportOptions>;
  tenant?: string;
  /** An operator released the held import with this id. */
  release?: number;
  mode?: 'apply' | 'dry-run' | 'check';
}

/** Imports `lines` as one file, the way the worker does after a download. */
async function load(run: Run, ...lines: string[]): Promise<FileImportResult> {
  n++;
  const file = path.join(dir, `upload-${n}.csv`);
  fs.writeFileSync(file, lines.join('\n') + '\n');
  return importFile({
    store,
    kinds,
    hasher,
    tenant: run.tenant ?? 'lincoln',
    kind: run.kind,
    options: { ...OPTIONS, ...run.options },
    encoding: 'utf-8',
    maxRecordBytes: 1 << 20,
    digestKey,
    localPath: file,
    errorsCsvPath: `${file}.errors.csv`,
    epoch: `20240101-0000${String(n).padStart(2, '0')}`,
    file: 'users.csv',
    runId: null,
    release: run.release === undefined ? null : { heldImportId: run.release },
    mode: run.mode ?? 'apply',
  });
}

/** Everything the database holds, as bytes: the SQLite file and its WAL, or a dump of PostgreSQL. */
function databaseContents(): Buffer[] {
  if (/^postgres/.test(database)) return [execFileSync('pg_dump', ['--data-only', database])];
  return [database, `${database}-wal`].filter((f) => fs.existsSync(f)).map((f) => fs.readFileSync(f));
}

/** errors.csv of an import, as the worker files it in bak and mails it (rebuilt from the database). */
async function errorsCsvOf(r: FileImportResult): Promise<{ file: string; rows: string[][] }> {
  const file = path.join(dir, `errors-${r.importId}.csv`);
  const row = await store.imports.get(r.importId!);
  await writeErrorsCsv(file, row!.header!, store.imports.errorRows(r.importId!));
  return { file, rows: Papa.parse<string[]>(fs.readFileSync(file, 'utf8').replace(/^\uFEFF/, '').trim()).data };
}

type UserRow = Record<string, unknown> & { external_id: string; active: number; email: string | null; password_hash: string | null };
const users = (tenant = 'lincoln'): UserRow[] => rowsOf<UserRow>('SELECT * FROM users WHERE tenant = ? ORDER BY external_id', tenant);
const user = (id: string, tenant = 'lincoln'): UserRow => one<UserRow>('SELECT * FROM users WHERE tenant = ? AND external_id = ?', tenant, id)!;

const SG = 'user_id,first_name,last_name,email,role,school_id,active';
const ROSTER = 'STUDENT_ID,FIRST_NAME,LAST_NAME,GRADE,SITE_ID,EMAIL,PASSWORD';

describe.each(availableStores())('import options on %s', (storeKind) => {
  beforeEach(() => openTestStore(storeKind));
  afterEach(() => closeTestStore());

  describe('shipped file kinds', () => {
    it('roster-students: CAPS columns in order, PASSWORD required unless Google SSO, then EMAIL is', () => {
      const k = kinds.get('roster-students');
      expect(k.columns.map((c) => c.name)).toEqual(['STUDENT_ID', 'FIRST_NAME', 'LAST_NAME', 'GRADE', 'SITE_ID', 'EMAIL', 'PASSWORD']);
      expect(k.key).toBe('STUDENT_ID');
      expect(k.requiredNow).toEqual(['STUDENT_ID', 'FIRST_NAME', 'LAST_NAME', 'SITE_ID', 'PASSWORD']);
      const sso = kinds.get('roster-students', { sso: 'google' });
      expect(sso.requiredNow).toEqual(['STUDENT_ID', 'FIRST_NAME', 'LAST_NAME', 'SITE_ID', 'EMAIL']);
    });

    it('agylia-users: the Email column is the key and the e-mail, matched without case', () => {
      const k = kinds.get('agylia-users');
      expect(k.columns.map((c) => c.name)).toEqual(['Email', 'FirstName', 'LastName', 'Username', 'Department', 'JobTitle', 'Active']);
      expect(k.key).toBe('Email');
      expect(k.keyCase).toBe('lower');
      expect(k.columns[0].field).toBe('email');
      expect(k.requiredNow).toEqual(['Email', 'FirstName', 'LastName']);
    });

    it('opscom-users: all 24 columns, unique_id and login_source required, each with its possible names', () => {
      const k = kinds.get('opscom-users');
      expect(k.columns).toHaveLength(24);
      expect(k.columns[0].name).toBe('unique_id');
      expect(k.columns.at(-1)!.name).toBe('active');
      expect(k.requiredNow).toEqual(['unique_id', 'login_source']);
      for (const c of k.columns) expect(c.aliases.length, c.name).toBeGreaterThan(0);
      expect(k.columns[0].aliases).toEqual(expect.arrayContaining(['UniqueId', 'Unique ID', 'uniqueid']));
    });

    it('a kind is a schema file and nothing else; its mistakes are reported with the file named', () => {
      const kindsDir = path.join(dir, 'schemas');
      fs.mkdirSync(kindsDir);
      const write = (name: string, schema: object) => fs.writeFileSync(path.join(kindsDir, `${name}.schema.json`), JSON.stringify(schema));
      write('acme-people', {
        $schema: 'http://json-schema.org/draft-07/schema#',
        'x-provisioner': { key: 'badge' },
        type: 'object',
        additionalProperties: false,
        required: ['badge', 'mail'],
        properties: {
          badge: { type: 'string', 'x-field': 'externalId' },
          mail: { type: 'string', format: 'email', 'x-field': 'email', 'x-aliases': ['e-mail'] },
          shoe_size: { type: 'string' },
        },
      });
      const registry = new KindRegistry(kindsDir);
      expect(registry.names()).toEqual(['acme-people']);
      expect(registry.get('acme-people').columns.map((c) => c.name)).toEqual(['badge', 'mail', 'shoe_size']);

      write('broken', {
        'x-provisioner': { key: 'id', keyCase: 'upper' },
        required: [],
        properties: { id: { type: 'string' }, a: { type: 'string', 'x-field': 'email', 'x-aliases': ['mail'] }, b: { type: 'string', 'x-field': 'email', 'x-aliases': ['MAIL'] } },
      });
      expect(() => new KindRegistry(kindsDir)).toThrow(/broken\.schema\.json is not usable/);
      try {
        new KindRegistry(kindsDir);
      } catch (err) {
        const text = (err as Error).message;
        expect(text).toContain('the key column id must be in "required"');
        expect(text).toContain('keyCase must be "exact" or "lower"');
        expect(text).toContain('columns a and b both fill email');
        expect(text).toContain('header name "MAIL" is accepted for both a and b');
      }
    });
  });

  describe('duplicate ids', () => {
    it('names the first line a key appeared on, even after a failing row and an earlier duplicate', async () => {
      const r = await load(
        { kind: 'samegoal-users' },
        'user_id,first_name,last_name,email',
        'u1,Ada,Lovelace,ada@lincoln.example',
        'u2,Bad,Row,not-an-email',
        'u1,Ada,Again,ada2@lincoln.example',
        'u2,Alan,Turing,alan@lincoln.example',
        'u1,Ada,Third,ada3@lincoln.example',
      );
      expect(r.counts).toMatchObject({ rows: 5, created: 1, failed: 4 });
      expect(r.sampleErrors.slice(1)).toEqual([
        'line 4: user_id "u1": duplicate user_id: it already appears on line 2; each user_id may appear only once',
        'line 5: user_id "u2": duplicate user_id: it already appears on line 3; each user_id may appear only once',
        'line 6: user_id "u1": duplicate user_id: it already appears on line 2; each user_id may appear only once',
      ]);
    });
  });

  describe('ids', () => {
    it('lists the directory by id in byte order on either store (upper case before lower, punctuation by its code)', async () => {
      const ids = ['b', 'B', '_x', 'a-1', 'a.1', 'A@1', '9'];
      const r = await load({ kind: 'samegoal-users' }, 'user_id,first_name,last_name,email', ...ids.map((id, i) => `${id},First,Last,user${i}@lincoln.example`));
      expect(r.counts.created).toBe(ids.length);
      expect((await store.directory.users('lincoln')).map((u) => u.externalId)).toEqual(['9', 'A@1', 'B', '_x', 'a-1', 'a.1', 'b']);
      // Case matters in an id: B and b are two users, and each is found by its own id.
      expect((await store.directory.user('lincoln', 'B'))?.externalId).toBe('B');
      expect((await store.directory.user('lincoln', 'b'))?.externalId).toBe('b');
    });
  });

  describe('key order', () => {
    // A district's export is often sorted by name or by school, its ids in no order; SQLite then
    // reads the staged rows sorted by key (key-runs.ts, stage.ts). What users see must not change.
    const ids = Array.from({ length: 60 }, (_, i) => `u${String(i).padStart(3, '0')}`);
    const scatter = (list: string[]) => list.map((_, i) => list[(i * 37) % list.length]); // 37 and 60 share no factor
    const line = (id: string, email = `${id}@lincoln.example`) => `${id},First ${id},Last ${id},${email},student,SCH1,1`;
    const directory = (tenant: string) =>
      rowsOf('SELECT external_id, kind, email, first_name, last_name, role, site_id, active, archived_at, attributes FROM users WHERE tenant = ? ORDER BY external_id', tenant);
    const history = (importId: number | null) =>
      rowsOf<{ external_id: string; action: string; fields: string; old_values: string }>('SELECT external_id, action, fields, old_values FROM user_changes WHERE import_id = ? ORDER BY id', importId);

    it('a file whose ids come in no order is applied as the same file sorted: users, counts, history, row errors', async () => {
      const first = [...ids.map((id) => line(id)), line('u900', 'not-an-email')];
      const sorted = await load({ kind: 'samegoal-users', tenant: 'sorted' }, SG, ...first);
      const scattered = await load({ kind: 'samegoal-users', tenant: 'scattered' }, SG, ...scatter(first));
      expect(scattered.counts).toEqual(sorted.counts);
      expect(scattered.counts).toMatchObject({ rows: 61, created: 60, failed: 1 });
      expect(directory('scattered')).toEqual(directory('sorted'));

      // The nightly re-sync, scattered again: a few new e-mails, one user gone, one duplicate id.
      const changed = new Set(['u003', 'u017', 'u042', 'u059']);
      const second = ids.filter((id) => id !== 'u030').map((id) => line(id, changed.has(id) ? `${id}.new@lincoln.example` : undefined));
      const secondScattered = [...scatter(second), line('u017', 'again@lincoln.example')];
      const options = { fullSync: true, maxDeactivatePercent: 100, overwriteEmail: true };
      const dry = await load({ kind: 'samegoal-users', tenant: 'scattered', options, mode: 'dry-run' }, SG, ...secondScattered);
      const resorted = await load({ kind: 'samegoal-users', tenant: 'sorted', options }, SG, ...second, line('u017', 'again@lincoln.example'));
      const resync = await load({ kind: 'samegoal-users', tenant: 'scattered', options }, SG, ...secondScattered);
      expect(resync.counts).toEqual(resorted.counts);
      expect(resync.counts).toMatchObject({ rows: 60, created: 0, updated: 4, unchanged: 55, deactivated: 1, failed: 1 });
      expect(dry.counts).toEqual(resync.counts);
      expect(directory('scattered')).toEqual(directory('sorted'));
      expect(directory('scattered').filter((u) => !u.active).map((u) => u.external_id)).toEqual(['u030']);
      // The duplicate is the later line, whichever order the file is in.
      const duplicateLine = secondScattered.length + 1;
      expect(resync.sampleErrors).toEqual([`line ${duplicateLine}: user_id "u017": duplicate user_id: it already appears on line ${secondScattered.findIndex((l) => l.startsWith('u017,')) + 2}; each user_id may appear only once`]);
      // History: the same changes, recorded in the file's line order.
      const byId = <T extends { external_id: string }>(rows: T[]) => [...rows].sort((a, b) => (a.external_id < b.external_id ? -1 : 1));
      expect(byId(history(resync.importId))).toEqual(byId(history(resorted.importId)));
      const updatedInFileOrder = scatter(second).map((l) => l.slice(0, 4)).filter((id) => changed.has(id));
      expect(history(resync.importId).filter((c) => c.action === 'update').map((c) => c.external_id)).toEqual(updatedInFileOrder);
    });
  });

  describe('values as uploaded', () => {
    const header = 'user_id,first_name,last_name,email,role,school_id';
    // A batch with a tab anywhere is escaped value by value: the other rows get a file of their own.
    const plain = ['u2,"Line\nbreak","Carriage\rreturn",u2@lincoln.example,teacher,S1', 'u3,"Sep\u001earator",\\N,u3@lincoln.example,,S2', 'u4,Back\\slash,Plain,u4@lincoln.example,,'];
    const tab = ['u1,"Tab\there","Back\\slash \\N",u1@lincoln.example,teacher,'];

    it('keeps line breaks, backslashes, a literal \\N, tabs and the staging separator in values, and an empty cell empty', async () => {
      expect((await load({ kind: 'samegoal-users' }, header, ...plain)).counts).toMatchObject({ rows: 3, created: 3, failed: 0 });
      expect((await load({ kind: 'samegoal-users' }, header, ...tab)).counts).toMatchObject({ rows: 1, created: 1, failed: 0 });
      expect(rowsOf('SELECT external_id, first_name, last_name, role, site_id FROM users ORDER BY external_id')).toEqual([
        { external_id: 'u1', first_name: 'Tab\there', last_name: 'Back\\slash \\N', role: 'teacher', site_id: null },
        { external_id: 'u2', first_name: 'Line\nbreak', last_name: 'Carriage\rreturn', role: 'teacher', site_id: 'S1' },
        { external_id: 'u3', first_name: 'Sep\u001earator', last_name: '\\N', role: null, site_id: 'S2' },
        { external_id: 'u4', first_name: 'Back\\slash', last_name: 'Plain', role: null, site_id: null },
      ]);
      // The same rows again change nothing: what was stored is what the file says.
      expect((await load({ kind: 'samegoal-users' }, header, ...plain, ...tab)).counts).toMatchObject({ rows: 4, created: 0, updated: 0, unchanged: 4 });
    });
  });

  describe('key column that is also the e-mail column (agylia-users)', () => {
    it('keys users by the lower-cased address, keeps the address as written, and finds case-only duplicates', async () => {
      const r = await load(
        { kind: 'agylia-users' },
        'Email,FirstName,LastName,Username,Department,JobTitle,Active',
        'Ada.Lovelace@Acme.example,Ada,Lovelace,ada,R&D,Analyst,1',
        'ada.lovelace@acme.example,Ada,Again,ada2,R&D,Analyst,1',
        'grace@acme.example,Grace,Hopper,grace,Navy,Admiral,',
      );
      expect(r.status).toBe('applied with errors');
      expect(r.sampleErrors).toEqual(['line 3: Email "ada.lovelace@acme.example": duplicate Email: it already appears on line 2; each Email may appear only once']);
      expect(users().map((u) => [u.external_id, u.email, u.username])).toEqual([
        ['ada.lovelace@acme.example', 'Ada.Lovelace@Acme.example', 'ada'],
        ['grace@acme.example', 'grace@acme.example', 'grace'],
      ]);
      expect(JSON.parse(String(user('grace@acme.example').attributes))).toEqual({ Department: 'Navy', JobTitle: 'Admiral' });

      // The same person with the address in other capitals is the same user, updated.
      await load({ kind: 'agylia-users' }, 'EMAIL,first name,last name', 'ADA.LOVELACE@ACME.EXAMPLE,Ada,King');
      expect(users()).toHaveLength(2);
      expect(user('ada.lovelace@acme.example')).toMatchObject({ last_name: 'King', email: 'ADA.LOVELACE@ACME.EXAMPLE' });
    });

    it('reports a key that is not an e-mail address against the Email column', async () => {
      const r = await load({ kind: 'agylia-users' }, 'Email,FirstName,LastName', 'not-an-address,Ada,Lovelace');
      expect(r.sampleErrors).toEqual(['line 2: Email "not-an-address": is not a valid e-mail address']);
      expect(users()).toEqual([]);
    });
  });

  describe('fullSync', () => {
    const everyone = (ids: number[]) => ids.map((i) => `u${i},F${i},L${i},u${i}@x.example,student,1,1`);

    it('deactivates the missing users of that tenant and kind, never deletes, and records who did it', async () => {
      await load({ kind: 'samegoal-users' }, SG, ...everyone([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]));
      await load({ kind: 'agylia-users' }, 'Email,FirstName,LastName', 'other@x.example,Other,Kind');
      await load({ kind: 'samegoal-users', tenant: 'other' }, SG, 'u1,Other,Tenant,o@x.example,,,');
      const r = await load({ kind: 'samegoal-users', options: { fullSync: true, actor: 'nightly@lincoln.example' } }, SG, ...everyone([1, 2, 3, 4, 5, 6, 7, 8, 9]));
      expect(r.status).toBe('applied');
      expect(r.counts).toMatchObject({ rows: 9, unchanged: 9, deactivated: 1 });
      expect(users().filter((u) => !u.active).map((u) => u.external_id)).toEqual(['u10']);
      expect(users()).toHaveLength(11); // nobody deleted; the other kind untouched
      expect(user('other@x.example').active).toBe(1);
      expect(user('u1', 'other').active).toBe(1);
      expect(user('u10').updated_by).toBe('nightly@lincoln.example');
      const change = one("SELECT * FROM user_changes WHERE external_id = 'u10' AND action = 'deactivate'")!;
      expect(change).toMatchObject({ actor: 'nightly@lincoln.example', fields: '["active"]' });
    });

    it('a row that fails still counts as present: its user is not deactivated', async () => {
      await load({ kind: 'samegoal-users' }, SG, ...everyone([1, 2, 3]));
      const r = await load({ kind: 'samegoal-users', options: { fullSync: true, maxDeactivatePercent: 50 } }, SG, ...everyone([1, 2]), 'u3,F3,L3,broken,student,1,1');
      expect(r.counts).toMatchObject({ failed: 1, deactivated: 0 });
      expect(user('u3').active).toBe(1);
    });

    it('holds a file that would deactivate more than maxDeactivatePercent: nothing applied; a release applies it', async () => {
      await load({ kind: 'samegoal-users' }, SG, ...everyone([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]));
      const options = { fullSync: true, maxDeactivatePercent: 10 };
      const held = await load({ kind: 'samegoal-users', options }, SG, 'u1,F1,Changed,u1@x.example,student,1,1', ...everyone([2, 3, 4, 5, 6, 7, 8]), 'u11,New,User,u11@x.example,student,1,1');
      expect(held.status).toBe('held');
      expect(held.message).toContain('would deactivate 2 of 10 active users (20.0%), more than the 10% limit');
      expect(held.message).toContain('provisioner release --tenant lincoln 20240101-000002');
      expect(held.counts.deactivated).toBe(2);
      expect(users().every((u) => u.active === 1)).toBe(true);
      expect(user('u1').last_name).toBe('L1');
      expect(user('u11')).toBeUndefined();
      expect(scalar('SELECT status FROM imports WHERE id = ?', held.importId)).toBe('held');

      const forced = await load({ kind: 'samegoal-users', options, release: held.importId! }, SG, 'u1,F1,Changed,u1@x.example,student,1,1', ...everyone([2, 3, 4, 5, 6, 7, 8]), 'u11,New,User,u11@x.example,student,1,1');
      expect(forced.status).toBe('applied');
      expect(forced.counts).toMatchObject({ created: 1, updated: 1, deactivated: 2 });
      expect(users().filter((u) => !u.active).map((u) => u.external_id)).toEqual(['u10', 'u9']);
    });

    it('exactly at the limit is not held', async () => {
      await load({ kind: 'samegoal-users' }, SG, ...everyone([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]));
      const r = await load({ kind: 'samegoal-users', options: { fullSync: true, maxDeactivatePercent: 10 } }, SG, ...everyone([1, 2, 3, 4, 5, 6, 7, 8, 9]));
      expect(r.status).toBe('applied');
    });
  });

  describe('overwriteEmail and overwritePassword', () => {
    it('false: e-mail and password are set on create only', async () => {
      const options = { overwriteEmail: false, overwritePassword: false };
      await load({ kind: 'roster-students', options }, ROSTER, '1001,Ada,Lovelace,5,100,ada@s.example,first-secret');
      const before = user('1001');
      const r = await load({ kind: 'roster-students', options }, ROSTER, '1001,Ada,Lovelace,5,100,changed@s.example,second-secret');
      expect(r.counts).toMatchObject({ unchanged: 1, updated: 0 });
      expect(user('1001').email).toBe('ada@s.example');
      expect(user('1001').password_hash).toBe(before.password_hash);
      expect(await verifyPassword('first-secret', String(user('1001').password_hash))).toBe(true);
    });

    it('true: the upload sets them back every time', async () => {
      const options = { overwriteEmail: true, overwritePassword: true };
      await load({ kind: 'roster-students', options }, ROSTER, '1001,Ada,Lovelace,5,100,ada@s.example,first-secret');
      const same = await load({ kind: 'roster-students', options }, ROSTER, '1001,Ada,Lovelace,5,100,ada@s.example,first-secret');
      expect(same.counts.unchanged).toBe(1); // the same password is not hashed anew
      const r = await load({ kind: 'roster-students', options }, ROSTER, '1001,Ada,Lovelace,5,100,changed@s.example,second-secret');
      expect(r.counts.updated).toBe(1);
      expect(user('1001').email).toBe('changed@s.example');
      expect(await verifyPassword('second-secret', String(user('1001').password_hash))).toBe(true);
      const change = one<{ fields: string; old_values: string }>("SELECT fields, old_values FROM user_changes WHERE action = 'update'")!;
      expect(JSON.parse(change.fields)).toEqual(['email', 'password']);
      expect(JSON.parse(change.old_values)).toEqual({ email: 'ada@s.example' }); // no secret in the history
    });
  });

  describe('passwordFormat: date', () => {
    it('turns every common date form into m/d/yyyy before hashing', async () => {
      const r = await load(
        { kind: 'roster-students', options: { passwordFormat: 'date' } },
        ROSTER,
        '1,A,A,K,100,,2010-03-05',
        '2,B,B,1,100,,3/5/2010',
        '3,C,C,2,100,,03/05/2010',
        '4,D,D,3,100,,20100305',
      );
      expect(r.status).toBe('applied');
      for (const u of users()) {
        expect(u.password_hash).toMatch(/^\$scrypt\$ln=\d+,r=\d+,p=\d+\$[A-Za-z0-9+/]+\$[A-Za-z0-9+/]+$/);
        expect(await verifyPassword('3/5/2010', String(u.password_hash)), u.external_id).toBe(true);
      }
    });

    it('a value that is not a date is a row error whose value is never shown', async () => {
      const r = await load({ kind: 'roster-students', options: { passwordFormat: 'date' } }, ROSTER, '1,A,A,K,100,,2010-02-30', '2,B,B,K,100,,hunter2', '3,C,C,K,100,,1/2/2011');
      expect(r.counts).toMatchObject({ rows: 3, created: 1, failed: 2 });
      expect(r.sampleErrors[1]).toBe('line 3: PASSWORD "(hidden)": is not a date; passwords for this district are dates such as 2010-03-05, 3/5/2010 or 20100305');
      expect(JSON.stringify(r)).not.toContain('hunter2');
      const { file, rows } = await errorsCsvOf(r);
      expect(rows[0]).toEqual([...ROSTER.split(','), 'error']);
      expect(rows[2].slice(0, 7)).toEqual(['2', 'B', 'B', 'K', '100', '', '']);
      expect(fs.readFileSync(file, 'utf8')).not.toContain('hunter2');
      expect(column('SELECT value FROM import_errors ORDER BY line')).toEqual(['(hidden)', '(hidden)']);
    });

    it('formatDatePassword', () => {
      expect(formatDatePassword('2010-3-5')).toBe('3/5/2010');
      expect(formatDatePassword('12.31.1999')).toBe('12/31/1999');
      expect(formatDatePassword('02/29/2012')).toBe('2/29/2012');
      expect(formatDatePassword('02/29/2013')).toBeUndefined();
      expect(formatDatePassword('13/01/2010')).toBeUndefined();
      expect(formatDatePassword('March 5')).toBeUndefined();
    });
  });

  describe('passwords are only ever stored as scrypt hashes', () => {
    it('the database file holds no plain password, and the row errors hide it', async () => {
      const secret = 'Plain-Text-Canary-7731';
      await load({ kind: 'roster-students', options: { overwritePassword: true } }, ROSTER, `1001,Ada,Lovelace,5,100,ada@s.example,${secret}`, `1002,Bad,Grade,99,100,bad@s.example,${secret}`);
      for (const b of databaseContents()) expect(b.includes(Buffer.from(secret))).toBe(false);
      expect(String(user('1001').password_hash)).toMatch(/^\$scrypt\$ln=14,r=8,p=1\$/);
      expect(await verifyPassword(secret, String(user('1001').password_hash))).toBe(true);
    });
  });

  describe('sso: google', () => {
    it('needs no password column, but an e-mail for everyone', async () => {
      const options = { sso: 'google' as const };
      const ok = await load({ kind: 'roster-students', options }, 'STUDENT_ID,FIRST_NAME,LAST_NAME,GRADE,SITE_ID,EMAIL', '1,Ada,L,5,100,ada@s.example', '2,No,Mail,5,100,');
      expect(ok.counts).toMatchObject({ created: 1, failed: 1 });
      expect(ok.sampleErrors).toEqual(['line 3: EMAIL: EMAIL is required but empty; fill it in']);
      expect(user('1').password_hash).toBeNull();

      const noEmail = await load({ kind: 'roster-students', options }, 'STUDENT_ID,FIRST_NAME,LAST_NAME,GRADE,SITE_ID', '1,Ada,L,5,100');
      expect(noEmail.status).toBe('rejected');
      expect(noEmail.message).toContain('missing required column "EMAIL"');

      const withoutSso = await load({ kind: 'roster-students' }, 'STUDENT_ID,FIRST_NAME,LAST_NAME,GRADE,SITE_ID,EMAIL', '1,Ada,L,5,100,ada@s.example');
      expect(withoutSso.message).toContain('missing required column "PASSWORD"');
    });
  });

  describe('siteMap', () => {
    it('stores the label; an unknown site id is a row error', async () => {
      const options = { siteMap: { '100': 'Lincoln High', '200': 'Washington Middle' } };
      const r = await load({ kind: 'roster-students', options }, ROSTER, '1,Ada,L,9,100,,pw1', '2,Bob,M,7,200,,pw2', '3,Cy,N,7,300,,pw3');
      expect(r.counts).toMatchObject({ created: 2, failed: 1 });
      // A file with plain passwords: a failing cell could hold a shifted password, so its value is not shown.
      expect(r.sampleErrors[0]).toBe(`line 4: SITE_ID "(hidden)": this site id is not in this district's site map; use one of 100, 200 or ask us to add it`);
      expect(users().map((u) => [u.external_id, u.site_id, u.site_label])).toEqual([
        ['1', '100', 'Lincoln High'],
        ['2', '200', 'Washington Middle'],
      ]);
    });
  });

  describe('archiveInactive', () => {
    it('active 0 archives and suffixes _<year>; active 1 restores without the suffix; history says so', async () => {
      const year = new Date().getUTCFullYear();
      const options = { archiveInactive: true, actor: 'admin@ops.example' };
      const header = 'unique_id,login_source,first_name,last_name,user_name,email,active';
      await load({ kind: 'opscom-users', options }, header, 'J3,local,Jay,Three,j3,j3@ops.example,1', 'K4,local,Kay,Four,k4,k4@ops.example,1');
      const archived = await load({ kind: 'opscom-users', options }, header, 'J3,local,Jay,Three,j3,j3@ops.example,0');
      expect(archived.counts).toMatchObject({ archived: 1, updated: 0 });
      expect(user('J3')).toMatchObject({ active: 0, username: `j3_${year}`, email: `j3@ops.example_${year}` });
      expect(user('J3').archived_at).toEqual(expect.any(String));
      expect(user('K4').active).toBe(1);

      const again = await load({ kind: 'opscom-users', options }, header, 'J3,local,Jay,Three,j3,j3@ops.example,0');
      expect(again.counts).toMatchObject({ unchanged: 1, archived: 0 });
      expect(user('J3').username).toBe(`j3_${year}`);

      // A file without the identifying columns gets them back without the suffix.
      const restored = await load({ kind: 'opscom-users', options }, 'unique_id,login_source,active', 'J3,local,1');
      expect(restored.counts.updated).toBe(1);
      expect(user('J3')).toMatchObject({ active: 1, archived_at: null, username: 'j3', email: 'j3@ops.example' });

      const { changes } = await userHistory(store, 'lincoln', 'J3');
      expect(changes.map((c) => c.action)).toEqual(['create', 'archive', 'restore']);
      expect(changes[1].changes).toEqual(
        expect.arrayContaining([
          { field: 'email', from: 'j3@ops.example', to: `j3@ops.example_${year}` },
          { field: 'active', from: true, to: false },
        ]),
      );
      expect(changes.every((c) => c.actor === 'admin@ops.example')).toBe(true);
    });

    it('without archiveInactive, active 0 only deactivates', async () => {
      const header = 'unique_id,login_source,user_name,active';
      await load({ kind: 'opscom-users' }, header, 'J3,local,j3,1');
      const r = await load({ kind: 'opscom-users' }, header, 'J3,local,j3,no');
      expect(r.counts.deactivated).toBe(1);
      expect(user('J3')).toMatchObject({ active: 0, archived_at: null, username: 'j3' });
    });
  });

  describe('actor', () => {
    it('is recorded in users.updated_by, imports.actor and user_changes.actor', async () => {
      const r = await load({ kind: 'agylia-users', options: { actor: 'ftp-user@acme.example' } }, 'Email,FirstName,LastName', 'ada@acme.example,Ada,Lovelace');
      expect(user('ada@acme.example').updated_by).toBe('ftp-user@acme.example');
      expect(scalar('SELECT actor FROM imports WHERE id = ?', r.importId)).toBe('ftp-user@acme.example');
      const { changes } = await userHistory(store, 'lincoln', 'ada@acme.example');
      expect(changes.map((c) => [c.action, c.actor])).toEqual([['create', 'ftp-user@acme.example']]);
    });
  });

  describe('history', () => {
    it('answers "why did this e-mail change": which upload, who, from what to what', async () => {
      await load({ kind: 'samegoal-users', options: { actor: 'a@x' } }, SG, 'u1,Ada,Lovelace,ada@old.example,teacher,1,1');
      await load({ kind: 'samegoal-users', options: { actor: 'b@x' } }, SG, 'u1,Ada,Lovelace,ada@new.example,teacher,1,1');
      await load({ kind: 'samegoal-users', options: { actor: 'c@x' } }, SG, 'u1,Ada,King,ada@new.example,teacher,1,1');
      const { changes } = await userHistory(store, 'lincoln', 'u1');
      expect(changes.map((c) => [c.action, c.actor, c.epoch, c.file])).toEqual([
        ['create', 'a@x', '20240101-000001', 'users.csv'],
        ['update', 'b@x', '20240101-000002', 'users.csv'],
        ['update', 'c@x', '20240101-000003', 'users.csv'],
      ]);
      expect(changes[0].changes).toContainEqual({ field: 'email', from: null, to: 'ada@old.example' });
      expect(changes[1].changes).toEqual([{ field: 'email', from: 'ada@old.example', to: 'ada@new.example' }]);
      expect(changes[2].changes).toEqual([{ field: 'last_name', from: 'Lovelace', to: 'King' }]);
      expect((await userHistory(store, 'other', 'u1')).changes).toEqual([]);
    });
  });

  describe('modes', () => {
    it('dry-run computes the counts and writes nothing; check only validates', async () => {
      await load({ kind: 'samegoal-users' }, SG, 'u1,Ada,Lovelace,ada@x.example,,,', 'u2,Bob,B,bob@x.example,,,');
      const before = JSON.stringify(users());
      const imports = Number(scalar('SELECT count(*) FROM imports'));
      const dry = await load({ kind: 'samegoal-users', mode: 'dry-run', options: { fullSync: true, maxDeactivatePercent: 100 } }, SG, 'u1,Ada,King,ada@x.example,,,', 'u3,Cy,C,cy@x.example,,,');
      expect(dry.counts).toMatchObject({ created: 1, updated: 1, deactivated: 1 });
      expect(dry.importId).toBeNull();
      expect(JSON.stringify(users())).toBe(before);
      expect(Number(scalar('SELECT count(*) FROM imports'))).toBe(imports);
      expect(Number(scalar('SELECT count(*) FROM user_changes'))).toBe(0); // creates are recorded once per import

      const check = await load({ kind: 'samegoal-users', mode: 'check' }, SG, 'u9,Ada,King,bad,,,');
      expect(check.counts).toMatchObject({ rows: 1, failed: 1 });
      expect(user('u9')).toBeUndefined();
    });
  });

  describe('strictHeaders', () => {
    it('names the first difference, expected against found', async () => {
      const r = await load({ kind: 'roster-students', options: { strictHeaders: true } }, 'STUDENT_ID,FIRST_NAME,Last_Name,GRADE,SITE_ID,EMAIL,PASSWORD', '1,A,B,5,100,,pw');
      expect(r.status).toBe('rejected');
      expect(r.message).toBe(
        'the header row must be exactly STUDENT_ID,FIRST_NAME,LAST_NAME,GRADE,SITE_ID,EMAIL,PASSWORD (capital letters, underscores, in this order).' +
          ' Found STUDENT_ID,FIRST_NAME,Last_Name,GRADE,SITE_ID,EMAIL,PASSWORD. The first difference is column 3: expected "LAST_NAME", found "Last_Name".',
      );
      const order = await load({ kind: 'roster-students', options: { strictHeaders: true } }, 'STUDENT_ID,LAST_NAME,FIRST_NAME,GRADE,SITE_ID,EMAIL,PASSWORD', '1,A,B,5,100,,pw');
      expect(order.message).toContain('column 2: expected "FIRST_NAME", found "LAST_NAME"');
      // Without strictHeaders, the same columns in any order and case are fine.
      const loose = await load({ kind: 'roster-students' }, 'student_id,last_name,first_name,grade,site_id,email,password', '1,A,B,5,100,,pw');
      expect(loose.status).toBe('applied');
      expect(user('1')).toMatchObject({ first_name: 'B', last_name: 'A' });
    });

    it('accepts the trailing optional column left out under Google SSO', async () => {
      const r = await load({ kind: 'roster-students', options: { strictHeaders: true, sso: 'google' } }, 'STUDENT_ID,FIRST_NAME,LAST_NAME,GRADE,SITE_ID,EMAIL', '1,A,B,5,100,a@s.example');
      expect(r.status).toBe('applied');
    });
  });
});
