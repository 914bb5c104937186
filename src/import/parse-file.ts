// Reading one local CSV file the way an import needs it. First the header row alone
// (readHeader): it decides whether the file can be read at all and which columns it carries.
// Then every row is checked and turned into a staged row (or a row error); a large file is read
// in parts at once, each by its own thread (parse-parts.ts), each part staged where its thread
// puts it. A second mode reads the file again for a few lines only (the cells of a duplicate row
// for errors.csv, the passwords to hash), so that no password is ever stored, not even in a
// staging table. The same code runs on a parse thread or inline.
import fs from 'node:fs';
import type { ImportOptions } from '../config.js';
import type { StageBatch } from '../store/types.js';
import { keyHash } from '../store/sqlite/key-hashes.js';
import { StagePartWriter, type FailedRow } from '../store/sqlite/stage-part.js';
import { CsvUnreadable, PartMisaligned, readCsv } from './csv-reader.js';
import { partBounds } from './file-parts.js';
import { FollowedFile } from './growing-file.js';
import { mapHeaders } from './headers.js';
import type { KindRegistry } from './kinds.js';
import { KeyFilter } from './key-filter.js';
import { RowChecker, type StagedRow } from './rows.js';

/** Where the checked rows of a part go. */
export type RowSink =
  /** Batches in COPY's text format, sent to the caller (a store that takes batches). */
  | { type: 'copy' }
  /** A part file this thread writes itself (stage-part.ts); `keyIndex` for a full sync. */
  | { type: 'part-file'; file: string; keyIndex: boolean };

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
  lines?: number[];
  /** stage: the header row as readHeader() gave it (a part past the start never sees it). */
  header?: string[];
  /** stage: which part of the file to read, of how many (default: all of it); see file-parts.ts. */
  part?: { index: number; count: number };
  /** The file is still being downloaded (GrowingFile.shared): reads wait for their bytes. */
  follow?: SharedArrayBuffer;
  sink?: RowSink;
  /** stage: the key filter every part of the file shares (KeyFilter.buffer()). */
  filter?: SharedArrayBuffer;
  /** stage: compute the SHA-1 of the whole file (the first part does, reading on past its end). */
  sha1?: boolean;
}

export interface CollectedRow {
  line: number;
  /** The row's cells for errors.csv (secrets blanked). */
  raw: string[];
  /** The password as it will be hashed (formatted), or null. */
  password: string | null;
}

export type ParseEvent =
  | { type: 'batch'; batch: StageBatch; rowsSoFar: number }
  | { type: 'progress'; rowsSoFar: number }
  | { type: 'collected'; rows: CollectedRow[] };

export interface ParseSummary {
  /** A file-level problem: nothing of the file can be applied. */
  rejected: string | null;
  /** The part ended inside a quoted value: the file must be read as one part. */
  misaligned?: boolean;
  rows: number;
  /** Valid and failing rows staged. */
  valid: number;
  failed: number;
  /** The first line the part covers. */
  firstLine: number;
  sha1: string;
  /** A part file's valid rows came in no useful key order (see store/sqlite/key-runs.ts). */
  scattered?: boolean;
}

/** Where a stage read puts each checked row (a part file's writer, or the batch being built). */
interface RowOut {
  /** A valid row, and its key's keyHash() (the key filter's, kept by a part file). */
  addRow(row: StagedRow, keyHash: number): void;
  addRepeat(line: number): void;
  addFailed(row: FailedRow): void;
}

/** Rows per batch: enough to amortise a transaction (or a message), small enough to bound memory. */
const ROWS_PER_BATCH = 5000;

class HeaderRead extends Error {}

/** The file's header row (its first record that is not blank), or why the file cannot be read. */
export async function readHeader(file: string, encoding: string, maxRecordBytes: number, follow?: SharedArrayBuffer): Promise<{ header: string[] } | { rejected: string }> {
  let header: string[] | null = null;
  try {
    await readCsv(
      file,
      (records) => {
        header = records[0].values;
        throw new HeaderRead();
      },
      { encoding, maxRecordBytes, sha1: false, follow },
    );
  } catch (err) {
    if (err instanceof CsvUnreadable) return { rejected: err.message };
    if (!(err instanceof HeaderRead)) throw err;
  }
  return header ? { header } : { rejected: 'the file is empty; it needs a header row and at least one row of data' };
}

