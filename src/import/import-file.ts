// One local CSV file through the whole check-and-apply path: read the header, stream and check
// every row into staging, hash passwords, apply in one transaction, write errors.csv. Used by
// the worker (after download) and by `validate` (with apply turned off).
import crypto from 'node:crypto';
import fs from 'node:fs';
import type { ImportOptions } from '../config.js';
import type { Db } from '../db/database.js';
import { applyStage, emptyCounts, recordImport, type ImportCounts, type ImportStatus } from './apply.js';
import { CsvUnreadable, readCsv } from './csv-reader.js';
import { writeErrorsCsv, formatProblems } from './errors-csv.js';
import { mapHeaders, type HeaderMap } from './headers.js';
import type { KindRegistry } from './kinds.js';
import { RowChecker } from './rows.js';
import { Stage, type StagedError } from './stage.js';

export interface FileImportRequest {
  db: Db;
  kinds: KindRegistry;
  tenant: string;
  kind: string;
  options: ImportOptions;
  encoding: string;
  /** The downloaded copy. */
  localPath: string;
  /** Where to write errors.csv when rows fail. */
  errorsCsvPath: string;
  epoch: string;
  file: string;
  runId: number | null;
  force: boolean;
  /** 'apply': write to the directory; 'dry-run': compute and roll back; 'check': validate only. */
  mode: 'apply' | 'dry-run' | 'check';
  onProgress?: (rows: number) => void;
  /** Runs inside the import's transaction (queue the report with the last file of an epoch). */
  inTransaction?: (recorded: RecordedImport) => void;
}

export interface RecordedImport {
  importId: number;
  status: ImportStatus;
  counts: ImportCounts;
  message: string | null;
  /** Already written when the import is recorded: the report queued with it attaches it. */
  errorsCsv: string | null;
  sampleErrors: string[];
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
  /** Local errors.csv, when rows failed. */
  errorsCsv: string | null;
  /** The first few row errors, for reports and the terminal. */
  sampleErrors: string[];
}

const SAMPLE = 10;

export async function importFile(req: FileImportRequest): Promise<FileImportResult> {
  const startedAt = new Date().toISOString();
  const contentSha1 = await sha1File(req.localPath);
  const base = { file: req.file, kind: req.kind, contentSha1, importId: null, errorsCsv: null, sampleErrors: [] as string[] };
  const reject = (message: string): FileImportResult => {
    const counts = emptyCounts();
    const importId =
      req.mode === 'apply'
        ? req.db.transaction(() => {
            const id = recordImport(req.db, { runId: req.runId, tenant: req.tenant, epoch: req.epoch, file: req.file, kind: req.kind, status: 'rejected', message, contentSha1, counts, actor: req.options.actor, startedAt });
            req.inTransaction?.({ importId: id, status: 'rejected', counts, message, errorsCsv: null, sampleErrors: [] });
            return id;
          })()
        : null;
    return { ...base, status: 'rejected', message, counts, importId };
  };

  const kind = req.kinds.get(req.kind, { sso: req.options.sso });
  const stage = new Stage(req.db, kind.key);
  try {
    let headers: HeaderMap | undefined;
    let checker: RowChecker | undefined;
    let headerProblem: string | undefined;
    let rows = 0;
    try {
      await readCsv(
        req.localPath,
        (record) => {
          if (headerProblem) return;
          if (!checker) {
            const mapped = mapHeaders(record.values, kind, req.options.strictHeaders);
            if (!mapped.ok) {
              headerProblem = mapped.problem;
              return;
            }
            headers = mapped.map;
            checker = new RowChecker(kind, headers, req.options);
            return;
          }
          rows++;
          if (req.onProgress && rows % 5000 === 0) req.onProgress(rows);
          const result = checker.check(record.values);
          if (!result.ok) {
            stage.addFailed(record.line, result.key, record.values, result.problems);
            return;
          }
          stage.addValid(record.line, result.user, record.values);
        },
        { encoding: req.encoding },
      );
    } catch (err) {
      if (err instanceof CsvUnreadable) return reject(err.message);
      throw err;
    }
    req.onProgress?.(rows);
    if (headerProblem) return reject(headerProblem);
    if (!headers) return reject('the file is empty; it needs a header row and at least one row of data');
    if (rows === 0) return reject('the file has a header row but no data rows; nothing was changed');

    const sampleErrors = stage.firstErrors(SAMPLE).map(formatProblems);
    const errorsCsv = stage.failed > 0 ? req.errorsCsvPath : null;
    if (errorsCsv) writeErrorsCsv(errorsCsv, headers, stage.errors());

    if (req.mode === 'check') {
      const counts = { ...emptyCounts(), rows, failed: stage.failed };
      return { ...base, status: stage.failed ? 'applied with errors' : 'applied', message: null, counts, errorsCsv, sampleErrors };
    }
    await stage.hashPasswords(req.tenant, req.options.overwritePassword);
    const outcome = applyStage(req.db, stage, {
      tenant: req.tenant,
      kind: req.kind,
      options: req.options,
      force: req.force,
      dryRun: req.mode === 'dry-run',
      record: { runId: req.runId, tenant: req.tenant, epoch: req.epoch, file: req.file, kind: req.kind, contentSha1, actor: req.options.actor, startedAt },
      inTransaction: req.inTransaction
        ? (importId, counts, status) => req.inTransaction?.({ importId, counts, status, message: null, errorsCsv, sampleErrors })
        : undefined,
    });
    if (outcome.status === 'held') {
      const importId =
        req.mode === 'apply'
          ? req.db.transaction(() => {
              const id = recordImport(req.db, { runId: req.runId, tenant: req.tenant, epoch: req.epoch, file: req.file, kind: req.kind, status: 'held', message: outcome.message, contentSha1, counts: outcome.counts, actor: req.options.actor, startedAt });
              req.inTransaction?.({ importId: id, status: 'held', counts: outcome.counts, message: outcome.message, errorsCsv, sampleErrors });
              return id;
            })()
          : null;
      return { ...base, status: 'held', message: outcome.message, counts: outcome.counts, importId, errorsCsv, sampleErrors };
    }
    return { ...base, status: outcome.status, message: null, counts: outcome.counts, importId: outcome.importId, errorsCsv, sampleErrors };
  } finally {
    stage.drop();
  }
}

export async function sha1File(file: string): Promise<string> {
  const hash = crypto.createHash('sha1');
  for await (const chunk of fs.createReadStream(file, { highWaterMark: 1 << 20 })) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

export type { StagedError };
