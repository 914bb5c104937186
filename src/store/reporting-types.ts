// The data-access contract, part three (see types.ts): reporting. The outbox of outcomes each
// report is built from, and the mail queue that sends them with retries.
import type { ImportCounts, ImportStatus } from './types.js';

export type OutcomeKind = 'epoch' | 'released' | 'discarded' | 'stale' | 'overdue' | 'reverted';

/**
 * Something to tell a district (and sometimes the operators) about, stored in the transaction that
 * records it; the report is rendered and queued from it afterwards. An epoch outcome is recorded
 * before its upload is moved (`filed: false`) and confirmed once it is where the report says.
 */
export interface Outcome extends NewOutcome {
  id: number;
  createdAt: string;
  reportedAt: string | null;
}

export interface OutcomeFile {
  file: string;
  kind: string | null;
  status: ImportStatus;
  message: string | null;
  counts: ImportCounts;
  importId: number | null;
}

export interface OutcomePayload {
  status: ImportStatus;
  files: OutcomeFile[];
  /** Where the upload is on the SFTP host (null: nowhere to show, e.g. stale notices). */
  location: string | null;
  /** Why it is not where it would normally go (bak not usable, …). */
  locationNote?: string | null;
  /**
   * It could not be put where it belongs (bak is a file, say): a problem the district and the
   * operators are told about whatever notify.when says, and `status` shows.
   */
  misfiled?: boolean;
  /** The epoch folder it came from, when it was claimed from a reused name, etc. */
  notes: string[];
  staleUploads: string[];
  /** Operators get this one whatever the tenant's notify.when (holds, failures). */
  operators: boolean;
  /** Where the upload was (for keep-in-place files, the file itself). */
  source?: string | null;
  /** The report's first sentence and subject, when the files do not say it (an undo, an overdue feed). */
  headline?: string | null;
  summary?: string | null;
  finishedAt: string;
}

export interface NewOutcome {
  tenant: string;
  kind: OutcomeKind;
  dedupeKey: string;
  epoch: string | null;
  payload: OutcomePayload;
  filed: boolean;
}

export interface OutboxStore {
  /** Stores an outcome once per dedupe key; returns its id (the existing one when known). */
  record(o: NewOutcome): Promise<{ id: number; created: boolean }>;
  /** Uploads that never completed: marked reported in the same transaction that stores the notice. */
  recordStale(tenant: string, epochs: string[], o: NewOutcome): Promise<void>;
  /** Confirms where the upload now is; `misfiled`: not where it belongs (the operators are told too). */
  file(id: number, location: string | null, note: string | null, misfiled?: boolean): Promise<void>;
  /** An outcome recorded for this epoch whose upload was not yet filed away (crash recovery). */
  unfiled(tenant: string, epoch: string): Promise<Outcome | null>;
  /** Filed outcomes not yet reported, oldest first. */
  unreported(tenant?: string): Promise<Outcome[]>;
  /** Marks it reported; queues the mail (if any) in the same transaction. */
  markReported(id: number, mail: NewMail[]): Promise<void>;
  get(id: number): Promise<Outcome | null>;
  recent(tenant: string, limit: number): Promise<Outcome[]>;
  /** The outcomes recorded for one epoch, newest first (where the upload is now; its result.json). */
  ofEpoch(tenant: string, epoch: string): Promise<Outcome[]>;
}

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

export type MailStatus = 'queued' | 'sent' | 'failed';

export interface MailRow {
  id: number;
  tenant: string;
  dedupeKey: string;
  from: string;
  to: string[];
  replyTo: string | null;
  subject: string;
  text: string;
  html: string;
  attachments: QueuedAttachment[];
  status: MailStatus;
  attempts: number;
  nextAttemptAt: string;
  lastError: string | null;
  createdAt: string;
  sentAt: string | null;
  messageId: string | null;
}

export interface MailQueueSummary {
  queued: number;
  sent: number;
  failed: number;
  oldestQueuedAt: string | null;
  lastError: string | null;
}

export interface MailStore {
  enqueue(mail: NewMail): Promise<number>;
  /** Ids due now, oldest first. */
  due(now: Date, tenant?: string): Promise<number[]>;
  /** Takes a due message for one attempt (a lease until `until`); null when someone else did. */
  claim(id: number, now: Date, until: Date): Promise<MailRow | null>;
  markSent(id: number, messageId: string, note: string | null): Promise<void>;
  markRetry(id: number, error: string, at: Date): Promise<void>;
  markFailed(id: number, error: string): Promise<void>;
  summary(tenant?: string): Promise<MailQueueSummary>;
  list(tenant: string, limit: number): Promise<MailRow[]>;
  get(id: number): Promise<MailRow | null>;
  /** A copy of a sent or failed message, queued again (the console's "resend"). */
  requeue(id: number, dedupeKey: string): Promise<number>;
}
