// One downloaded CSV file through the whole check-and-apply path:
//   parse and check every row into staging (parse-thread.ts) → duplicates' cells read back →
//   full-sync hold check → passwords hashed where new or changed (never in a dry run, never
//   before the hold check) → one write transaction (the store's stage.apply).
// Used by the worker after a download, by `release`, and by `validate` (mode 'check').
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { setImmediate as eventLoopTurn } from 'node:timers/promises';
import type { ImportOptions } from '../config.js';
import type { ApplyOptions, ErrorRow, HoldCheck, ImportCounts, ImportRow, ImportStatus, Stage, Store } from '../store/types.js';
import { emptyCounts } from '../store/types.js';
import { formatProblems, writeErrorsCsv } from './errors-csv.js';
import type { Hasher } from './hash-pool.js';
import type { KindRegistry } from './kinds.js';
import { mapHeaders } from './headers.js';
import { readHeader, type CollectedRow, type ParseRequest } from './parse-file.js';
import { stageFile } from './parse-parts.js';
import { parse } from './parse-thread.js';
import { RowChecker } from './rows.js';

export interface FileImportRequest {
  store: Store;
  kinds: KindRegistry;
  /** Hashes passwords (apply mode; a file without passwords never uses it). */
  hasher: Hasher | null;
  tenant: string;
  kind: string;
  options: ImportOptions;
  encoding: string;
  maxRecordBytes: number;
  /** Threads that read one large file at once (null: the cores, up to 4). */
  parseThreads?: number | null;
  digestKey: Buffer | null;
  localPath: string;
  epoch: string;
  file: string;
  runId: number | null;
  /** 'apply': write; 'dry-run': compute the counts, write nothing; 'check': validate only. */
  mode: 'apply' | 'dry-run' | 'check';
  /** An operator released this held upload: apply it over the deactivation limit. */
  release?: { heldImportId: number } | null;
  /** Keep-in-place content, remembered with the import. */
  content?: { path: string; sha1: string };
  /**
   * The file is still downloading: its progress (GrowingFile.shared), and the SHA-1 the
   * download takes of it (rejects when the download fails).
   */
  follow?: { shared: SharedArrayBuffer; sha1: Promise<string> };
  /** Where the file's scratch data goes (default: beside the file, in the run's work folder). */
  scratchDir?: string;
  /** check mode: write errors.csv here when rows fail. */
  errorsCsvPath?: string;
  onProgress?: (rows: number) => void;
}

export interface FileImportResult {
  file: string;
  kind: string;
  status: ImportStatus;
  /** The file-level problem, or why it was held. */
  message: string | null;
  counts: ImportCounts;
  importId: number | null;
  contentSha1: string;
  /** The first few row errors, for the terminal. */
  sampleErrors: string[];
  /** This content under this epoch and name was applied before (a recovered claim): not again. */
  appliedBefore?: boolean;
  hold?: HoldCheck;
  /** check mode: where errors.csv was written. */
  errorsCsv?: string | null;
  /** Milliseconds per step (parse+stage, finish, hold, hash, apply): where a slow file's time went. */
  timings?: Record<string, number>;
}

const SAMPLE = 10;

export function applyOptions(options: ImportOptions): ApplyOptions {
  return {
    fullSync: options.fullSync,
    maxDeactivatePercent: options.maxDeactivatePercent,
    overwriteEmail: options.overwriteEmail,
    overwritePassword: options.overwritePassword,
    archiveInactive: options.archiveInactive,
    actor: options.actor,
  };
}

export function holdMessage(hold: HoldCheck, limit: number, tenant: string, epoch: string): string {
  return (
    `held: this full sync would deactivate ${hold.missing} of ${hold.active} active users (${hold.percent.toFixed(1)}%), ` +
    `more than the ${limit}% limit. Nothing was applied. If the file is complete and right, an operator applies it with ` +
    `\`provisioner release --tenant ${tenant} ${epoch}\`; otherwise upload the complete file.`
  );
}

