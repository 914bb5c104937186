// errors.csv: the failing rows with their original columns plus an `error` column, so the
// district can fix the rows and upload the file again as it is.
//
// It opens in a spreadsheet, so: a UTF-8 BOM first (Excel on Windows reads a file without one as
// ANSI and garbles `Zoë`), CRLF line ends, and every cell a spreadsheet would run as a formula
// escaped with a leading `'`. Uploaded again, the trailing `error` column marks the file as an
// errors.csv (see headers.ts) and the rows checker undoes the escaping, so no value changes.
import fs from 'node:fs';
import { ERROR_COLUMN } from './headers.js';
import type { ErrorRow } from '../store/types.js';

export type { ErrorRow };

/** The characters that make a spreadsheet read a cell as a formula (OWASP's CSV injection list). */
const FORMULA_START = /^[=+\-@\t\r]/;
const APOSTROPHE = 0x27;

/**
 * `'`-prefixes a cell that starts with = + - @ TAB or CR, so a spreadsheet shows it as text. The
 * whole cell counts, line breaks included (papaparse's escapeFormulae misses `=HYPERLINK(…)\n…`).
 */
export function escapeFormula(cell: string): string {
  return FORMULA_START.test(cell) ? `'${cell}` : cell;
}

/** The inverse of escapeFormula: a leading `'` followed by = + - @ TAB or CR is removed. */
export function unescapeFormula(cell: string): string {
  return cell.charCodeAt(0) === APOSTROPHE && FORMULA_START.test(cell.slice(1, 2)) ? cell.slice(1) : cell;
}

export function formatProblems(e: { line: number; problems: ErrorRow["problems"]; raw?: string[] }): string {
  return e.problems
    .map((p) => (p.column ? `${p.column}${p.value ? ` "${p.value}"` : ''}: ${p.reason}` : p.reason))
    .map((r) => `line ${e.line}: ${r}`)
    .join('; ');
}

const NEEDS_QUOTES = /[",\r\n]|^\s|\s$/;

function cell(value: string): string {
  const v = escapeFormula(value);
  return NEEDS_QUOTES.test(v) ? `"${v.replace(/"/g, '""')}"` : v;
}

function line(cells: string[]): string {
  return cells.map(cell).join(',') + '\r\n';
}

/** Text written at a time: memory stays bounded however many rows there are. */
const WRITE_BATCH = 64 * 1024;

/**
 * Writes errors.csv to `file` (created with mode 0644): `header` plus an `error` column, then one
 * line per row with as many values as the header has. Rows come in batches (pages of the
 * store). Returns the number of rows written.
 */
export async function writeErrorsCsv(file: string, header: string[], batches: Iterable<ErrorRow[]> | AsyncIterable<ErrorRow[]>): Promise<number> {
  const fd = fs.openSync(file, 'w', 0o644);
  let n = 0;
  try {
    fs.fchmodSync(fd, 0o644);
    let pending = '\uFEFF' + line([...header, ERROR_COLUMN]);
    for await (const rows of batches) {
      for (const row of rows) {
        const cells = header.map((_, i) => row.raw[i] ?? '');
        cells.push(formatProblems(row));
        pending += line(cells);
        n++;
        if (pending.length >= WRITE_BATCH) {
          fs.writeSync(fd, pending);
          pending = '';
        }
      }
    }
    if (pending) fs.writeSync(fd, pending);
  } finally {
    fs.closeSync(fd);
  }
  return n;
}
