import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { DEFAULT_OPTIONS, type ImportOptions } from '../src/config.js';
import { readCsv, type CsvRecord } from '../src/import/csv-reader.js';
import { escapeFormula, formatProblems, unescapeFormula, writeErrorsCsv, type ErrorRow } from '../src/import/errors-csv.js';
import { mapHeaders } from '../src/import/headers.js';
import { KindRegistry } from '../src/import/kinds.js';
import { RowChecker } from '../src/import/rows.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'provisioner-errors-csv-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const OPTIONS: ImportOptions = { ...DEFAULT_OPTIONS, siteMap: {} };
const kinds = new KindRegistry();
let n = 0;
const fileName = (): string => path.join(dir, `errors-${++n}.csv`);

const problem = { column: 'email', value: 'x', reason: 'is not an e-mail address' };

async function readBack(file: string): Promise<CsvRecord[]> {
  const out: CsvRecord[] = [];
  await readCsv(file, (batch) => void out.push(...batch));
  return out;
}

/** Cells that a spreadsheet would run as formulas, or that look like it. */
const FORMULAS = [
  '=1+1',
  '+1 604 555 0100',
  '-2+3',
  '@SUM(A1:A2)',
  '\tindented',
  '\rcarriage',
  '=HYPERLINK("http://evil.example","click")\nsecond line',
  '=cmd|\' /C calc\'!A0\r\n',
  '-\n',
  '=',
];

/** Values an escape must leave alone, or bring back exactly. */
const TRICKY = [
  ...FORMULAS,
  '',
  ' ',
  'plain',
  "O'Brien",
  "'quoted'",
  "'",
  "''",
  'a=b',
  '1+1',
  ' =1',
  'Smith, "Jr."',
  'multi\nline',
  'crlf\r\ninside',
  'Zoë 😀',
  '""',
  ',',
];

describe('escapeFormula / unescapeFormula', () => {
  it('escapes every cell that starts like a formula, line breaks or not', () => {
    for (const v of FORMULAS) expect(escapeFormula(v)).toBe(`'${v}`);
    for (const v of ['plain', "O'Brien", 'a=b', ' =1', '', 'x\n=1']) expect(escapeFormula(v)).toBe(v);
  });

  it('undoes exactly what escapeFormula did', () => {
    for (const v of TRICKY) expect(unescapeFormula(escapeFormula(v))).toBe(v);
    // What escapeFormula never produces is left alone, apart from a leading ' before a formula character.
    for (const v of ["O'Brien", "'quoted'", "'", "''", "'1", 'plain', '']) expect(unescapeFormula(v)).toBe(v);
    expect(unescapeFormula("'+1 604 555 0100")).toBe('+1 604 555 0100');
    expect(unescapeFormula("'-2+3")).toBe('-2+3');
  });
});

describe('writeErrorsCsv', () => {
  it('starts with a UTF-8 BOM and ends lines with CRLF', async () => {
    const file = fileName();
    const count = await writeErrorsCsv(file, ['unique_id', 'first_name'], [[{ line: 2, raw: ['a1', 'Zoë'], problems: [problem] }]]);
    expect(count).toBe(1);
    const bytes = fs.readFileSync(file);
    expect([...bytes.subarray(0, 3)]).toEqual([0xef, 0xbb, 0xbf]);
    expect(bytes.subarray(3).toString('utf8')).toBe(
      'unique_id,first_name,error\r\n' + 'a1,Zoë,"line 2: email ""x"": is not an e-mail address"\r\n',
    );
  });

  it('escapes formula cells, with and without line breaks, in what it writes', async () => {
    const file = fileName();
    const header = FORMULAS.map((_, i) => `c${i}`);
    await writeErrorsCsv(file, header, [[{ line: 7, raw: FORMULAS, problems: [problem] }]]);
    const text = fs.readFileSync(file, 'utf8');
    expect(text).toContain(`"'=HYPERLINK(""http://evil.example"",""click"")\nsecond line"`);
    expect(text).toContain(",'+1 604 555 0100,'-2+3,'@SUM(A1:A2),");
    const [, row] = await readBack(file);
    expect(row.values.slice(0, -1)).toEqual(FORMULAS.map((v) => `'${v}`));
    // No cell of the file, as a spreadsheet reads it, starts like a formula.
    expect(row.values.filter((v) => /^[=+\-@\t\r]/.test(v))).toEqual([]);
  });

  it('writes one line per row with the header width, in bounded batches', async () => {
    const file = fileName();
    async function* rows(): AsyncIterable<ErrorRow[]> {
      for (let b = 0; b < 50; b++) {
        yield Array.from({ length: 1000 }, (_, j) => {
          const i = b * 1000 + j;
          return { line: i + 2, raw: i % 2 ? [`u${i}`] : [`u${i}`, 'x', 'extra'], problems: [problem] };
        });
      }
    }
    expect(await writeErrorsCsv(file, ['unique_id', 'first_name'], rows())).toBe(50_000);
    const records = await readBack(file);
    expect(records).toHaveLength(50_001);
    expect(records[1].values).toEqual(['u0', 'x', 'line 2: email "x": is not an e-mail address']);
    expect(records[2].values).toEqual(['u1', '', 'line 3: email "x": is not an e-mail address']);
  });

  it('creates the file with mode 0644', async () => {
    const file = fileName();
    const umask = process.umask(0);
    try {
      await writeErrorsCsv(file, ['unique_id'], []);
    } finally {
      process.umask(umask);
    }
    expect(fs.statSync(file).mode & 0o777).toBe(0o644);
  });

  it('formats the problems of a row', () => {
    expect(
      formatProblems({
        line: 4,
        raw: [],
        problems: [problem, { column: '', value: '', reason: 'this row has 3 values but the header has 2 columns' }],
      }),
    ).toBe('line 4: email "x": is not an e-mail address; line 4: this row has 3 values but the header has 2 columns');
  });
});

