import { describe, expect, it } from 'vitest';
import { KeyFilter } from '../src/import/key-filter.js';

const key = (i: number) => `S${String(i).padStart(7, '0')}`;

describe('KeyFilter', () => {
  it('flags every key it has seen before, and few it has not', () => {
    const n = 200_000;
    const filter = new KeyFilter(n);
    let falseAlarms = 0;
    for (let i = 0; i < n; i++) if (filter.add(key(i))) falseAlarms++;
    for (let i = 0; i < n; i += 7) expect(filter.add(key(i))).toBe(true);
    // Confirmed against the staged rows afterwards, so a false alarm costs a lookup, not a row.
    expect(falseAlarms / n).toBeLessThan(0.02);
  });

  it('flags a key added by another thread sharing the same buffer', () => {
    const shared = KeyFilter.buffer(1000) as SharedArrayBuffer;
    const first = new KeyFilter(1000, shared);
    const second = new KeyFilter(1000, shared);
    expect(first.add('U-17')).toBe(false);
    expect(second.add('U-17')).toBe(true);
    expect(second.add('U-18')).toBe(false);
    expect(first.add('U-18')).toBe(true);
  });

  it('is sized by the keys planned: a byte a key, at least 1 KiB', () => {
    expect(KeyFilter.buffer(5_000_000).byteLength).toBe(5_000_000);
    expect(KeyFilter.buffer(10).byteLength).toBe(1024);
  });
});
