// Whether a part's keys came in an order the apply can follow as it is (key-runs.ts), and that a
// part file's writer says so: a scattered part is then read sorted by key (stage.ts).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { KeyRuns, MAX_KEY_RUNS } from '../src/store/sqlite/key-runs.js';
import { StagePartWriter } from '../src/store/sqlite/stage-part.js';

const id = (prefix: string, n: number) => `${prefix}${String(n).padStart(8, '0')}`;

function runsOf(keys: string[]): KeyRuns {
  const runs = new KeyRuns();
  for (const k of keys) runs.add(k);
  return runs;
}

/** A fixed shuffle (the same every run). */
function shuffled<T>(items: T[]): T[] {
  const out = items.slice();
  let seed = 7;
  for (let i = out.length - 1; i > 0; i--) {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    const j = seed % (i + 1);
    [out[i], out[j]] = [out[j], out[i]];
  }
  return out;
}

describe('key runs', () => {
  it('a file sorted by its key is one run', () => {
    const runs = runsOf(Array.from({ length: 10_000 }, (_, i) => id('S', i)));
    expect({ runs: runs.runs, scattered: runs.scattered }).toEqual({ runs: 1, scattered: false });
  });

  it('groups whose keys each come in order, such as employees among students, are a run each', () => {
    // As the benchmark's file: E… and S… ids mixed, each ascending.
    const keys = Array.from({ length: 10_000 }, (_, i) => id(i % 3 === 0 ? 'E' : 'S', i));
    const runs = runsOf(keys);
    expect({ runs: runs.runs, scattered: runs.scattered }).toEqual({ runs: 2, scattered: false });
  });

  it('a key repeated (a duplicate) or a few rows added out of place at the end start no more than a run each', () => {
    const keys = [...Array.from({ length: 1000 }, (_, i) => id('S', i * 2)), id('S', 500), id('S', 500), id('S', 501), id('S', 777)];
    expect(runsOf(keys).scattered).toBe(false);
  });

  it(`more than ${MAX_KEY_RUNS} runs is scattered: a shuffled file, a file sorted by another column, a file sorted backwards`, () => {
    const ids = Array.from({ length: 10_000 }, (_, i) => id('S', i));
    expect(runsOf(shuffled(ids)).scattered).toBe(true);
    // Sorted by school, each school's ids in order: as many runs as schools, all interleaved.
    const bySchool = [...ids].sort((a, b) => (Number(a.slice(1)) % 40) - (Number(b.slice(1)) % 40) || (a < b ? -1 : 1));
    expect(runsOf(bySchool).scattered).toBe(true);
    expect(runsOf([...ids].reverse()).scattered).toBe(true);
    const fewer = runsOf([...ids].reverse().slice(0, MAX_KEY_RUNS));
    expect({ runs: fewer.runs, scattered: fewer.scattered }).toEqual({ runs: MAX_KEY_RUNS, scattered: false });
  });
});

describe("a part file's writer", () => {
  it('says whether the valid rows came scattered; failing rows do not count', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'provisioner-key-runs-'));
    try {
      const write = (name: string, keys: string[]): boolean => {
        const writer = new StagePartWriter(path.join(dir, name), ['line', 'key', 'active']);
        keys.forEach((key, i) => {
          // Every other row fails, with a key that would scatter the order if it counted.
          if (i % 2) writer.addFailed({ line: i + 2, key: id('A', keys.length - i), raw: [], problems: [{ column: 'x', value: '', reason: 'is required' }] });
          else writer.addRow([i + 2, key, 1]);
        });
        writer.finish(false);
        return writer.scattered;
      };
      const ids = Array.from({ length: 400 }, (_, i) => id('S', i));
      expect(write('in-order.sqlite', ids)).toBe(false);
      expect(write('shuffled.sqlite', shuffled(ids))).toBe(true);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