describe('an errors.csv uploaded again as it is', () => {
  const kind = kinds.get('opscom-users');
  const header = ['unique_id', 'login_source', 'first_name', 'last_name', 'phone_cell', 'student_phone', 'street', 'city', 'email'];
  const rows: string[][] = [
    ['A1', 'saml', 'Zoë', "O'Brien", '+1 604 555 0100', '-2+3', '=1+1\n2 Main St', 'Köln', 'not-an-email'],
    ['A2', 'local', '@handle', 'Smith, "Jr."', '+1 604 555 0199', '=HYPERLINK("http://x","y")', 'crlf\r\ninside', ' padded ', 'a2@example.org'],
    ['A3', '', '\tTab', '-', '+', '@', '', '', 'a3@example.org'],
    ['A 4', 'saml', '', '', '', '', '', '', ''],
  ];

  it('gives back exactly the original values, and the same checked rows', async () => {
    const plain = mapHeaders(header, kind, false);
    if (!plain.ok) throw new Error(plain.problem);
    expect(plain.map.fromErrorsCsv).toBe(false);
    const original = new RowChecker(kind, plain.map, OPTIONS, 'lincoln', null);

    const file = fileName();
    await writeErrorsCsv(file, header, [rows.map((raw, i) => ({ line: i + 2, raw, problems: [problem] }))]);
    const [head, ...back] = await readBack(file);
    const again = mapHeaders(head.values, kind, false);
    if (!again.ok) throw new Error(again.problem);
    expect(again.map.fromErrorsCsv).toBe(true);
    expect(again.map.original).toEqual(header);
    const checker = new RowChecker(kind, again.map, OPTIONS, 'lincoln', null);

    expect(back).toHaveLength(rows.length);
    for (let i = 0; i < rows.length; i++) {
      // The cells as written come back unescaped exactly; the error column is extra.
      expect(back[i].values.slice(0, header.length).map(unescapeFormula)).toEqual(rows[i]);
      const a = checker.check(i + 2, back[i].values);
      const b = original.check(i + 2, rows[i]);
      expect(a.ok).toBe(b.ok);
      if (a.ok && b.ok) expect(a.row).toEqual(b.row);
      if (!a.ok && !b.ok) expect(a.problems).toEqual(b.problems);
    }
    const first = checker.check(2, back[0].values);
    expect(first.ok).toBe(false); // the bad e-mail
    const second = checker.check(3, back[1].values);
    if (!second.ok) throw new Error(JSON.stringify(second.problems));
    // first_name, and the extra columns as a JSON merge patch
    expect(second.row[checker.columns.indexOf('first_name')]).toBe('@handle');
    expect(JSON.parse(String(second.row[checker.columns.indexOf('attrs')]))).toMatchObject({ phone_cell: '+1 604 555 0199', student_phone: '=HYPERLINK("http://x","y")', street: 'crlf\r\ninside', city: 'padded' });
  });

  it('leaves a leading apostrophe alone in a file that is not an errors.csv', () => {
    const plain = mapHeaders(header, kind, false);
    if (!plain.ok) throw new Error(plain.problem);
    const checker = new RowChecker(kind, plain.map, OPTIONS, 'lincoln', null);
    const result = checker.check(2, ['A1', 'saml', '', '', "'+1 604", '', '', '', '']);
    if (!result.ok) throw new Error(JSON.stringify(result.problems));
    expect(JSON.parse(String(result.row[checker.columns.indexOf('attrs')])).phone_cell).toBe("'+1 604");
  });
});
