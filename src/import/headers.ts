// The header row decides whether a file can be read at all. Problems here reject the whole
// file, with a message that tells the district exactly which column to rename, add or remove.
import type { ColumnSpec, CompiledKind } from './kinds.js';

export interface HeaderMap {
  /** For each position in the file: the column it holds. */
  columns: ColumnSpec[];
  /** The header cells as the file spelled them, without an ignored `error` column. */
  original: string[];
  /** How many values a row must have (one more than columns when `error` is ignored). */
  width: number;
  /** The file is an errors.csv uploaded again: its formula escapes are undone. */
  fromErrorsCsv: boolean;
}

/** errors.csv adds this column; a fixed errors.csv uploaded again as it is must be accepted. */
export const ERROR_COLUMN = 'error';

const norm = (s: string): string => s.trim().toLowerCase();

export function mapHeaders(
  header: string[],
  kind: CompiledKind,
  strict: boolean,
): { ok: true; map: HeaderMap } | { ok: false; problem: string } {
  let original = header.map((h) => h.trim());
  const width = original.length;
  const fromErrorsCsv = original.length > 1 && norm(original[original.length - 1]) === ERROR_COLUMN && !kind.columns.some((c) => norm(c.name) === ERROR_COLUMN);
  if (fromErrorsCsv) original = original.slice(0, -1);
  if (strict) return strictMap(original, width, kind, fromErrorsCsv);

  const byName = new Map<string, ColumnSpec>();
  for (const c of kind.columns) {
    for (const n of [c.name, ...c.aliases]) byName.set(norm(n), c);
  }
  const columns: ColumnSpec[] = [];
  const unknown: string[] = [];
  const seen = new Map<string, string>();
  const duplicated: string[] = [];
  for (const h of original) {
    const col = byName.get(norm(h));
    if (!col) {
      unknown.push(h === '' ? '(an empty header cell)' : `"${h}"`);
      continue;
    }
    const first = seen.get(col.name);
    if (first !== undefined) duplicated.push(first === h ? `"${h}"` : `"${first}" and "${h}" (both are ${col.name})`);
    seen.set(col.name, h);
    columns.push(col);
  }
  const missing = kind.requiredNow.filter((r) => !seen.has(r));
  const problems: string[] = [];
  if (missing.length) {
    problems.push(`missing required column${missing.length > 1 ? 's' : ''} ${missing.map((m) => `"${m}"`).join(', ')}`);
  }
  if (unknown.length) {
    problems.push(
      `unknown column${unknown.length > 1 ? 's' : ''} ${unknown.join(', ')} ` +
        `(check the spelling; accepted columns: ${kind.columns.map((c) => c.name).join(', ')})`,
    );
  }
  if (duplicated.length) problems.push(`duplicated column ${duplicated.join(', ')}: keep one`);
  if (problems.length) return { ok: false, problem: `the header row has ${problems.join('; ')}` };
  return { ok: true, map: { columns, original, width, fromErrorsCsv } };
}

/** Exact names, exact order, as the roster spec demands; shows expected against found. */
function strictMap(original: string[], width: number, kind: CompiledKind, fromErrorsCsv: boolean): { ok: true; map: HeaderMap } | { ok: false; problem: string } {
  const expected = kind.columns.map((c) => c.name);
  // Optional trailing columns may be left out, but what is there must match in order.
  const prefixOk = original.length <= expected.length && original.every((h, i) => h === expected[i]);
  const missing = kind.requiredNow.filter((r) => !original.includes(r));
  if (prefixOk && missing.length === 0) {
    return { ok: true, map: { columns: original.map((_, i) => kind.columns[i]), original, width, fromErrorsCsv } };
  }
  const firstBad = original.findIndex((h, i) => h !== expected[i]);
  const where =
    firstBad >= 0
      ? ` The first difference is column ${firstBad + 1}: expected "${expected[firstBad] ?? '(nothing)'}", found "${original[firstBad]}".`
      : missing.length
        ? ` Missing: ${missing.join(', ')}.`
        : '';
  return {
    ok: false,
    problem:
      `the header row must be exactly ${expected.join(',')} (capital letters, underscores, in this order).` +
      ` Found ${original.join(',')}.${where}`,
  };
}
