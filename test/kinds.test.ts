// A row's check is two validators: a fast one that only says "passes", and, for a row it fails,
// the full one that says why. The fast one counts lengths in UTF-16 units, which must never let
// through what the full one, counting characters, refuses. Checked on rows of emoji (two units
// a character) at and over the limits, and on a kind whose minLength is more than 1.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { DEFAULT_OPTIONS } from '../src/config.js';
import { mapHeaders } from '../src/import/headers.js';
import { KindRegistry, minLengthsAtMostOne, type CompiledKind } from '../src/import/kinds.js';
import { RowChecker } from '../src/import/rows.js';

const EMOJI = '😀'; // one character, two UTF-16 units

function checker(kind: CompiledKind, header: string[]): RowChecker {
  const mapped = mapHeaders(header, kind, false);
  if (!mapped.ok) throw new Error(mapped.problem);
  return new RowChecker(kind, mapped.map, { ...DEFAULT_OPTIONS, siteMap: {} }, 'lincoln', null);
}

const kindDirs: string[] = [];
afterEach(() => {
  for (const d of kindDirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

/** A kind keyed by an `id` column, with these other columns, written to a new folder of its own. */
function customKind(name: string, required: string[], properties: Record<string, object>): { dir: string; schema: object } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'provisioner-kinds-'));
  kindDirs.push(dir);
  const schema = {
    $schema: 'http://json-schema.org/draft-07/schema#',
    title: name,
    'x-provisioner': { key: 'id' },
    type: 'object',
    additionalProperties: false,
    required: ['id', ...required],
    properties: { id: { type: 'string', minLength: 1, maxLength: 10, 'x-field': 'externalId' }, ...properties },
  };
  fs.writeFileSync(path.join(dir, `${name}.schema.json`), JSON.stringify(schema));
  return { dir, schema };
}

const problemsOf = (c: RowChecker, cells: string[]) => {
  const r = c.check(2, cells);
  return r.ok ? [] : r.problems.map((p) => `${p.column}: ${p.reason}`);
};

describe('row checks count characters, not UTF-16 units', () => {
  it('takes a name of 100 emoji and refuses one of 101 (first_name is at most 100 characters)', () => {
    const kind = new KindRegistry().get('samegoal-users');
    const c = checker(kind, ['user_id', 'first_name', 'last_name', 'email']);
    expect(kind.fast({ user_id: 'u1', first_name: EMOJI.repeat(100), last_name: 'L', email: 'a@b.example' })).toBe(false); // 200 units: the full check decides
    expect(problemsOf(c, ['u1', EMOJI.repeat(100), 'Lovelace', 'ada@lincoln.example'])).toEqual([]);
    expect(problemsOf(c, ['u1', EMOJI.repeat(101), 'Lovelace', 'ada@lincoln.example'])).toEqual([expect.stringMatching(/^first_name: .*100 characters/)]);
    expect(problemsOf(c, ['u1', 'x'.repeat(101), 'Lovelace', 'ada@lincoln.example'])).toEqual([expect.stringMatching(/^first_name: .*100 characters/)]);
  });

  it('counts characters in the fast check too where a minLength is over 1, so two emoji are not three characters', () => {
    const { dir, schema } = customKind('codes', ['code'], { code: { type: 'string', minLength: 3, maxLength: 5 } });
    expect(minLengthsAtMostOne(schema)).toBe(false);
    const kind = new KindRegistry(dir).get('codes');
    const c = checker(kind, ['id', 'code']);
    expect(kind.fast({ id: 'a', code: EMOJI.repeat(2) })).toBe(false); // 4 units, but 2 characters
    expect(problemsOf(c, ['a', EMOJI.repeat(2)])).toEqual([expect.stringMatching(/^code: /)]);
    expect(problemsOf(c, ['a', EMOJI.repeat(3)])).toEqual([]);
    expect(problemsOf(c, ['a', EMOJI.repeat(5)])).toEqual([]);
    expect(problemsOf(c, ['a', EMOJI.repeat(6)])).toEqual([expect.stringMatching(/^code: /)]);
  });

  it('uses the faster count for every kind shipped (their minLengths are all 1)', () => {
    const dir = path.resolve(import.meta.dirname, '../schemas');
    for (const f of fs.readdirSync(dir).filter((n) => n.endsWith('.schema.json') && n !== 'config.schema.json')) {
      expect(minLengthsAtMostOne(JSON.parse(fs.readFileSync(path.join(dir, f), 'utf8'))), f).toBe(true);
    }
  });

  it('prints nothing while the validators are compiled (ajv calls the option it is given deprecated)', () => {
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => {});
    try {
      const registry = new KindRegistry();
      for (const name of registry.names()) registry.get(name);
      expect(warn).not.toHaveBeenCalled();
    } finally {
      warn.mockRestore();
    }
  });
});

describe('the record a row is checked as', () => {
  it('holds an empty or blank cell as missing, so a required column says so', () => {
    const c = checker(new KindRegistry().get('samegoal-users'), ['user_id', 'first_name', 'last_name', 'email']);
    expect(problemsOf(c, ['u1', 'Ada', 'Lovelace', 'ada@lincoln.example'])).toEqual([]);
    for (const blank of ['', '   ']) {
      expect(problemsOf(c, ['u1', blank, 'Lovelace', 'ada@lincoln.example'])).toEqual([expect.stringMatching(/^first_name: /)]);
    }
    // Rows one after another share nothing: a value of one row is not seen in the next.
    expect(problemsOf(c, ['u2', 'Grace', '', 'grace@lincoln.example'])).toEqual([expect.stringMatching(/^last_name: /)]);
    expect(problemsOf(c, ['u3', 'Alan', 'Turing', 'alan@lincoln.example'])).toEqual([]);
  });

  it('holds every column as a property of its own, even one named as an object method', () => {
    const { dir } = customKind('odd', ['constructor'], {
      constructor: { type: 'string', minLength: 1, maxLength: 3 },
      toString: { type: 'string', maxLength: 3 },
    });
    const c = checker(new KindRegistry(dir).get('odd'), ['id', 'constructor', 'toString']);
    expect(problemsOf(c, ['a', 'abc', 'xyz'])).toEqual([]);
    expect(problemsOf(c, ['a', 'abcd', 'xyz'])).toEqual([expect.stringMatching(/^constructor: /)]);
    expect(problemsOf(c, ['a', '', 'xyz'])).toEqual([expect.stringMatching(/^constructor: /)]);
    expect(problemsOf(c, ['a', 'abc', 'wxyz'])).toEqual([expect.stringMatching(/^toString: /)]);
    expect(problemsOf(c, ['a', 'abc', ''])).toEqual([]);
  });
});
