// Reading one local CSV file the way an import needs it: the header decides whether the file can
// be read at all; then every row is checked and turned into a staged row (or a row error), and
// handed on in batches. A second mode reads the file again for a few lines only (the cells of a
// duplicate row for errors.csv, the passwords to hash), so that no password is ever stored, not
// even in a staging table. Runs on a parse thread (parse-thread.ts) for large files, inline for
// small ones: the same code either way.
import fs from 'node:fs';
import type { ImportOptions } from '../config.js';
import type { PresentFields, StageBatch } from '../store/types.js';
import { STAGE_SEPARATOR } from '../store/types.js';
import { CsvUnreadable, readCsv } from './csv-reader.js';
import { mapHeaders } from './headers.js';
import type { KindRegistry } from './kinds.js';
import { KeyFilter } from './key-filter.js';
import { RowChecker } from './rows.js';

export interface ParseRequest {
  file: string;
  kind: string;
  tenant: string;
  options: ImportOptions;
  encoding: string;
  maxRecordBytes: number;
  /** base64; null: no digests (every password is compared by scrypt). */
  digestKey: string | null;
  /** 'stage': check every row; 'collect': only the rows at `lines` (ascending). */
  mode: 'stage' | 'collect';
  /** How staged rows travel: the store's (StageBatch.rows). */
  format?: 'joined' | 'copy';
  lines?: number[];
}

export interface CollectedRow {
  line: number;
  /** The row's cells for errors.csv (secrets blanked). */
  raw: string[];
  /** The password as it will be hashed (formatted), or null. */
  password: string | null;
}

export type ParseEvent =
  | { type: 'header'; original: string[]; present: PresentFields }
  | { type: 'batch'; batch: StageBatch; rowsSoFar: number }
  | { type: 'collected'; rows: CollectedRow[] };

export interface ParseSummary {
  /** A file-level problem: nothing of the file can be applied. */
  rejected: string | null;
  header: string[] | null;
  rows: number;
  sha1: string;
  bytes: number;
}

/** Rows per batch: enough to amortise a message and a transaction, small enough to bound memory. */
const ROWS_PER_BATCH = 5000;

