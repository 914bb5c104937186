// The report's template data: every sentence a district IT person reads is worded here, in
// plain words, so the three templates (and a tenant's own copies) only lay it out. Customer
// data (file names, messages, error lines) passes through untouched; escaping it is the HTML
// template's job (handlebars `{{ }}`), never this module's.
import type { ImportCounts, ImportStatus } from '../store/types.js';
import type { EpochReport, FileReport } from './report.js';
// Subject material stays on one printable line: a file name may hold a line break or an escape.
import { oneLine, printable } from '../text.js';

/** An attachment left out of the mail because it was too large. */
export interface OmittedAttachment {
  filename: string;
  size: number;
}

export interface CountView {
  label: string;
  /** The label padded for the plain-text table. */
  textLabel: string;
  value: number;
}

export interface FileView {
  file: string;
  kind: string | null;
  status: ImportStatus;
  statusLine: string;
  statusColor: string;
  message: string | null;
  counts: ImportCounts;
  countList: CountView[];
  sampleErrors: string[];
  /** Failed rows beyond the sample, 0 when the sample is all of them. */
  moreErrors: number;
  errorsCsvName: string | null;
  errorsCsvAttached: boolean;
  isApplied: boolean;
  hasRowErrors: boolean;
  isRejected: boolean;
  isHeld: boolean;
  isFailed: boolean;
}

export interface ReportView {
  tenantId: string;
  tenantName: string;
  epoch: string;
  status: ImportStatus;
  statusLine: string;
  statusColor: string;
  /** What happened, in a few words, for the subject: `users.csv applied with 3 errors`. */
  summary: string;
  dryRun: boolean;
  finishedAt: string;
  /** finishedAt as `2024-01-01 02:00:12 UTC`. */
  finishedAtText: string;
  bakPath: string | null;
  files: FileView[];
  totals: ImportCounts;
  staleUploads: string[];
  hasStaleUploads: boolean;
  /** More than one file: each file then has its own status line. */
  hasMultipleFiles: boolean;
  hasRowErrors: boolean;
  hasRejected: boolean;
  hasHeld: boolean;
  hasFailed: boolean;
  hasErrorsCsv: boolean;
  /** The upload is not where it belongs (bak unusable); the notes say why and where it is. */
  notFiled: boolean;
  /** Nothing for the district to do (no errors, holds, rejections or stale uploads). */
  nothingToFix: boolean;
  /** One sentence per attachment too large to mail. */
  attachmentNotes: string[];
  /** Further sentences (a reused epoch name, where the upload went and why). */
  notes: string[];
}

const COUNT_LABELS: [keyof ImportCounts, string][] = [
  ['rows', 'rows'],
  ['created', 'created'],
  ['updated', 'updated'],
  ['unchanged', 'unchanged'],
  ['deactivated', 'deactivated'],
  ['archived', 'archived'],
  ['failed', 'failed'],
];

const COLORS: Record<ImportStatus, string> = {
  applied: '#1a7f37',
  'applied with errors': '#9a6700',
  held: '#bc4c00',
  rejected: '#cf222e',
  failed: '#cf222e',
  discarded: '#57606a',
  superseded: '#57606a',
};

export function buildView(report: EpochReport, omitted: OmittedAttachment[] = []): ReportView {
  const omittedNames = new Set(omitted.map((o) => o.filename));
  // errors.csv is written beside the upload only when it moved into a folder of its own
  // (<bak>/<epoch>); a keep-in-place file's path is the file itself.
  const folder = report.bakPath !== null && report.bakPath.endsWith(report.epoch) ? report.bakPath : null;
  const files = report.files.map((f) => fileView(f, report, omittedNames, folder));
  const totals = sumCounts(report.files.map((f) => f.counts));
  const stale = report.staleUploads.length > 0;
  return {
    tenantId: report.tenantId,
    tenantName: oneLine(report.tenantName),
    epoch: report.epoch,
    status: report.status,
    statusLine: report.headline ?? headline(report, files),
    statusColor: COLORS[report.status] ?? COLORS.failed,
    summary: oneLine(report.summary ?? summary(report)),
    dryRun: report.dryRun,
    finishedAt: report.finishedAt,
    finishedAtText: formatTime(report.finishedAt),
    bakPath: report.bakPath,
    files,
    totals,
    staleUploads: report.staleUploads,
    hasStaleUploads: stale,
    hasMultipleFiles: files.length > 1,
    hasRowErrors: files.some((f) => f.hasRowErrors),
    hasRejected: files.some((f) => f.isRejected),
    hasHeld: files.some((f) => f.isHeld),
    hasFailed: files.some((f) => f.isFailed),
    hasErrorsCsv: report.files.some((f) => f.errorsCsvName !== null),
    notFiled: report.misfiled === true,
    nothingToFix: !stale && !report.misfiled && files.every((f) => f.isApplied),
    attachmentNotes: omitted.map((o) => omittedNote(o, folder)),
    notes: report.notes ?? [],
  };
}

