// The tenant's report of one outcome: what it says (EpochReport), whether the tenant wants it
// (shouldNotify), and rendering it from the templates. Queueing is the outbox's (worker/reporting.ts).
import type { ImportCounts, ImportStatus } from '../store/types.js';
import { renderPart } from './templates.js';
import { buildView, type OmittedAttachment } from './view.js';

export interface FileReport {
  file: string;
  kind: string | null;
  status: ImportStatus;
  message: string | null;
  counts: ImportCounts;
  /** 'line 4: email "x": is not a valid e-mail address' */
  sampleErrors: string[];
  /** Attachment file name, e.g. 'errors.csv'. */
  errorsCsvName: string | null;
}

export interface EpochReport {
  tenantId: string;
  tenantName: string;
  epoch: string;
  /** The worst status of the files. */
  status: ImportStatus;
  files: FileReport[];
  /** Epochs that never got COMPLETE, reported once. */
  staleUploads: string[];
  dryRun: boolean;
  finishedAt: string;
  /** Where the upload now is on their SFTP account, e.g. /upload/bak/20240101-020000. */
  bakPath: string | null;
  /** Sentences for the district: a reused epoch name, where the upload went and why, a release. */
  notes?: string[];
  /** The status line and subject summary, when the files do not say it (an undo, an overdue feed). */
  headline?: string | null;
  summary?: string | null;
  /** The upload could not be put where it belongs (bakPath says where it is; notes say why). */
  misfiled?: boolean;
}

export interface RenderedMail {
  subject: string;
  text: string;
  html: string;
  /** Set when a tenant template could not be used and the built-in one was. */
  problems?: string[];
}

export interface ReportAttachment {
  filename: string;
  content: Buffer;
  contentType?: string;
}

/** Larger attachments are left out and the text says where the file is instead. */
export const MAX_ATTACHMENT_BYTES = 10 * 1024 * 1024;

export function renderReport(
  report: EpochReport,
  templatesOverride?: string,
  extra: { omitted?: OmittedAttachment[] } = {},
): RenderedMail {
  const view = buildView(report, extra.omitted);
  const problems: string[] = [];
  const subject = renderPart('subject', view, templatesOverride, problems)
    .replace(/\s+/g, ' ') // a header is one line, whatever the template's line breaks
    .trim();
  const text = renderPart('text', view, templatesOverride, problems);
  const html = renderPart('html', view, templatesOverride, problems);
  return problems.length ? { subject, text, html, problems } : { subject, text, html };
}

/**
 * The operators' notice of a tenant (a feed that stopped): our own templates (notice.*.hbs),
 * never a tenant's, as the district does not get it.
 */
export function renderNotice(report: EpochReport): RenderedMail {
  const view = buildView(report);
  const problems: string[] = [];
  const subject = renderPart('subject', view, undefined, problems, 'notice').replace(/\s+/g, ' ').trim();
  return { subject, text: renderPart('text', view, undefined, problems, 'notice'), html: renderPart('html', view, undefined, problems, 'notice') };
}

/** failures: anything not cleanly applied, an upload that never completed, or one not filed where it belongs. */
export function shouldNotify(when: 'failures' | 'always' | 'never', report: EpochReport): boolean {
  if (when === 'never') return false;
  if (when === 'always') return true;
  return report.misfiled === true || report.staleUploads.length > 0 || report.files.some((f) => f.status !== 'applied');
}
