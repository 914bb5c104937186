// Delivering the mail queue: SMTP when mail.smtp is set, otherwise one .eml file per message
// in mail.outbox (for machines without a mail server, and for looking at reports by hand).
// A message is marked sent right after the server (or the file system) accepted it; a failure
// leaves it queued with its error and a growing back-off, so an outage loses nothing.
import fs from 'node:fs';
import path from 'node:path';
import nodemailer from 'nodemailer';
import type { Config } from '../config.js';
import type { Db } from '../db/database.js';
import type { MailRow, QueuedAttachment } from './queue.js';

export interface DeliveryLog {
  info(o: object, msg?: string): void;
  warn(o: object, msg?: string): void;
}

export interface DeliveryResult {
  sent: number;
  failed: number;
  /** Messages still queued afterwards (due later, or not reached in this pass). */
  pending: number;
}

const BACKOFF_BASE_MS = 30_000;
const BACKOFF_MAX_MS = 60 * 60_000;

/** After attempt n failed, wait 30 s, 1 min, 2 min, ... at most an hour. */
export const backoffMs = (attempts: number): number => backoffFromMs(BACKOFF_BASE_MS, attempts);

/** The same doubling from another first wait (mail.retrySeconds). */
export const backoffFromMs = (baseMs: number, attempts: number): number =>
  Math.min(baseMs * 2 ** Math.max(0, attempts - 1), BACKOFF_MAX_MS);

interface Sender {
  send(row: MailRow): Promise<{ messageId: string; rejected: string[] }>;
  close(): void;
}

export async function deliverQueuedMail(
  db: Db,
  config: Config,
  opts: { tenant?: string; now?: Date; log?: DeliveryLog } = {},
): Promise<DeliveryResult> {
  const now = opts.now ?? new Date();
  const nowIso = now.toISOString();
  const log = opts.log;
  const byTenant = opts.tenant === undefined ? '' : ' AND tenant = @tenant';
  const params = { now: nowIso, tenant: opts.tenant };
  const due = db
    .prepare(`SELECT id FROM mail_queue WHERE status = 'queued' AND next_attempt_at <= @now${byTenant} ORDER BY next_attempt_at, id`)
    .pluck()
    .all(params) as number[];

  let sent = 0;
  let failed = 0;
  if (due.length > 0) {
    const sender = openSender(config);
    // Another process (the daemon and a `run --now`) may deliver the same queue: whoever
    // moves next_attempt_at first owns the message, for a lease long enough for any send.
    const leaseUntil = new Date(now.getTime() + Math.max(600, 4 * config.mail.timeoutSeconds) * 1000).toISOString();
    const claim = db.prepare(
      `UPDATE mail_queue SET attempts = attempts + 1, next_attempt_at = ? WHERE id = ? AND status = 'queued' AND next_attempt_at <= ?`,
    );
    const load = db.prepare('SELECT * FROM mail_queue WHERE id = ?');
    const markSent = db.prepare(`UPDATE mail_queue SET status = 'sent', sent_at = ?, message_id = ?, last_error = ? WHERE id = ?`);
    const markFailed = db.prepare('UPDATE mail_queue SET last_error = ?, next_attempt_at = ? WHERE id = ?');
    try {
      for (const id of due) {
        if (claim.run(leaseUntil, id, nowIso).changes === 0) continue;
        const row = load.get(id) as MailRow; // one at a time: attachments can be large
        const about = { mailId: row.id, tenant: row.tenant, key: row.dedupe_key, attempt: row.attempts };
        try {
          const info = await sender.send(row);
          const partial = info.rejected.length ? `not accepted for ${info.rejected.join(', ')}` : null;
          markSent.run(new Date().toISOString(), info.messageId, partial, row.id);
          sent++;
          log?.info({ ...about, to: JSON.parse(row.mail_to), messageId: info.messageId }, 'mail sent');
          if (partial) log?.warn({ ...about, rejected: info.rejected }, 'some recipients were refused');
        } catch (err) {
          const retryAt = new Date(now.getTime() + backoffFromMs((config.mail.retrySeconds ?? 30) * 1000, row.attempts)).toISOString();
          const error = describe(err);
          markFailed.run(error, retryAt, row.id);
          failed++;
          log?.warn({ ...about, error, retryAt }, 'mail not sent; will retry');
          // The server is down or unreachable: the rest would only wait for the same timeout.
          // They stay due untouched and go out on the next pass.
          if (isConnectionError(err)) break;
        }
      }
    } finally {
      sender.close();
    }
  }
  const pending = db
    .prepare(`SELECT count(*) FROM mail_queue WHERE status = 'queued'${byTenant}`)
    .pluck()
    .get(params) as number;
  return { sent, failed, pending };
}