export async function parseFile(req: ParseRequest, kinds: KindRegistry, emit: (e: ParseEvent) => void | Promise<void>): Promise<ParseSummary> {
  const kind = kinds.get(req.kind, { sso: req.options.sso });
  const digestKey = req.digestKey === null ? null : Buffer.from(req.digestKey, 'base64');
  const follow = new FollowedFile(req.follow);
  const size = await follow.size(() => fs.statSync(req.file).size);
  const part = req.part ? await partBounds(req.file, follow, size, req.part.index, req.part.count) : null;
  const summary: ParseSummary = { rejected: null, rows: 0, valid: 0, failed: 0, firstLine: part?.firstLine ?? 1, sha1: '' };
  let checker: RowChecker | undefined;
  let writer: StagePartWriter | null = null;
  const useHeader = (values: string[]): boolean => {
    const mapped = mapHeaders(values, kind, req.options.strictHeaders);
    if (!mapped.ok) {
      summary.rejected = mapped.problem;
      return false;
    }
    checker = new RowChecker(kind, mapped.map, req.options, req.tenant, digestKey);
    if (req.mode === 'stage' && req.sink?.type === 'part-file') writer = new StagePartWriter(req.sink.file, checker.columns);
    return true;
  };
  // A part past the start of the file gets its header from the caller; the first part and a
  // collecting read find it as their first record.
  let headerPending = !part || part.start === 0;
  if (req.mode === 'stage' && !headerPending && !useHeader(req.header!)) return summary;

  const copy = req.sink?.type === 'copy';
  let rowsOut: StagedRow[] = [];
  let tabSeen = false; // COPY: a batch's text held a tab, which a value may then hold
  let failedOut: FailedRow[] = [];
  let repeats: number[] = [];
  let reported = 0; // rows as of the last flush (committed to the part file, or sent as a batch)
  // Besides the file's own text, only the site map's labels reach a staged row unescaped.
  const labelsHoldTab = Object.values(req.options.siteMap).some((label) => label.includes('\t'));
  // Sized for the shortest plausible rows: a longer file only makes false alarms a little likelier.
  const seen = new KeyFilter(size / 40, req.filter);
  let collected: CollectedRow[] = [];
  const wanted = req.lines ?? [];
  let next = 0; // index into wanted (collect mode)

  // Where checked rows go: straight into the part file (no row outlives its record), or into
  // the batch for the caller.
  const batchOut: RowOut = {
    addRow: (row) => rowsOut.push(row),
    addRepeat: (line) => repeats.push(line),
    addFailed: (row) => failedOut.push(row),
  };
  const rowsTo = (): RowOut => writer ?? batchOut;

  const flush = async () => {
    if (writer) {
      if (summary.rows > reported) {
        writer.commit();
        await emit({ type: 'progress', rowsSoFar: summary.rows });
      }
    } else if (req.mode === 'stage' && (rowsOut.length || failedOut.length)) {
      const batch: StageBatch = { count: rowsOut.length, rows: copyRows(rowsOut, tabSeen), failed: failedOut, repeats };
      await emit({ type: 'batch', batch, rowsSoFar: summary.rows });
      summary.valid += rowsOut.length;
      summary.failed += failedOut.length;
      rowsOut = [];
      tabSeen = false;
      failedOut = [];
      repeats = [];
    }
    reported = summary.rows;
    if (req.mode === 'collect' && collected.length) {
      const out = collected;
      collected = [];
      await emit({ type: 'collected', rows: out });
    }
  };

  try {
    const read = await readCsv(
      req.file,
      async (records, text) => {
        // One native search per batch instead of one per value: almost every batch holds no NUL.
        const mayHoldNul = text.includes('\u0000');
        tabSeen ||= copy && (labelsHoldTab || text.includes('\t'));
        for (const record of records) {
          if (summary.rejected) return;
          if (headerPending) {
            headerPending = false;
            if (!useHeader(record.values)) return;
            continue;
          }
          summary.rows++;
          if (req.mode === 'collect') {
            while (next < wanted.length && wanted[next] < record.line) next++;
            if (next >= wanted.length || wanted[next] !== record.line) continue;
            const result = checker!.check(record.line, record.values);
            collected.push({ line: record.line, raw: result.ok ? checker!.cellsForReport(record.values) : result.raw, password: result.password });
            if (collected.length >= 500) await flush();
            continue;
          }
          const result = checker!.check(record.line, record.values, mayHoldNul);
          if (result.ok) {
            const hash = keyHash(result.key);
            if (seen.add(result.key, hash)) rowsTo().addRepeat(record.line);
            rowsTo().addRow(result.row, hash);
          } else {
            if (result.key) seen.add(result.key);
            rowsTo().addFailed({ line: record.line, key: result.key, raw: result.raw, problems: result.problems });
          }
          if (summary.rows - reported >= ROWS_PER_BATCH) await flush();
        }
      },
      { encoding: req.encoding, maxRecordBytes: req.maxRecordBytes, part: part ?? undefined, sha1: req.sha1 ?? true, follow: req.follow },
    );
    await flush();
    if (writer) {
      const w = writer as StagePartWriter;
      w.finish(req.sink?.type === 'part-file' && req.sink.keyIndex);
      summary.valid = w.valid;
      summary.failed = w.failed;
      summary.scattered = w.scattered;
    }
    summary.sha1 = read.sha1;
  } catch (err) {
    (writer as StagePartWriter | null)?.close();
    if (err instanceof PartMisaligned) return { ...summary, misaligned: true };
    if (!(err instanceof CsvUnreadable)) throw err;
    summary.rejected = err.message;
    return summary;
  }
  if (!summary.rejected && !checker) summary.rejected = 'the file is empty; it needs a header row and at least one row of data';
  return summary;
}

/** A character COPY's text format escapes (a tab is looked for in the batch's text instead). */
const COPY_SPECIAL = /[\\\n\r]/;

/**
 * Rows in COPY's text format: tab-separated, \N for NULL, backslash escapes. Most rows need no
 * escaping, which one native join and one search per row tell; the others are escaped value by
 * value. `mayHoldTab`: the rows' text held a tab somewhere.
 */
function copyRows(rows: StagedRow[], mayHoldTab: boolean): string {
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

function copyLine(values: StagedRow): string {
  return values.map((v) => (v === null ? '\\N' : String(v).replace(/[\\\t\n\r]/g, (c) => (c === '\\' ? '\\\\' : c === '\t' ? '\\t' : c === '\n' ? '\\n' : '\\r')))).join('\t');
}