export async function importFile(req: FileImportRequest): Promise<FileImportResult> {
  const startedAt = new Date().toISOString();
  const base = { file: req.file, kind: req.kind, importId: null, sampleErrors: [] as string[] };
  let stage: Stage | undefined;
  const parseRequest: Omit<ParseRequest, 'mode'> = {
    file: req.localPath,
    kind: req.kind,
    tenant: req.tenant,
    options: req.options,
    encoding: req.encoding,
    maxRecordBytes: req.maxRecordBytes,
    digestKey: req.digestKey ? req.digestKey.toString('base64') : null,
    follow: req.follow?.shared,
  };
  const fileSha1 = () => req.follow?.sha1 ?? sha1Of(req.localPath);
  const kind = req.kinds.get(req.kind, { sso: req.options.sso });
  const timings: Record<string, number> = {};
  let mark = performance.now();
  // The steps after the parse (finish, hold, apply) are each synchronous SQL on this thread.
  // Between them the event loop gets a turn: in the daemon, other tenants' SFTP sessions and the
  // console would otherwise wait for all of them at once (1.8 s after 1,000,000 new users).
  const step = async (name: string) => {
    const now = performance.now();
    timings[name] = Math.round(now - mark);
    await eventLoopTurn();
    mark = performance.now();
  };
  // Scratch space for this file's staging (the parts the parse threads write), next to the
  // downloaded file: a killed run's leftovers are swept with its work folder.
  const scratch = fs.mkdtempSync(path.join(req.scratchDir ?? path.dirname(req.localPath), 'stage-'));
  const rejectedWith = async (message: string, contentSha1: string, header: string[] | null): Promise<FileImportResult> => {
    const importId =
      req.mode === 'apply'
        ? await req.store.imports.recordUnapplied({
            runId: req.runId, tenant: req.tenant, epoch: req.epoch, file: req.file, kind: req.kind, status: 'rejected', message,
            contentSha1, counts: emptyCounts(), actor: req.options.actor, header, startedAt,
          })
        : null;
    return { ...base, status: 'rejected', message, counts: emptyCounts(), importId, contentSha1 };
  };
  try {
    const head = await readHeader(req.localPath, req.encoding, req.maxRecordBytes, req.follow?.shared);
    const mapped = 'header' in head ? mapHeaders(head.header, kind, req.options.strictHeaders) : null;
    if (!mapped?.ok) {
      const message = 'rejected' in head ? head.rejected : (mapped as { problem: string }).problem;
      return await rejectedWith(message, await fileSha1(), null);
    }
    const header = (head as { header: string[] }).header;
    const present = new RowChecker(kind, mapped.map, req.options, req.tenant, null).present;
    stage = await req.store.directory.openStage({ tenant: req.tenant, kind: req.kind, keyColumn: kind.key, present, dir: scratch });
    const summary = await stageFile({ parse: parseRequest, header, stage, keyIndex: req.options.fullSync, kinds: req.kinds, onProgress: req.onProgress, sha1: !req.follow, maxParts: req.parseThreads ?? undefined });
    await step('parseMs');
    if (summary.rejected) return await rejectedWith(summary.rejected, summary.sha1 || (await fileSha1()), mapped.map.original);
    const contentSha1 = req.follow ? await req.follow.sha1 : summary.sha1;
    const original = mapped.map.original;
    req.onProgress?.(summary.rows);
    const staged = await stage.finish();
    if (staged.duplicateLines.length) {
      const cells: { line: number; raw: string[] }[] = [];
      await collect(req, parseRequest, staged.duplicateLines, (rows) => {
        cells.push(...rows.map((r) => ({ line: r.line, raw: r.raw })));
      });
      await stage.setDuplicateCells(cells);
    }
    await step('finishMs');
    const status: ImportStatus = staged.failed > 0 ? 'applied with errors' : 'applied';
    const options = applyOptions(req.options);

    if (req.mode === 'check') {
      const counts = { ...emptyCounts(), rows: summary.rows, failed: staged.failed };
      const errorsCsv = staged.failed > 0 && req.errorsCsvPath ? req.errorsCsvPath : null;
      if (errorsCsv) await writeErrorsCsv(errorsCsv, original, stage.errorRows());
      return { ...base, status, message: null, counts, contentSha1, errorsCsv, sampleErrors: await firstErrors(stage.errorRows()) };
    }

    const hold = await stage.holdCheck(options);
    await step('holdMs');
    if (hold?.exceeds && !req.release) {
      const counts = { ...emptyCounts(), rows: summary.rows, failed: staged.failed, deactivated: hold.missing };
      return recordHeld(req, { hold, counts, contentSha1, header: original, startedAt, sampleErrors: await firstErrors(stage.errorRows()) });
    }
    if (req.mode === 'dry-run') {
      const counts = await stage.preview(options);
      return { ...base, status, message: null, counts, contentSha1, hold: hold ?? undefined, sampleErrors: await firstErrors(stage.errorRows()) };
    }

    await hashPasswords(req, stage!, parseRequest);
    await step('hashMs');
    const result = await stage.apply({
      runId: req.runId, epoch: req.epoch, file: req.file, contentSha1, header: original, options,
      releaseHold: !!req.release, heldImportId: req.release?.heldImportId ?? null, content: req.content, startedAt,
    });
    await step('applyMs');
    if (result.status === 'applied before') return { ...fromImport(result.import), appliedBefore: true };
    if (result.status === 'held') {
      return recordHeld(req, { hold: result.hold, counts: result.counts, contentSha1, header: original, startedAt, sampleErrors: await firstErrors(stage.errorRows()) });
    }
    const sampleErrors = (await req.store.imports.errors(result.importId, SAMPLE)).map((e) => formatProblems({ line: e.line, problems: [{ column: e.column ?? '', value: e.value ?? '', reason: e.reason }] }));
    return { ...base, status: result.status, message: null, counts: result.counts, importId: result.importId, contentSha1, sampleErrors, timings };
  } finally {
    await stage?.close();
    fs.rmSync(scratch, { recursive: true, force: true });
  }
}

