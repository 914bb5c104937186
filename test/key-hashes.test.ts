// The key hashes a part writes beside its rows (src/store/sqlite/key-hashes.ts): the stage finds
// the rows that may hold a flagged key by them, so every row whose key has one of the hashes must
// come back, in file order, across the writer's buffer boundaries, and no other row.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { KeyHashWriter, keyHash, linesWithHashes } from '../src/store/sqlite/key-hashes.js';
import { collidingKeys } from './harness/colliding-keys.js';

let dir: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'provisioner-key-hashes-'));
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

describe('key hashes', () => {
  it('gives back exactly the lines whose key has one of the hashes, in order, past every buffer boundary', () => {
    const file = path.join(dir, 'part-0.sqlite-keys');
    const writer = new KeyHashWriter(file);
    const keys: string[] = [];
    for (let line = 2; line < 2 + 30_000; line++) {
      const key = `u${line % 7_000}`; // every key three times or so
      keys[line] = key;
      writer.add(line, keyHash(key));
    }
    writer.finish();
    expect(fs.statSync(file).size).toBe(30_000 * 8);
    const wanted = new Set(['u0', 'u6999', 'u1234'].map(keyHash));
    const expected = keys.flatMap((k, line) => (k !== undefined && wanted.has(keyHash(k)) ? [line] : []));
    expect(expected.length).toBeGreaterThan(6);
    expect(expected.some((l) => l > 8192 * 2)).toBe(true);
    expect(linesWithHashes(file, wanted)).toEqual(expected);
    expect(linesWithHashes(file, new Set())).toEqual([]);
    expect(linesWithHashes(file, new Set([keyHash('nobody')]))).toEqual([]);
  });

  it('finds a key and another one that only shares its hash: the stage tells them apart by the key', () => {
    const [a, b] = collidingKeys();
    expect(a).not.toBe(b);
    expect(keyHash(a)).toBe(keyHash(b));
    const file = path.join(dir, 'part-1.sqlite-keys');
    const writer = new KeyHashWriter(file);
    writer.add(10, keyHash(a));
    writer.add(11, keyHash('other'));
    writer.add(12, keyHash(b));
    writer.finish();
    expect(linesWithHashes(file, new Set([keyHash(b)]))).toEqual([10, 12]);
  });
});