export interface MailQueueSummary {
  queued: number;
  sent: number;
  oldestQueuedAt: string | null;
  lastError: string | null;
}

export function mailQueueSummary(db: Db, tenant?: string): MailQueueSummary {
  const where = tenant === undefined ? '' : 'WHERE tenant = @tenant';
  const and = tenant === undefined ? '' : 'AND tenant = @tenant';
  const row = db
    .prepare(
      `SELECT count(*) FILTER (WHERE status = 'queued') AS queued,
              count(*) FILTER (WHERE status = 'sent') AS sent,
              min(created_at) FILTER (WHERE status = 'queued') AS oldestQueuedAt
       FROM mail_queue ${where}`,
    )
    .get({ tenant }) as { queued: number; sent: number; oldestQueuedAt: string | null };
  // The error of the most recently failed message that is still waiting.
  const lastError = db
    .prepare(`SELECT last_error FROM mail_queue WHERE status = 'queued' AND last_error IS NOT NULL ${and} ORDER BY next_attempt_at DESC, id DESC LIMIT 1`)
    .pluck()
    .get({ tenant }) as string | undefined;
  return { ...row, lastError: lastError ?? null };
}

function openSender(config: Config): Sender {
  const { smtp, timeoutSeconds, outbox } = config.mail;
  if (smtp) {
    const ms = timeoutSeconds * 1000;
    const transport = nodemailer.createTransport({ url: smtp, connectionTimeout: ms, greetingTimeout: ms, socketTimeout: ms });
    return {
      async send(row) {
        const info = await transport.sendMail(message(row, config));
        return { messageId: info.messageId, rejected: (info.rejected ?? []).map(String) };
      },
      close: () => transport.close(),
    };
  }
  const transport = nodemailer.createTransport({ streamTransport: true, buffer: true, newline: 'windows' });
  return {
    async send(row) {
      const info = await transport.sendMail(message(row, config));
      fs.mkdirSync(outbox, { recursive: true });
      const file = path.join(outbox, emlName(row));
      // Write then rename: a reader (or a crash) never sees half a message. The name is fixed
      // per message, so a retry after a crash replaces the file instead of adding a copy.
      fs.writeFileSync(`${file}.tmp`, info.message as Buffer);
      fs.renameSync(`${file}.tmp`, file);
      return { messageId: info.messageId, rejected: [] };
    },
    close: () => transport.close(),
  };
}

function message(row: MailRow, config: Config) {
  const attachments = (JSON.parse(row.attachments) as QueuedAttachment[]).map((a) => ({
    filename: a.filename,
    contentType: a.contentType,
    content: Buffer.from(a.content, 'base64'),
    // base64 keeps the bytes exact: quoted-printable would be free to touch CSV line ends.
    contentTransferEncoding: 'base64',
  }));
  return {
    from: row.mail_from,
    to: JSON.parse(row.mail_to) as string[],
    replyTo: row.reply_to ?? undefined,
    subject: row.subject,
    text: row.text,
    html: row.html,
    attachments,
    // The same Message-ID on every attempt: if a crash comes between the server's "accepted"
    // and our "sent", the second copy can be recognised as a duplicate by mail clients.
    messageId: `<${row.dedupe_key.replace(/[^A-Za-z0-9.-]+/g, '.')}.${row.id}.${Date.parse(row.created_at)}@${senderDomain(config.mail.from)}>`,
  };
}

/** `20240101-020000-lincoln-usd-17.eml` (created_at, tenant, id). */
export function emlName(row: Pick<MailRow, 'created_at' | 'tenant' | 'id'>): string {
  const at = row.created_at.replace(/\D/g, '').slice(0, 14);
  return `${at.slice(0, 8)}-${at.slice(8)}-${row.tenant.replace(/[^a-z0-9-]/gi, '_')}-${row.id}.eml`;
}

function senderDomain(from: string): string {
  const m = /@([A-Za-z0-9.-]+)>?\s*$/.exec(from);
  return m ? m[1] : 'provisioner.invalid';
}

function describe(err: unknown): string {
  const e = err as { code?: string; responseCode?: number; message?: string };
  const text = e?.message ?? String(err);
  const code = e?.code ? `${e.code}: ` : '';
  return `${code}${text}`.slice(0, 1000);
}

/** The server is unreachable or refuses us as a client: every other message would fail too. */
function isConnectionError(err: unknown): boolean {
  const code = (err as { code?: string } | null)?.code ?? '';
  return ['ECONNECTION', 'ETIMEDOUT', 'ESOCKET', 'EDNS', 'ETLS', 'EAUTH'].includes(code);
}
