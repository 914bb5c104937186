// The heap's pacing (memory.ts) and the run's JSON written item by item (run-now.ts).
import { PassThrough } from 'node:stream';
import v8 from 'node:v8';
import { describe, expect, it } from 'vitest';
import { writeJsonList } from '../src/commands/run-now.js';
import { compactHeap, heapPacing, keepHeapSmall } from '../src/memory.js';
import type { SftpSession } from '../src/sftp/client.js';
import { followDownload } from '../src/worker/follow-download.js';

const newSpace = () => v8.getHeapSpaceStatistics().find((s) => s.space_name === 'new_space')!;

describe('memory', () => {
  it('paces the collector while any run holds it, and stops with the last one', () => {
    expect(heapPacing()).toBe(false);
    const first = keepHeapSmall();
    const second = keepHeapSmall();
    expect(heapPacing()).toBe(true);
    first();
    first(); // idempotent: the second run still holds it
    expect(heapPacing()).toBe(true);
    second();
    expect(heapPacing()).toBe(false);
  });

  /** Objects that live a while grow the young generation, as loading a large configuration does. */
  const growYoungGeneration = (): number => {
    let keep: unknown[] = [];
    for (let round = 0; round < 40; round++) keep = Array.from({ length: 50_000 }, (_, i) => ({ i, s: `value ${i} ${round}` }));
    expect(keep).toHaveLength(50_000);
    const grown = newSpace().physical_space_size;
    expect(grown).toBeGreaterThan(2 * 1024 * 1024);
    return grown;
  };

  it('gives back the young generation a load grew into', () => {
    const grown = growYoungGeneration();
    compactHeap();
    expect(newSpace().physical_space_size).toBeLessThan(grown / 2);
  });

  it('gives back the young generation before a large download, not before a small one', async () => {
    // The session's side of a download: it learns the size, then the bytes arrive.
    const session = (bytes: number) =>
      ({ download: async (_r: string, _l: string, p: { sized(n: number): void }) => p.sized(bytes) }) as unknown as SftpSession;
    const grown = growYoungGeneration();
    await followDownload(session(1024 * 1024), '/up/users.csv', '/tmp/unused').settled;
    expect(newSpace().physical_space_size).toBeGreaterThan(grown / 2);
    await followDownload(session(90 * 1024 * 1024), '/up/users.csv', '/tmp/unused').settled;
    expect(newSpace().physical_space_size).toBeLessThan(grown / 2);
  });

  it('writes a list as JSON.stringify(list, null, 2) does, one item at a time', () => {
    const text = (items: unknown[]) => {
      const out = new PassThrough();
      const chunks: string[] = [];
      out.on('data', (c: Buffer) => chunks.push(c.toString()));
      writeJsonList(out, items);
      return chunks.join('');
    };
    const items = [
      { tenant: 'a', status: 'nothing', epochs: [], settling: [], message: null },
      { tenant: 'b', status: 'ok', message: 'line one\nline two', epochs: [{ epoch: '20250101', files: [{ counts: { rows: 3 }, errors: [[1, 'x']] }] }] },
      'a string',
      7,
    ];
    expect(text(items)).toBe(JSON.stringify(items, null, 2) + '\n');
    expect(text([])).toBe('[]\n');
    expect(text([{}])).toBe(JSON.stringify([{}], null, 2) + '\n');
    // Past the items between two collections of the young generation: the same text.
    const many = Array.from({ length: 450 }, (_, i) => ({ tenant: `t${i}`, status: 'nothing', message: i % 7 ? null : `line\n${i}`, epochs: [] }));
    expect(text(many)).toBe(JSON.stringify(many, null, 2) + '\n');
  });
});