export async function parseFile(req: ParseRequest, kinds: KindRegistry, emit: (e: ParseEvent) => void | Promise<void>): Promise<ParseSummary> {
  const kind = kinds.get(req.kind, { sso: req.options.sso });
  const digestKey = req.digestKey === null ? null : Buffer.from(req.digestKey, 'base64');
  let checker: RowChecker | undefined;
  let header: string[] | null = null;
  let rejected: string | null = null;
  let rows = 0;
  let rowsOut: (string | null)[][] = [];
  let tabSeen = false; // COPY: a batch's text held a tab, which a value may then hold
  let count = 0;
  let failedOut: StageBatch['failed'] = [];
  let repeats: number[] = [];
  const copy = req.format === 'copy';
  // Besides the file's own text, only the site map's labels reach a staged row unescaped.
  const labelsHoldSeparator = Object.values(req.options.siteMap).some((label) => label.includes(STAGE_SEPARATOR));
  const labelsHoldTab = Object.values(req.options.siteMap).some((label) => label.includes('\t'));
  // Sized for the shortest plausible rows: a longer file only makes false alarms a little likelier.
  const seen = new KeyFilter(fs.statSync(req.file).size / 40);
  let awkward = false; // a value holds the separator: this batch goes as an array
  let collected: CollectedRow[] = [];
  const wanted = req.lines ?? [];
  let next = 0; // index into wanted (collect mode)

  const flush = async () => {
    if (req.mode === 'stage' && (count || failedOut.length)) {
      const rowsText = copy ? copyRows(rowsOut, tabSeen) : awkward ? '' : joinRows(rowsOut);
      const batch: StageBatch = { count, rows: rowsText, failed: failedOut, repeats, ...(awkward && !copy ? { values: rowsOut.flat() } : {}) };
      rowsOut = [];
      tabSeen = false;
      count = 0;
      failedOut = [];
      repeats = [];
      awkward = false;
      await emit({ type: 'batch', batch, rowsSoFar: rows });
    }
    if (req.mode === 'collect' && collected.length) {
      const out = collected;
      collected = [];
      await emit({ type: 'collected', rows: out });
    }
  };

  let summary;
  try {
    summary = await readCsv(
      req.file,
      async (records, text) => {
        // One native search per batch instead of one per value: almost every batch holds
        // neither a NUL nor the staging separator.
        const mayHoldNul = text.includes('\u0000');
        const mayHoldSeparator = !copy && (labelsHoldSeparator || text.includes(STAGE_SEPARATOR));
        tabSeen ||= copy && (labelsHoldTab || text.includes('\t'));
        for (const record of records) {
          if (rejected) return;
          if (!checker) {
            const mapped = mapHeaders(record.values, kind, req.options.strictHeaders);
            if (!mapped.ok) {
              rejected = mapped.problem;
              return;
            }
            header = mapped.map.original;
            checker = new RowChecker(kind, mapped.map, req.options, req.tenant, digestKey);
            if (req.mode === 'stage') await emit({ type: 'header', original: header, present: checker.present });
            continue;
          }
          rows++;
          if (req.mode === 'collect') {
            while (next < wanted.length && wanted[next] < record.line) next++;
            if (next >= wanted.length || wanted[next] !== record.line) continue;
            const result = checker.check(record.line, record.values);
            collected.push({ line: record.line, raw: result.ok ? checker.cellsForReport(record.values) : result.raw, password: result.password });
            if (collected.length >= 500) await flush();
            continue;
          }
          const result = checker.check(record.line, record.values, mayHoldNul);
          if (result.ok) {
            if (seen.add(result.key)) repeats.push(record.line);
            count++;
            const row = result.row;
            if (mayHoldSeparator && row.some((v) => v !== null && v.includes(STAGE_SEPARATOR))) awkward = true;
            rowsOut.push(row);
          } else {
            if (result.key) seen.add(result.key);
            failedOut.push({ line: record.line, key: result.key, raw: result.raw, problems: result.problems });
          }
          if (count + failedOut.length >= ROWS_PER_BATCH) await flush();
        }
      },
      { encoding: req.encoding, maxRecordBytes: req.maxRecordBytes },
    );
  } catch (err) {
    if (!(err instanceof CsvUnreadable)) throw err;
    return { rejected: err.message, header, rows, sha1: '', bytes: 0 };
  }
  await flush();
  if (!rejected && !checker) rejected = 'the file is empty; it needs a header row and at least one row of data';
  else if (!rejected && rows === 0) rejected = 'the file has a header row but no data rows; nothing was changed';
  return { rejected, header, rows, sha1: summary.sha1, bytes: summary.bytes };
}

/** Rows as one string, every value separated (an empty value is NULL): native joins, no loop per value. */
function joinRows(rows: (string | null)[][]): string {
  const lines = new Array<string>(rows.length);
  for (let i = 0; i < rows.length; i++) lines[i] = rows[i].join(STAGE_SEPARATOR);
  return lines.join(STAGE_SEPARATOR);
}

/** A character COPY's text format escapes (a tab is looked for in the batch's text instead). */
const COPY_SPECIAL = /[\\\n\r]/;

/**
 * Rows in COPY's text format: tab-separated, \N for NULL, backslash escapes. Most rows need no
 * escaping, which one native join and one search per row tell; the others are escaped value by
 * value. `mayHoldTab`: the rows' text held a tab somewhere.
 */
function copyRows(rows: (string | null)[][], mayHoldTab: boolean): string {
  const lines = new Array<string>(rows.length + 1);
  for (let r = 0; r < rows.length; r++) {
    const row = rows[r];
    const joined = row.join('\t');
    if (mayHoldTab || COPY_SPECIAL.test(joined)) lines[r] = copyLine(row);
    else lines[r] = row.includes(null) ? row.map((v) => v ?? '\\N').join('\t') : joined;
  }
  lines[rows.length] = ''; // the last line's line break
  return lines.join('\n');
}

function copyLine(values: (string | null)[]): string {
  return values.map((v) => (v === null ? '\\N' : v.replace(/[\\\t\n\r]/g, (c) => (c === '\\' ? '\\\\' : c === '\t' ? '\\t' : c === '\n' ? '\\n' : '\\r')))).join('\t');
}
