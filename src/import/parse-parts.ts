// Staging a whole file: read and check every row, and put the checked rows where the store
// wants them. A store that takes batches (PostgreSQL's COPY) gets them from one parse thread. A
// store that takes files (SQLite) gets the file in parts, read at once by as many threads as
// there are cores, each writing its part's rows itself, so that a large file costs about
// 1/cores of the time one thread would take. A part is cut just after a line feed; if that line
// feed turns out to be inside a quoted value (the part before it ends inside a record), the parts
// are thrown away and the file is read as one part. Duplicate keys across parts are caught by a
// key filter the threads share.
import fs from 'node:fs';
import os from 'node:os';
import type { Stage } from '../store/types.js';
import type { FilePart } from './csv-reader.js';
import { KeyFilter } from './key-filter.js';
import type { KindRegistry } from './kinds.js';
import type { ParseRequest, ParseSummary } from './parse-file.js';
import { parse, ParseAborted } from './parse-thread.js';

/** Below this a file is read inline, in one part: a thread costs more to start than it saves. */
const MIN_PART_BYTES = 4 * 1024 * 1024;
/** More parts than this gain little (the apply is one transaction) and cost a thread each. */
const MAX_PARTS = 4;

export interface StageFileRequest {
  /** The read as for one part: file, kind, tenant, options, encoding, limits, digest key. */
  parse: Omit<ParseRequest, 'mode' | 'lines' | 'header' | 'part' | 'sink' | 'filter' | 'sha1'>;
  header: string[];
  stage: Stage;
  /** The file is a full sync: each part builds the key index the missing-user check needs. */
  keyIndex: boolean;
  kinds: KindRegistry;
  onProgress?: (rows: number) => void;
  /** At most this many parts (default: the cores, up to MAX_PARTS). */
  maxParts?: number;
}

export interface StagedFile {
  rejected: string | null;
  rows: number;
  sha1: string;
}

export async function stageFile(req: StageFileRequest): Promise<StagedFile> {
  const size = fs.statSync(req.parse.file).size;
  const base: ParseRequest = { ...req.parse, mode: 'stage', header: req.header, sha1: true };
  const stage = req.stage;
  if (stage.sink === 'batches') {
    const s = await parse(
      { ...base, sink: { type: 'copy' } },
      async (e) => {
        if (e.type !== 'batch') return;
        await stage.write(e.batch);
        req.onProgress?.(e.rowsSoFar);
      },
      { thread: size >= MIN_PART_BYTES, kinds: req.kinds },
    );
    return outcome([s]);
  }
  const parts = planParts(req.parse.file, size, req.parse.encoding, req.maxParts);
  let summaries = await stageParts(req, base, parts);
  if (summaries.some((s, k) => s.misaligned && k < parts.length - 1)) {
    const whole = [{ start: 0, end: size, firstLine: 1, last: true }];
    summaries = await stageParts(req, base, whole);
  }
  const result = outcome(summaries);
  if (result.rejected === null) {
    await stage.adopt(summaries.map((s, k) => ({ file: stage.partFile(k), firstLine: s.firstLine, valid: s.valid, failed: s.failed })));
  }
  return result;
}

/** Every part at once: the first on this thread, the others on threads of their own. */
async function stageParts(req: StageFileRequest, base: ParseRequest, parts: FilePart[]): Promise<ParseSummary[]> {
  const stage = req.stage as Extract<Stage, { sink: 'files' }>;
  const filter = KeyFilter.buffer(fs.statSync(base.file).size / 40) as SharedArrayBuffer;
  const stopOthers = new AbortController();
  const progress = parts.map(() => 0);
  const runs = parts.map((part, k) =>
    parse(
      { ...base, part, filter, sink: { type: 'part-file', file: stage.partFile(k), keyIndex: req.keyIndex }, sha1: k === 0 },
      (e) => {
        if (e.type !== 'progress') return;
        progress[k] = e.rowsSoFar;
        req.onProgress?.(progress.reduce((a, b) => a + b, 0));
      },
      { thread: k > 0, signal: k > 0 ? stopOthers.signal : undefined, kinds: req.kinds },
    ).then((s) => {
      // A rejection in the first part stands whatever the others find: stop them.
      if (k === 0 && s.rejected) stopOthers.abort();
      return s;
    }),
  );
  const settled = await Promise.allSettled(runs);
  const failure = settled.find((r): r is PromiseRejectedResult => r.status === 'rejected' && !(r.reason instanceof ParseAborted));
  if (failure) throw failure.reason;
  return settled.map((r, k) => (r.status === 'fulfilled' ? r.value : { rejected: 'stopped', rows: 0, valid: 0, failed: 0, firstLine: parts[k].firstLine, sha1: '' }));
}

/** The file's verdict from its parts (in order): the first part's problem, else the totals. */
function outcome(summaries: ParseSummary[]): StagedFile {
  const rejected = summaries.find((s) => s.rejected)?.rejected ?? null;
  const rows = summaries.reduce((n, s) => n + s.rows, 0);
  return {
    rejected: rejected ?? (rows === 0 ? 'the file has a header row but no data rows; nothing was changed' : null),
    rows,
    sha1: summaries[0].sha1,
  };
}

/**
 * Cuts a UTF-8 file into parts of about equal size, each just after a line feed (a UTF-8 line
 * feed byte is always a whole character). Other encodings, files whose lines end in CR alone and
 * small files are one part.
 */
export function planParts(file: string, size: number, encoding: string, maxParts = Math.min(MAX_PARTS, os.availableParallelism())): FilePart[] {
  const whole: FilePart[] = [{ start: 0, end: size, firstLine: 1, last: true }];
  const wanted = Math.min(maxParts, Math.floor(size / MIN_PART_BYTES));
  if (wanted < 2 || new TextDecoder(encoding).encoding !== 'utf-8') return whole;
  const fd = fs.openSync(file, 'r');
  try {
    const window = Buffer.allocUnsafe(64 * 1024);
    const lineFeedAfter = (at: number): number => {
      for (let from = at; from < size; from += window.length) {
        const n = fs.readSync(fd, window, 0, window.length, from);
        const i = window.subarray(0, n).indexOf(10);
        if (i !== -1) return from + i + 1;
      }
      return size;
    };
    // Lines ending in CR alone: no line feed near the start, where the reader decides.
    if (lineFeedAfter(0) > window.length) return whole;
    const starts = [0];
    for (let k = 1; k < wanted; k++) {
      const start = lineFeedAfter(Math.floor((size * k) / wanted));
      if (start < size && start > starts[starts.length - 1]) starts.push(start);
    }
    // firstLine 0: the thread counts the line feeds before its start itself (in parallel).
    return starts.map((start, k) => ({ start, end: starts[k + 1] ?? size, firstLine: k === 0 ? 1 : 0, last: k === starts.length - 1 }));
  } finally {
    fs.closeSync(fd);
  }
}
