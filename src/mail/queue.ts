// The mail queue table (mail_queue, migration 1): mail is written here first, in the same
// SQLite transaction as whatever it reports on, and sent later by outbox.ts. Synchronous on
// purpose: better-sqlite3 transactions cannot span an await.
import type { Db } from '../db/database.js';

export interface QueuedAttachment {
  filename: string;
  contentType: string;
  /** base64 */
  content: string;
}

export interface NewMail {
  tenant: string;
  /** Unique per logical message: queueing the same key again does nothing. */
  dedupeKey: string;
  from: string;
  to: string[];
  replyTo?: string | null;
  subject: string;
  text: string;
  html: string;
  attachments: QueuedAttachment[];
}

export interface MailRow {
  id: number;
  tenant: string;
  dedupe_key: string;
  mail_from: string;
  mail_to: string;
  reply_to: string | null;
  subject: string;
  text: string;
  html: string;
  attachments: string;
  status: 'queued' | 'sent';
  attempts: number;
  next_attempt_at: string;
  last_error: string | null;
  created_at: string;
  sent_at: string | null;
  message_id: string | null;
}

/** The id of the queued message with this key, if any. */
export function queuedId(db: Db, dedupeKey: string): number | null {
  const id = db.prepare('SELECT id FROM mail_queue WHERE dedupe_key = ?').pluck().get(dedupeKey) as number | undefined;
  return id ?? null;
}

/** Queues `mail` unless its key is already queued (or sent); returns the row's id either way. */
export function enqueueMail(db: Db, mail: NewMail, now: Date = new Date()): number {
  const at = now.toISOString();
  db.prepare(
    `INSERT OR IGNORE INTO mail_queue
       (tenant, dedupe_key, mail_from, mail_to, reply_to, subject, text, html, attachments, status, attempts, next_attempt_at, created_at)
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'queued', 0, ?, ?)`,
  ).run(
    mail.tenant,
    mail.dedupeKey,
    mail.from,
    JSON.stringify(mail.to),
    mail.replyTo ?? null,
    mail.subject,
    mail.text,
    mail.html,
    JSON.stringify(mail.attachments),
    at,
    at,
  );
  // Read back rather than trust lastInsertRowid: after an ignored insert it is stale.
  const id = queuedId(db, mail.dedupeKey);
  if (id === null) throw new Error(`mail ${mail.dedupeKey} was not queued`);
  return id;
}
