// A large file is read in parts by several threads at once (src/import/parse-parts.ts). Whatever
// the parts, the staged rows, the row errors and their line numbers must be exactly those of
// reading the file in one part: duplicates across parts, failing rows whose key comes again in
// another part, and a quoted value holding line breaks right where a part would be cut.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_OPTIONS } from '../src/config.js';
import { mapHeaders } from '../src/import/headers.js';
import { KindRegistry } from '../src/import/kinds.js';
import { readHeader } from '../src/import/parse-file.js';
import { partBounds, readFileStart } from '../src/import/file-parts.js';
import { FollowedFile, GrowingFile } from '../src/import/growing-file.js';
import { partsFor, stageFile } from '../src/import/parse-parts.js';
import { warmParseThreads } from '../src/import/parse-thread.js';
import { RowChecker } from '../src/import/rows.js';
import { openStore } from '../src/store/open.js';
import type { Store } from '../src/store/types.js';
import { availableStores, createPgDatabase, type StoreKind } from './harness/stores.js';
import { collidingKeys } from './harness/colliding-keys.js';

const kinds = new KindRegistry();
const kind = kinds.get('samegoal-users', { sso: 'none' });
const options = { ...DEFAULT_OPTIONS, siteMap: {} };
let dir: string;
let store: Store;
let drop: (() => Promise<void>) | undefined;

async function open(kind: StoreKind): Promise<void> {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'provisioner-parts-'));
  if (kind === 'postgres') {
    const db = await createPgDatabase();
    drop = db.drop;
    store = await openStore(db.url);
  } else store = await openStore(path.join(dir, 'provisioner.db'));
}

async function close(): Promise<void> {
  await store.close();
  await drop?.();
  drop = undefined;
  fs.rmSync(dir, { recursive: true, force: true });
}

/** `rows` data rows (line n + 1 holds u<n>), with `edits` replacing some of them. */
function writeRoster(name: string, rows: number, edits: Map<number, string>): string {
  const file = path.join(dir, name);
  const out = ['user_id,first_name,last_name,email,role,school_id,active'];
  for (let i = 1; i <= rows; i++) out.push(edits.get(i) ?? `u${i},First${i},Last Name ${i},u${i}@lincoln.example.org,student,SCH${i % 97},1`);
  fs.writeFileSync(file, out.join('\n') + '\n');
  return file;
}

interface Staged {
  rows: number;
  valid: number;
  errors: string[];
  parts: number;
}

async function stage(file: string, maxParts: number, maxRecordBytes = 1 << 20, follow?: SharedArrayBuffer): Promise<Staged> {
  const head = await readHeader(file, 'utf-8', maxRecordBytes, follow);
  if (!('header' in head)) throw new Error(head.rejected);
  const mapped = mapHeaders(head.header, kind, false);
  if (!mapped.ok) throw new Error(mapped.problem);
  const present = new RowChecker(kind, mapped.map, options, 'lincoln', null).present;
  const scratch = fs.mkdtempSync(path.join(dir, 'stage-'));
  const s = await store.directory.openStage({ tenant: 'lincoln', kind: 'samegoal-users', keyColumn: 'user_id', present, dir: scratch });
  try {
    const staged = await stageFile({
      parse: { file, kind: 'samegoal-users', tenant: 'lincoln', options, encoding: 'utf-8', maxRecordBytes, digestKey: null, follow },
      header: head.header, stage: s, keyIndex: false, kinds, maxParts,
    });
    expect(staged.rejected).toBeNull();
    const summary = await s.finish();
    const errors: string[] = [];
    for await (const batch of s.errorRows()) for (const e of batch) for (const p of e.problems) errors.push(`${e.line} ${p.column}: ${p.reason}`);
    // SQLite: a scratch file a part (and its key hashes beside it); PostgreSQL: the parts' batches in one table.
    return { rows: staged.rows, valid: summary.valid, errors, parts: s.sink === 'files' ? fs.readdirSync(scratch).filter((n) => n.endsWith('.sqlite')).length : 0 };
  } finally {
    await s.close();
    fs.rmSync(scratch, { recursive: true, force: true });
  }
}

