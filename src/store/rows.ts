// Turning stored rows (snake_case columns, JSON in text, integers or booleans, timestamps as
// text or Date) into the typed objects of types.ts. Shared by both stores, so that SQLite and
// PostgreSQL answer with exactly the same shapes.
import type {
  DaemonInfo,
  DirectoryUser,
  ImportCounts,
  ImportRow,
  ImportStatus,
  MailRow,
  Outcome,
  RunStatus,
  RunSummary,
  TriggerRow,
  UserChangeRow,
} from './types.js';

type Row = Record<string, unknown>;

export const iso = (v: unknown): string => (v instanceof Date ? v.toISOString() : String(v));
export const isoOrNull = (v: unknown): string | null => (v === null || v === undefined ? null : iso(v));
const num = (v: unknown): number => Number(v ?? 0);
const numOrNull = (v: unknown): number | null => (v === null || v === undefined ? null : Number(v));
const str = (v: unknown): string | null => (v === null || v === undefined ? null : String(v));
/** JSON stored as text (SQLite) or already parsed (PostgreSQL jsonb). */
export const json = <T>(v: unknown, fallback: T): T => {
  if (v === null || v === undefined) return fallback;
  return (typeof v === 'string' ? JSON.parse(v) : v) as T;
};
const bool = (v: unknown): boolean => v === true || v === 1 || v === '1' || v === 't';

export function countsOf(r: Row): ImportCounts {
  return { rows: num(r.rows), created: num(r.created), updated: num(r.updated), unchanged: num(r.unchanged), deactivated: num(r.deactivated), archived: num(r.archived), failed: num(r.failed) };
}

export function importRow(r: Row): ImportRow {
  return {
    id: num(r.id),
    runId: numOrNull(r.run_id),
    tenant: String(r.tenant),
    epoch: String(r.epoch),
    file: String(r.file),
    kind: str(r.kind),
    status: r.status as ImportStatus,
    message: str(r.message),
    contentSha1: str(r.content_sha1),
    counts: countsOf(r),
    actor: str(r.actor),
    header: json<string[] | null>(r.header, null),
    heldImportId: numOrNull(r.held_import_id),
    revertsImportId: numOrNull(r.reverts_import_id),
    startedAt: iso(r.started_at),
    finishedAt: iso(r.finished_at),
  };
}

export function runRow(r: Row): RunSummary {
  return {
    id: num(r.id),
    tenant: String(r.tenant),
    reason: String(r.reason),
    owner: String(r.owner),
    status: r.status as RunStatus,
    message: str(r.message),
    dryRun: bool(r.dry_run),
    startedAt: iso(r.started_at),
    finishedAt: isoOrNull(r.finished_at),
    settling: json(r.settling, []),
  };
}

export function userRow(r: Row): DirectoryUser {
  return {
    externalId: String(r.external_id),
    kind: String(r.kind),
    email: str(r.email),
    username: str(r.username),
    firstName: str(r.first_name),
    lastName: str(r.last_name),
    role: str(r.role),
    siteId: str(r.site_id),
    siteLabel: str(r.site_label),
    active: bool(r.active),
    archivedAt: isoOrNull(r.archived_at),
    hasPassword: r.password_hash !== null && r.password_hash !== undefined,
    attributes: json<Record<string, string>>(r.attributes, {}),
    createdAt: iso(r.created_at),
    updatedAt: iso(r.updated_at),
    updatedBy: str(r.updated_by),
  };
}

export function changeRow(r: Row): UserChangeRow {
  return {
    id: num(r.id),
    importId: numOrNull(r.import_id),
    action: r.action as UserChangeRow['action'],
    fields: json<string[]>(r.fields, []),
    oldValues: json<Record<string, unknown>>(r.old_values, {}),
    actor: str(r.actor),
    changedAt: iso(r.changed_at),
    epoch: str(r.epoch),
    file: str(r.file),
  };
}

export function outcomeRow(r: Row): Outcome {
  return {
    id: num(r.id),
    tenant: String(r.tenant),
    kind: r.kind as Outcome['kind'],
    dedupeKey: String(r.dedupe_key),
    epoch: str(r.epoch),
    payload: json(r.payload, {} as Outcome['payload']),
    filed: bool(r.filed),
    createdAt: iso(r.created_at),
    reportedAt: isoOrNull(r.reported_at),
  };
}

export function mailRow(r: Row): MailRow {
  return {
    id: num(r.id),
    tenant: String(r.tenant),
    dedupeKey: String(r.dedupe_key),
    from: String(r.mail_from),
    to: json<string[]>(r.mail_to, []),
    replyTo: str(r.reply_to),
    subject: String(r.subject),
    text: String(r.text),
    html: String(r.html),
    attachments: json(r.attachments, []),
    status: r.status as MailRow['status'],
    attempts: num(r.attempts),
    nextAttemptAt: iso(r.next_attempt_at),
    lastError: str(r.last_error),
    createdAt: iso(r.created_at),
    sentAt: isoOrNull(r.sent_at),
    messageId: str(r.message_id),
  };
}

export function triggerRow(r: Row): TriggerRow {
  return {
    id: num(r.id),
    tenant: String(r.tenant),
    requestedAt: iso(r.requested_at),
    requestedBy: str(r.requested_by),
    pickedUpAt: isoOrNull(r.picked_up_at),
    pickedUpBy: str(r.picked_up_by),
    runId: numOrNull(r.run_id),
    finishedAt: isoOrNull(r.finished_at),
    status: str(r.status),
    message: str(r.message),
  };
}

export function daemonRow(r: Row): DaemonInfo {
  const owner = String(r.owner);
  return {
    owner,
    host: str(r.host) ?? owner.split(':')[0],
    pid: numOrNull(r.pid) ?? Number(owner.split(':')[1] ?? 0),
    startedAt: iso(r.started_at),
    heartbeatAt: iso(r.heartbeat_at),
    stoppedAt: isoOrNull(r.stopped_at),
    tenants: json<string[]>(r.tenants, []),
    running: json<string[]>(r.running, []),
  };
}
