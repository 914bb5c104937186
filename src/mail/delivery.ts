// Delivering the mail queue: SMTP when mail.smtp is set, otherwise one .eml file per message
// in mail.outbox (for machines without a mail server, and for looking at reports by hand).
// A message is marked sent right after the server (or the file system) accepted it; a failure
// leaves it queued with its error and a growing back-off, so an outage loses nothing.
import fs from 'node:fs';
import path from 'node:path';
// nodemailer is loaded when there is mail to send, not by every run that has none.
import type Nodemailer from 'nodemailer';
import { expandSecret, type Config } from '../config.js';
import type { MailRow, Store } from '../store/types.js';

export interface DeliveryLog {
  info(o: object, msg?: string): void;
  warn(o: object, msg?: string): void;
  error(o: object, msg?: string): void;
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

/** A server that refuses a message outright (5xx) is given this many tries before the message fails. */
export const PERMANENT_TRIES = 3;
/** Temporary failures (4xx, the server down) are retried with back-off this many times (about a day). */
export const MAX_TRIES = 30;

/**
 * Sends what is due. Every time is the store's clock (`opts.now` stands in for it in tests), read
 * again for each message: workers whose clocks differ agree on a lease, and a long pass never
 * claims a message with a lease that has already run out.
 */
export async function deliverQueuedMail(
  store: Store,
  config: Config,
  opts: { tenant?: string; now?: Date; log?: DeliveryLog } = {},
): Promise<DeliveryResult> {
  const clock = (): Promise<Date> => (opts.now ? Promise.resolve(opts.now) : store.now());
  const log = opts.log;
  const due = await store.mail.due(await clock(), opts.tenant);
  let sent = 0;
  let failed = 0;
  if (due.length > 0) {
    const sender = await openSender(config);
    // Another process (a daemon elsewhere, a `run --now`) may deliver the same queue: whoever
    // claims a message first owns it, for a lease long enough for any send.
    const leaseMs = Math.max(600, 4 * config.mail.timeoutSeconds) * 1000;
    try {
      for (const id of due) {
        const now = await clock();
        const row = await store.mail.claim(id, now, new Date(now.getTime() + leaseMs)); // one at a time: attachments can be large
        if (!row) continue;
        const about = { mailId: row.id, tenant: row.tenant, key: row.dedupeKey, attempt: row.attempts };
        try {
          const info = await sender.send(row);
          const partial = info.rejected.length ? `not accepted for ${info.rejected.join(', ')}` : null;
          await store.mail.markSent(row.id, info.messageId, partial);
          sent++;
          log?.info({ ...about, to: row.to, messageId: info.messageId }, 'mail sent');
          if (partial) log?.warn({ ...about, rejected: info.rejected }, 'some recipients were refused');
        } catch (err) {
          const error = describe(err);
          failed++;
          const permanent = isPermanent(err);
          if ((permanent && row.attempts >= PERMANENT_TRIES) || row.attempts >= MAX_TRIES) {
            await store.mail.markFailed(row.id, error);
            log?.error({ ...about, error }, `mail not sent after ${row.attempts} tries; given up (${permanent ? 'the server refuses it' : 'the server kept failing'}); status shows it as failed`);
          } else {
            const retryAt = new Date((await clock()).getTime() + backoffFromMs((config.mail.retrySeconds ?? 30) * 1000, row.attempts));
            await store.mail.markRetry(row.id, error, retryAt);
            log?.warn({ ...about, error, retryAt: retryAt.toISOString() }, 'mail not sent; will retry');
          }
          // The server is down or unreachable: the rest would only wait for the same timeout.
          // They stay due untouched and go out on the next pass.
          if (isConnectionError(err)) break;
        }
      }
    } finally {
      sender.close();
    }
  }
  const pending = (await store.mail.summary(opts.tenant)).queued;
  return { sent, failed, pending };
}

async function openSender(config: Config): Promise<Sender> {
  const nodemailer = (await import('nodemailer')).default as typeof Nodemailer;
  const { timeoutSeconds, outbox } = config.mail;
  const smtp = config.mail.smtp ? expandSecret(config.mail.smtp, 'mail.smtp') : undefined;
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
  const attachments = row.attachments.map((a) => ({
    filename: a.filename,
    contentType: a.contentType,
    content: Buffer.from(a.content, 'base64'),
    // base64 keeps the bytes exact: quoted-printable would be free to touch CSV line ends.
    contentTransferEncoding: 'base64',
  }));
  return {
    from: row.from,
    to: row.to,
    replyTo: row.replyTo ?? undefined,
    subject: row.subject,
    text: row.text,
    html: row.html,
    attachments,
    // The same Message-ID on every attempt: if a crash comes between the server's "accepted"
    // and our "sent", the second copy can be recognised as a duplicate by mail clients.
    messageId: `<${row.dedupeKey.replace(/[^A-Za-z0-9.-]+/g, '.')}.${row.id}.${Date.parse(row.createdAt)}@${senderDomain(config.mail.from)}>`,
  };
}

/** `20240101-020000-lincoln-usd-17.eml` (created_at, tenant, id). */
export function emlName(row: Pick<MailRow, 'createdAt' | 'tenant' | 'id'>): string {
  const at = row.createdAt.replace(/\D/g, '').slice(0, 14);
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

/** A 5xx answer: the server will not take this message however often we try. */
function isPermanent(err: unknown): boolean {
  const code = (err as { responseCode?: number } | null)?.responseCode;
  return typeof code === 'number' && code >= 500 && code < 600;
}

/** The server is unreachable or refuses us as a client: every other message would fail too. */
function isConnectionError(err: unknown): boolean {
  const code = (err as { code?: string } | null)?.code ?? '';
  return ['ECONNECTION', 'ETIMEDOUT', 'ESOCKET', 'EDNS', 'ETLS', 'EAUTH'].includes(code);
}