const ROWS = 200_000; // about 14 MB: three parts of more than 4 MB

describe.each(availableStores())('a file read in parts, %s', (kind) => {
  beforeAll(() => open(kind));
  afterAll(() => close());

  it('sizes the shared key filter by the rows the file\'s first lines suggest', async () => {
    const rowsOf = async (file: string) => (await readFileStart(file, new FollowedFile(), fs.statSync(file).size)).rows;
    const big = writeRoster('estimate.csv', ROWS, new Map());
    const estimate = await rowsOf(big);
    expect(estimate).toBeGreaterThanOrEqual(ROWS);
    expect(estimate).toBeLessThan(ROWS * 1.5);
    expect(await rowsOf(writeRoster('small.csv', 10, new Map()))).toBe(12); // the header, 10 rows, the last line feed
    // No line feed in the first 64 KiB: one row per 40 bytes, as before.
    const wide = path.join(dir, 'wide.csv');
    fs.writeFileSync(wide, 'x'.repeat(100_000) + '\n' + 'y,z\n'.repeat(10_000));
    expect(await rowsOf(wide)).toBe(Math.ceil(fs.statSync(wide).size / 40));
  });

  it('tells a repeated key from a key that only shares its hash with it', async () => {
    const [a, b] = collidingKeys();
    const row = (key: string, n: number) => `${key},First,Last,${key}-${n}@lincoln.example.org,student,SCH1,1`;
    const edits = new Map<number, string>([
      [1_000, row(a, 1)],
      [90_000, row(b, 1)],
      [150_000, row(b, 2)], // a real duplicate of line 90001
    ]);
    const file = writeRoster('collisions.csv', ROWS, edits);
    const three = await stage(file, 3);
    expect(three).toMatchObject({ rows: ROWS, valid: ROWS - 1 });
    expect(three.errors).toEqual([`150001 user_id: duplicate user_id: it already appears on line 90001; each user_id may appear only once`]);
  });

  it('finds duplicates across parts and names the lines of the original file', async () => {
    const edits = new Map<number, string>([
      [5, 'u5,Bad,Email,not-an-email,student,SCH1,1'], // failing row: its key still counts
      [70_000, 'u10,Again,In Part Two,again10@lincoln.example.org,student,SCH1,1'],
      [120_000, 'u5,Valid,Now,valid5@lincoln.example.org,student,SCH1,1'],
      [130_000, 'u70001,Third,Part,third@lincoln.example.org,student,SCH1,1'],
      [140_000, 'u140000,Bad,Email,still-not-an-email,student,SCH1,1'],
    ]);
    const file = writeRoster('duplicates.csv', ROWS, edits);
    const size = fs.statSync(file).size;
    expect(partsFor(await readFileStart(file, new FollowedFile(), size), size, 'utf-8', 3)).toBe(3);
    const one = await stage(file, 1);
    const three = await stage(file, 3);
    if (kind === 'sqlite') expect(three.parts).toBe(3);
    expect(three).toMatchObject({ rows: ROWS, valid: ROWS - 5 });
    expect([...three.errors].sort()).toEqual([
      '6 email: is not a valid e-mail address',
      '70001 user_id: duplicate user_id: it already appears on line 11; each user_id may appear only once',
      '120001 user_id: duplicate user_id: it already appears on line 6; each user_id may appear only once',
      '130001 user_id: duplicate user_id: it already appears on line 70002; each user_id may appear only once',
      '140001 email: is not a valid e-mail address',
    ].sort());
    expect({ ...one, parts: three.parts }).toEqual({ ...three, errors: one.errors });
    expect(three.errors).toEqual(one.errors);
  });

  it('reads a file with threads started ahead of it, for its kind only, the same as without', async () => {
    const file = writeRoster('warm.csv', ROWS, new Map([[7, 'u7,Bad,Email,not-an-email,student,SCH1,1']]));
    const cold = await stage(file, 2);
    const samegoal = warmParseThreads('samegoal-users', 'none', 3);
    const roster = warmParseThreads('roster-students', 'none', 1);
    const sso = warmParseThreads('samegoal-users', 'google', 1);
    const warm = await stage(file, 2);
    expect(warm).toEqual(cold);
    expect(warm).toMatchObject({ rows: ROWS, valid: ROWS - 1 });
    // Two of the three samegoal threads read the parts; the others were never used.
    expect(await samegoal.end()).toBe(1);
    expect(await roster.end()).toBe(1);
    expect(await sso.end()).toBe(1);
    expect(await samegoal.end()).toBe(0); // idempotent
    // With none waiting, the parts get threads of their own.
    expect(await stage(file, 2)).toEqual(cold);
  });

  it('reads a file while it arrives, each part waiting for its bytes', async () => {
    const edits = new Map<number, string>([[150_000, 'u20,Late,Duplicate,late@lincoln.example.org,student,SCH1,1']]);
    const source = writeRoster('source.csv', ROWS, edits);
    const whole = await stage(source, 3);
    // A download writes the file front to back in 256 KiB steps while the parts read it.
    const arriving = path.join(dir, 'arriving.csv');
    const bytes = fs.readFileSync(source);
    const growing = new GrowingFile();
    const fd = fs.openSync(arriving, 'w');
    const download = (async () => {
      await new Promise((r) => setTimeout(r, 20));
      growing.sized(bytes.length);
      for (let at = 0; at < bytes.length; at += 256 * 1024) {
        fs.writeSync(fd, bytes, at, Math.min(256 * 1024, bytes.length - at), at);
        growing.grew(Math.min(bytes.length, at + 256 * 1024));
        await new Promise((r) => setTimeout(r, 2));
      }
      fs.closeSync(fd);
      growing.complete();
    })();
    const followed = await stage(arriving, 3, 1 << 20, growing.shared);
    await download;
    expect(followed).toEqual(whole);
    expect(whole.errors).toEqual(['150001 user_id: duplicate user_id: it already appears on line 21; each user_id may appear only once']);
  });

  it('reads the file as one part when a cut would fall inside a quoted value', async () => {
    // A quoted value of many lines right across the middle of the file.
    const notes = Array.from({ length: 200_000 }, (_, i) => `note line ${i}`).join('\n');
    const middle = Math.floor(ROWS / 2);
    const edits = new Map<number, string>([
      [middle, `u${middle},"${notes}",Multi,multi@lincoln.example.org,student,SCH1,1`],
      [ROWS - 1, `u${ROWS - 1},Bad,Email,nope,student,SCH1,1`],
    ]);
    const file = writeRoster('quoted.csv', ROWS, edits);
    const size = fs.statSync(file).size;
    const cut = (await partBounds(file, new FollowedFile(), size, 1, 2)).start;
    const multiStart = fs.readFileSync(file, 'utf8').indexOf(`u${middle},"`);
    expect(cut).toBeGreaterThan(multiStart);
    expect(cut).toBeLessThan(multiStart + notes.length);
    const two = await stage(file, 2, 8 << 20);
    // The row with the long value fails (a name is at most 100 characters), on the line it
    // starts on; the failing row after it is on a line that counts the 199,999 line breaks
    // inside the quoted value.
    expect(two).toMatchObject({ rows: ROWS, valid: ROWS - 2 });
    expect(two.errors).toEqual([`${middle + 1} first_name: is longer than 100 characters`, `${ROWS + 200_000 - 1} email: is not a valid e-mail address`]);
    expect(await stage(file, 1, 8 << 20)).toEqual({ ...two, parts: kind === 'sqlite' ? 1 : 0 });
  });
});
