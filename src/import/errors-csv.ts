// errors.csv: the failing rows with their original columns plus an `error` column, so the
// district can fix the rows and upload the file again as it is. Passwords are blanked, and
// cells that a spreadsheet would run as formulas are escaped.
import fs from 'node:fs';
import Papa from 'papaparse';
import type { HeaderMap } from './headers.js';
import type { StagedError } from './stage.js';

export function formatProblems(e: StagedError): string {
  return e.problems
    .map((p) => (p.column ? `${p.column}${p.value ? ` "${p.value}"` : ''}: ${p.reason}` : p.reason))
    .map((r) => `line ${e.line}: ${r}`)
    .join('; ');
}

/** Writes errors.csv to `file`; returns the number of rows written. */
export function writeErrorsCsv(file: string, headers: HeaderMap, errors: Iterable<StagedError>): number {
  const secret = headers.columns.map((c) => c.field === 'password');
  const fd = fs.openSync(file, 'w');
  let n = 0;
  try {
    const unparse = (rows: string[][]) => Papa.unparse(rows, { escapeFormulae: true, newline: '\r\n' }) + '\r\n';
    fs.writeSync(fd, unparse([[...headers.original, 'error']]));
    let batch: string[][] = [];
    for (const e of errors) {
      const cells = headers.original.map((_, i) => (secret[i] ? '' : (e.raw[i] ?? '')));
      batch.push([...cells, formatProblems(e)]);
      n++;
      if (batch.length >= 1000) {
        fs.writeSync(fd, unparse(batch));
        batch = [];
      }
    }
    if (batch.length) fs.writeSync(fd, unparse(batch));
  } finally {
    fs.closeSync(fd);
  }
  return n;
}