/** Reads the rows at `lines` again (ascending), a batch at a time. */
function collect(req: FileImportRequest, parseRequest: Omit<ParseRequest, 'mode'>, lines: number[], onRows: (rows: CollectedRow[]) => void | Promise<void>) {
  return parse({ ...parseRequest, mode: 'collect', lines }, (e) => (e.type === 'collected' ? onRows(e.rows) : undefined), {
    thread: fs.statSync(req.localPath).size >= 4 * 1024 * 1024,
    kinds: req.kinds,
  });
}

/** SHA-1 of a file that was rejected before it was read through. */
async function sha1Of(file: string): Promise<string> {
  const hash = crypto.createHash('sha1');
  for await (const chunk of fs.createReadStream(file, { highWaterMark: 1 << 20 })) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/**
 * The rows whose password must be hashed (new, changed, or set on a user who has none) or
 * checked once: their passwords are read from the file again, never stored, and hashed on the
 * pool, a batch at a time.
 */
async function hashPasswords(req: FileImportRequest, stage: Stage, parseRequest: Omit<ParseRequest, 'mode'>): Promise<void> {
  const work = await stage.passwordWork(req.options.overwritePassword);
  if (work.hash.length === 0 && work.verify.length === 0) return;
  if (!req.hasher) throw new Error('passwords must be hashed but no hashing pool was given');
  const stored = new Map(work.verify.map((v) => [v.line, v.hash]));
  const lines = [...work.hash, ...work.verify.map((v) => v.line)].sort((a, b) => a - b);
  const hasher = req.hasher;
  await collect(req, parseRequest, lines, async (collected) => {
    const rows = collected.filter((r) => r.password !== null);
    const hashes = await hasher.run(rows.map((r) => ({ password: r.password!, stored: stored.get(r.line) ?? null })));
    await stage.setPasswords(rows.map((r, i) => ({ line: r.line, hash: hashes[i] })));
  });
}

async function recordHeld(
  req: FileImportRequest,
  h: { hold: HoldCheck; counts: ImportCounts; contentSha1: string; header: string[]; startedAt: string; sampleErrors: string[] },
): Promise<FileImportResult> {
  const message = holdMessage(h.hold, req.options.maxDeactivatePercent, req.tenant, req.epoch);
  const importId =
    req.mode === 'apply'
      ? await req.store.imports.recordUnapplied({
          runId: req.runId, tenant: req.tenant, epoch: req.epoch, file: req.file, kind: req.kind, status: 'held', message,
          contentSha1: h.contentSha1, counts: h.counts, actor: req.options.actor, header: h.header, startedAt: h.startedAt,
        })
      : null;
  return { file: req.file, kind: req.kind, status: 'held', message, counts: h.counts, importId, contentSha1: h.contentSha1, sampleErrors: h.sampleErrors, hold: h.hold };
}

async function firstErrors(rows: AsyncIterable<ErrorRow[]>): Promise<string[]> {
  const out: string[] = [];
  for await (const batch of rows) {
    for (const e of batch) {
      out.push(formatProblems(e));
      if (out.length >= SAMPLE) return out;
    }
  }
  return out;
}

/** A recorded import as a file result. */
export function fromImport(row: ImportRow): FileImportResult {
  return {
    file: row.file,
    kind: row.kind ?? '',
    status: row.status,
    message: row.message,
    counts: row.counts,
    importId: row.id,
    contentSha1: row.contentSha1 ?? '',
    sampleErrors: [],
  };
}
