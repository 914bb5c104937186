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
import { readFileStart, type FileStart } from './file-parts.js';
import { FollowedFile } from './growing-file.js';
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
  /** Compute the file's SHA-1 while reading it (default true; a download may have done it). */
  sha1?: boolean;
}

export interface StagedFile {
  rejected: string | null;
  rows: number;
  sha1: string;
}

export async function stageFile(req: StageFileRequest): Promise<StagedFile> {
  const follow = new FollowedFile(req.parse.follow);
  const size = await follow.size(() => fs.statSync(req.parse.file).size);
  const base: ParseRequest = { ...req.parse, mode: 'stage', header: req.header, sha1: req.sha1 ?? true };
  const stage = req.stage;
  const start = await readFileStart(req.parse.file, follow, size);
  const count = partsFor(start, size, req.parse.encoding, req.maxParts);
  let summaries = await stageParts(req, base, size, count, start.rows);
  if (summaries.some((s, k) => s.misaligned && k < count - 1)) {
    if (stage.sink === 'batches') await stage.reset();
    summaries = await stageParts(req, base, size, 1, start.rows);
  }
  const result = outcome(summaries);
  if (result.rejected === null && stage.sink === 'files') {
    await stage.adopt(summaries.map((s, k) => ({ file: stage.partFile(k), firstLine: s.firstLine, valid: s.valid, failed: s.failed, scattered: s.scattered })));
  }
  return result;
}

/**
 * Every part at once, each on a thread of its own (whose heap is capped: on this thread parsing
 * would grow the young generation to 64 MB), but for a small file, read inline in one part. A
 * stage that takes files gets a file a part; one that takes batches gets every part's batches,
 * one at a time, as they come.
 */
async function stageParts(req: StageFileRequest, base: ParseRequest, size: number, count: number, rows: number): Promise<ParseSummary[]> {
  const stage = req.stage;
  const filter = KeyFilter.buffer(rows) as SharedArrayBuffer;
  const stopOthers = new AbortController();
  const progress: number[] = new Array(count).fill(0);
  let writes = Promise.resolve();
  const runs = progress.map((_, k) =>
    parse(
      {
        ...base,
        part: { index: k, count },
        filter,
        sink: stage.sink === 'files' ? { type: 'part-file', file: stage.partFile(k), keyIndex: req.keyIndex } : { type: 'copy' },
        sha1: base.sha1 && k === 0,
      },
      async (e) => {
        if (e.type === 'batch' && stage.sink === 'batches') {
          const batch = e.batch;
          await (writes = writes.then(() => stage.write(batch)));
        }
        if (e.type !== 'progress' && e.type !== 'batch') return;
        progress[k] = e.rowsSoFar;
        req.onProgress?.(progress.reduce((a, b) => a + b, 0));
      },
      { thread: size >= MIN_PART_BYTES, signal: k > 0 ? stopOthers.signal : undefined, kinds: req.kinds },
    ).then((s) => {
      // A rejection in the first part stands whatever the others find: stop them.
      if (k === 0 && s.rejected) stopOthers.abort();
      return s;
    }),
  );
  const settled = await Promise.allSettled(runs);
  const failure = settled.find((r): r is PromiseRejectedResult => r.status === 'rejected' && !(r.reason instanceof ParseAborted));
  if (failure) throw failure.reason;
  return settled.map((r) => (r.status === 'fulfilled' ? r.value : { rejected: 'stopped', rows: 0, valid: 0, failed: 0, firstLine: 0, sha1: '' }));
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
 * How many parts: one per core (up to MAX_PARTS) for a large UTF-8 file whose lines end in line
 * feeds (file-parts.ts cuts after them); other encodings, CR-only files and small files are one.
 */
export function partsFor(start: FileStart, size: number, encoding: string, maxParts?: number): number {
  return start.lineFeeds ? plannedParts(size, encoding, maxParts) : 1;
}

/** The parts of a file whose lines end in line feeds (partsFor, before its first bytes are read). */
function plannedParts(size: number, encoding: string, maxParts = Math.min(MAX_PARTS, os.availableParallelism())): number {
  const wanted = Math.min(maxParts, Math.floor(size / MIN_PART_BYTES));
  if (wanted < 2 || new TextDecoder(encoding).encoding !== 'utf-8') return 1;
  return wanted;
}

/**
 * The parse threads a file of `size` bytes will most likely be read by, known from its size in
 * the listing (see warmParseThreads): none for a small file, read inline.
 */
export function threadsFor(size: number, encoding: string, maxParts?: number): number {
  return size >= MIN_PART_BYTES ? plannedParts(size, encoding, maxParts) : 0;
}
