// The tenant's report of one epoch: decide whether to mail it, render it from the templates
// and queue it. Queueing is synchronous because it runs inside the SQLite transaction that
// records the import: the report exists exactly when the import does, and the dedupe key
// keeps a recovery after a crash from queueing it twice.
import type { Config, TenantConfig } from '../config.js';
import type { Db } from '../db/database.js';
import type { ImportCounts, ImportStatus } from '../import/apply.js';
import { enqueueMail, queuedId, type QueuedAttachment } from './queue.js';
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

/** failures: anything not cleanly applied, or an upload that never completed. */
export function shouldNotify(when: 'failures' | 'always' | 'never', report: EpochReport): boolean {
  if (when === 'never') return false;
  if (when === 'always') return true;
  return report.staleUploads.length > 0 || report.files.some((f) => f.status !== 'applied');
}

export const reportDedupeKey = (report: EpochReport): string =>
  // A dry run does not process the epoch, so it must not use up the real run's key.
  report.dryRun ? `report:${report.tenantId}:${report.epoch}:dry-run:${report.finishedAt}` : `report:${report.tenantId}:${report.epoch}`;

/**
 * Queues the report mail (inside the caller's transaction). Returns the mail_queue id, the
 * existing one when this epoch's report was queued before, or null when nothing is to be sent.
 */
export function queueReport(
  db: Db,
  config: Config,
  tenant: TenantConfig,
  report: EpochReport,
  attachments: ReportAttachment[],
): number | null {
  if (!shouldNotify(tenant.notify.when, report)) return null;
  const held = report.status === 'held' || report.files.some((f) => f.status === 'held');
  // A held full sync needs someone at the vendor to decide: operators get the report too.
  const to = [...new Set([...tenant.notify.to, ...(held ? config.mail.operators : [])])];
  if (to.length === 0) return null;

  const dedupeKey = reportDedupeKey(report);
  const existing = queuedId(db, dedupeKey);
  if (existing !== null) return existing;

  const kept: QueuedAttachment[] = [];
  const omitted: OmittedAttachment[] = [];
  for (const a of attachments) {
    if (a.content.length > MAX_ATTACHMENT_BYTES) omitted.push({ filename: a.filename, size: a.content.length });
    else kept.push({ filename: a.filename, contentType: a.contentType ?? guessType(a.filename), content: a.content.toString('base64') });
  }
  const mail = renderReport(report, tenant.notify.templates, { omitted });
  return enqueueMail(db, {
    tenant: tenant.id,
    dedupeKey,
    from: config.mail.from,
    to,
    replyTo: tenant.notify.replyTo ?? null,
    subject: mail.subject,
    text: mail.text,
    html: mail.html,
    attachments: kept,
  });
}

function guessType(filename: string): string {
  const lower = filename.toLowerCase();
  if (lower.endsWith('.csv')) return 'text/csv; charset=utf-8';
  if (lower.endsWith('.json')) return 'application/json';
  if (lower.endsWith('.txt') || lower.endsWith('.log')) return 'text/plain; charset=utf-8';
  return 'application/octet-stream';
}