function fileView(f: FileReport, report: EpochReport, omitted: Set<string>, folder: string | null): FileView {
  const attached = f.errorsCsvName !== null && !omitted.has(f.errorsCsvName);
  return {
    // A remote name may hold a line break or an escape sequence: shown escaped, as everywhere.
    file: printable(f.file),
    kind: f.kind,
    status: f.status,
    statusLine: fileStatusLine(f, report, attached, folder),
    statusColor: COLORS[f.status] ?? COLORS.failed,
    message: f.message,
    counts: f.counts,
    countList: COUNT_LABELS.map(([key, label]) => ({ label, textLabel: label.padEnd(12), value: f.counts[key] })),
    sampleErrors: f.sampleErrors,
    moreErrors: Math.max(0, f.counts.failed - f.sampleErrors.length),
    errorsCsvName: f.errorsCsvName,
    errorsCsvAttached: attached,
    isApplied: f.status === 'applied',
    hasRowErrors: f.status === 'applied with errors',
    isRejected: f.status === 'rejected',
    isHeld: f.status === 'held',
    isFailed: f.status === 'failed',
  };
}

/** One sentence saying what happened to one file, and what to do when something failed. */
function fileStatusLine(f: FileReport, report: EpochReport, attached: boolean, folder: string | null): string {
  const c = f.counts;
  const dry = report.dryRun;
  const why = trimPeriod(f.message ?? '');
  switch (f.status) {
    case 'applied':
      if (c.rows === 0) return dry ? 'The file has no rows; nothing would change.' : 'The file had no rows; nothing was changed.';
      if (c.rows === 1) return dry ? 'The 1 row would be applied.' : 'The 1 row was applied.';
      return dry ? `All ${c.rows} rows would be applied.` : `All ${c.rows} rows were applied.`;
    case 'applied with errors': {
      const failed = `${c.failed} of ${c.rows} ${plural(c.rows, 'row')} ${dry ? 'would not be' : 'could not be'} applied`;
      const name = f.errorsCsvName;
      if (name === null) return `${failed}; they are listed below.`;
      const where = attached
        ? `the attached ${name}`
        : `${name} (too large to mail; ${folder ? `it is in ${folder} on your SFTP account` : 'reply to this message for it'})`;
      return `${failed}; fix them in ${where} and upload it again as ${printable(f.file)}.`;
    }
    case 'rejected':
      return `The file was rejected${why ? `: ${why}` : ''}; nothing was changed.`;
    case 'held':
      return `Held${why ? `: ${why.replace(/^held: /, '')}` : ''}; nothing was changed.`;
    case 'failed':
      return `Processing failed${why ? `: ${why}` : ''}; nothing from this file was applied.`;
    case 'discarded':
      return `Discarded${why ? `: ${why}` : ''}; nothing was changed.`;
    case 'superseded':
      return `Not applied${why ? `: ${why}` : ''}.`;
    default:
      return `${String(f.status)}${why ? `: ${why}` : ''}.`;
  }
}

/** The report's status line: the file's own when there is one file. */
function headline(report: EpochReport, files: FileView[]): string {
  const stale = report.staleUploads.length;
  if (files.length === 1) return files[0].statusLine;
  if (files.length === 0) {
    return stale
      ? `No upload was processed; ${stale} ${plural(stale, 'upload')} never got ${stale === 1 ? 'its' : 'their'} COMPLETE file.`
      : 'No files were processed.';
  }
  return `${files.length} files were processed: ${countByStatus(report.files)}.`;
}

/** `users.csv applied with 3 errors`, `dry run: users.csv applied`, `4 files: 3 applied, 1 rejected`. */
function summary(report: EpochReport): string {
  const parts: string[] = [];
  const files = report.files;
  if (files.length > 0 && files.length <= 3) parts.push(files.map(fileSummary).join(', '));
  else if (files.length > 3) parts.push(`${files.length} files: ${countByStatus(files)}`);
  const stale = report.staleUploads.length;
  if (stale) parts.push(`${stale} ${plural(stale, 'upload')} never completed`);
  if (report.misfiled) parts.push('not filed in bak');
  const text = parts.join('; ') || 'nothing processed';
  return report.dryRun ? `dry run: ${text}` : text;
}

function fileSummary(f: FileReport): string {
  if (f.status === 'applied with errors') return `${f.file} applied with ${f.counts.failed} ${plural(f.counts.failed, 'error')}`;
  return `${f.file} ${f.status}`;
}

function countByStatus(files: FileReport[]): string {
  const by = new Map<string, number>();
  for (const f of files) by.set(f.status, (by.get(f.status) ?? 0) + 1);
  return [...by].map(([status, n]) => `${n} ${status}`).join(', ');
}

function omittedNote(o: OmittedAttachment, folder: string | null): string {
  const mb = (o.size / (1024 * 1024)).toFixed(1);
  const where = folder ? `it is in ${folder} on your SFTP account` : 'reply to this message if you need it';
  return `${o.filename} (${mb} MB) is too large to attach to an e-mail; ${where}.`;
}

function sumCounts(all: ImportCounts[]): ImportCounts {
  const total: ImportCounts = { rows: 0, created: 0, updated: 0, unchanged: 0, deactivated: 0, archived: 0, failed: 0 };
  for (const c of all) for (const [key] of COUNT_LABELS) total[key] += c[key];
  return total;
}

const plural = (n: number, word: string): string => (n === 1 ? word : `${word}s`);
const trimPeriod = (s: string): string => s.trim().replace(/\.+$/, '');

function formatTime(iso: string): string {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  return `${d.toISOString().slice(0, 19).replace('T', ' ')} UTC`;
}
