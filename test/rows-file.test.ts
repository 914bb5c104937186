// A table written without SQLite (rows-file.ts) must be a database SQLite reads, checks, and
// changes like one it wrote itself: same values back, integrity_check ok, and still ok after
// SQLite adds tables and an index and updates and deletes rows in it.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import { RowsFileWriter, type RowsFileValue } from '../src/store/sqlite/rows-file.js';
import { prng } from './harness/prng.js';

const CREATE = 'CREATE TABLE rows (line INTEGER PRIMARY KEY, key TEXT NOT NULL, active INTEGER NOT NULL, note TEXT, n INTEGER, pw_same INTEGER NOT NULL DEFAULT 0)';
let dir: string;

afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

function write(rows: RowsFileValue[][]): string {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'provisioner-rows-file-'));
  const file = path.join(dir, 'rows.sqlite');
  const writer = new RowsFileWriter(file, 'rows', CREATE);
  for (const row of rows) writer.add(row);
  writer.finish();
  return file;
}

function readBack(file: string): { rows: RowsFileValue[][]; integrity: string } {
  const db = new Database(file, { readonly: true });
  try {
    const rows = db.prepare('SELECT line, key, active, note, n, pw_same FROM rows ORDER BY line').raw().all() as RowsFileValue[][];
    return { rows, integrity: db.pragma('integrity_check', { simple: true }) as string };
  } finally {
    db.close();
  }
}

/** Text of every kind the UTF-8 encoder must get right: ASCII, 2-, 3- and 4-byte characters. */
function text(rand: () => number, length: number): string {
  const pool = ['a', 'Z', '0', ' ', ',', '"', 'é', 'ß', 'Ω', '中', '€', '😀', '𝄞', '\n', '\t'];
  let s = '';
  while (s.length < length) s += pool[Math.floor(rand() * pool.length)];
  return s;
}

describe('a rows file', () => {
  it('gives back every value as written, and SQLite finds nothing wrong with it', () => {
    const rand = prng(7);
    const rows: RowsFileValue[][] = [];
    for (let i = 0; i < 5000; i++) {
      const line = 2 + i * 3;
      const n = [0, 1, -1, 127, -128, 128, 40000, -40000, 8_000_000, 2 ** 31, -(2 ** 40), Number.MAX_SAFE_INTEGER][i % 12];
      rows.push([line, `K${line}`, i % 2, i % 5 === 0 ? null : i % 7 === 0 ? '' : text(rand, 1 + Math.floor(rand() * 60)), n, 0]);
    }
    const file = write(rows);
    expect(readBack(file)).toEqual({ rows, integrity: 'ok' });
  });

  it('keeps records larger than a page on overflow pages, and builds interior levels over many leaves', () => {
    const rand = prng(8);
    const rows: RowsFileValue[][] = [];
    // 40 KiB to 300 KiB records: single pages, one overflow page, chains of several.
    for (let i = 0; i < 40; i++) rows.push([100 + i, `big${i}`, 1, text(rand, 20_000 + Math.floor(rand() * 130_000)), i, 0]);
    // Then enough mid-sized rows for thousands of leaves: more than one interior page.
    for (let i = 0; i < 12_000; i++) rows.push([1000 + i, `mid${i}`, 1, 'x'.repeat(30_000 + (i % 7) * 1000), null, 0]);
    const file = write(rows);
    const back = readBack(file);
    expect(back.integrity).toBe('ok');
    expect(back.rows.length).toBe(rows.length);
    expect(back.rows.slice(0, 40)).toEqual(rows.slice(0, 40));
    expect(back.rows.at(-1)).toEqual(rows.at(-1));
  });

  it('stores an unpaired surrogate as U+FFFD, as SQLite does when given one', () => {
    const file = write([[2, 'k', 1, 'a\ud800b\udc00c', null, 0]]);
    expect(readBack(file).rows[0][3]).toBe('a\ufffdb\ufffdc');
  });

  it('is an empty table when no row was added', () => {
    expect(readBack(write([]))).toEqual({ rows: [], integrity: 'ok' });
  });

  it('can be changed by SQLite afterwards: new tables, an index, updates, deletes', () => {
    const rows: RowsFileValue[][] = Array.from({ length: 20_000 }, (_, i) => [i + 2, `K${i % 19_000}`, 1, `row ${i}`, i, 0]);
    const file = write(rows);
    const db = new Database(file);
    db.exec(`CREATE TABLE errors (line INTEGER NOT NULL, reason TEXT);
             INSERT INTO errors VALUES (5, 'bad');
             CREATE INDEX rows_key ON rows (key);
             UPDATE rows SET pw_same = 1, note = NULL WHERE line % 1000 = 0;
             DELETE FROM rows WHERE line BETWEEN 300 AND 7000;`);
    expect(db.prepare('SELECT count(*) FROM rows WHERE key = ?').pluck().get('K10')).toBe(2);
    expect(db.prepare('SELECT count(*), sum(pw_same) FROM rows').raw().get()).toEqual([20_000 - 6_701, 13]);
    expect(db.pragma('integrity_check', { simple: true })).toBe('ok');
    db.close();
  });

  it('refuses rows out of rowid order (a part is written front to back)', () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'provisioner-rows-file-'));
    const writer = new RowsFileWriter(path.join(dir, 'rows.sqlite'), 'rows', CREATE);
    writer.add([5, 'a', 1, null, null, 0]);
    expect(() => writer.add([5, 'b', 1, null, null, 0])).toThrow(/ascending order/);
    expect(() => writer.add([4.5, 'b', 1, null, null, 0])).toThrow(/ascending order/);
    const other = new RowsFileWriter(path.join(dir, 'other.sqlite'), 'rows', CREATE);
    expect(() => other.add([0, 'c', 1, null, null, 0])).toThrow(/positive rowids/);
    other.close();
    writer.close();
  });
});
