// SQLite: the import records and their row errors, the outbox of outcomes, and the mail queue.
import type {
  ErrorRow,
  HeldUpload,
  ImportRow,
  ImportStore,
  MailQueueSummary,
  MailRow,
  MailStore,
  NewMail,
  NewOutcome,
  Outcome,
  OutcomePayload,
  OutboxStore,
  RowProblem,
  UnappliedImport,
} from '../types.js';
import { countsOf, importRow, mailRow, outcomeRow } from '../rows.js';
import type { SqliteConnection } from './connection.js';

const nowIso = (): string => new Date().toISOString();
type Row = Record<string, unknown>;
const PAGE = 2000;

/** Inserts one import record (inside the caller's transaction); returns its id. */
export function insertImport(c: SqliteConnection, rec: UnappliedImport | (Omit<UnappliedImport, 'status'> & { status: string; createdFields?: string[] | null })): number {
  const k = rec.counts;
  return Number(
    c
      .stmt(
        `INSERT INTO imports (run_id, tenant, epoch, file, kind, status, message, content_sha1, rows, created, updated, unchanged, deactivated, archived, failed,
                              actor, started_at, finished_at, header, held_import_id, created_fields)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      )
      .run(
        rec.runId, rec.tenant, rec.epoch, rec.file, rec.kind, rec.status, rec.message, rec.contentSha1,
        k.rows, k.created, k.updated, k.unchanged, k.deactivated, k.archived, k.failed,
        rec.actor, rec.startedAt, nowIso(), rec.header ? JSON.stringify(rec.header) : null, rec.heldImportId ?? null,
        'createdFields' in rec && rec.createdFields ? JSON.stringify(rec.createdFields) : null,
      ).lastInsertRowid,
  );
}

/** The held imports of a tenant that nothing resolved since (release, discard, a later hold of the same upload). */
const HELD_SQL = `
  SELECT h.*,
         (SELECT min(a.id) FROM imports a
           WHERE a.tenant = h.tenant AND a.kind IS h.kind AND a.id > h.id AND a.status IN ('applied', 'applied with errors')
             AND a.held_import_id IS NOT h.id AND a.reverts_import_id IS NULL) AS superseded_by, -- an undo is no newer upload
         (SELECT json_extract(o.payload, '$.location') FROM outcomes o
           WHERE o.tenant = h.tenant AND o.epoch = h.epoch AND o.kind = 'epoch' ORDER BY o.id DESC LIMIT 1) AS location
    FROM imports h
   WHERE h.tenant = ? AND h.status = 'held'
     AND NOT EXISTS (SELECT 1 FROM imports r WHERE r.held_import_id = h.id)
     AND NOT EXISTS (SELECT 1 FROM imports l WHERE l.tenant = h.tenant AND l.epoch = h.epoch AND l.file = h.file AND l.id > h.id)`;

function heldRow(r: Row): HeldUpload {
  return {
    importId: Number(r.id),
    epoch: String(r.epoch),
    file: String(r.file),
    kind: (r.kind as string | null) ?? null,
    heldAt: String(r.finished_at),
    message: (r.message as string | null) ?? null,
    counts: countsOf(r),
    location: (r.location as string | null) ?? null,
    supersededBy: r.superseded_by === null || r.superseded_by === undefined ? null : Number(r.superseded_by),
  };
}

export class SqliteImports implements ImportStore {
  constructor(private readonly c: SqliteConnection) {}

  findApplied(tenant: string, epoch: string, file: string, sha1: string): Promise<ImportRow | null> {
    return this.c.read(() => {
      const r = this.c
        .stmt(`SELECT * FROM imports WHERE tenant = ? AND epoch = ? AND file = ? AND content_sha1 = ? AND status IN ('applied', 'applied with errors') ORDER BY id DESC LIMIT 1`)
        .get(tenant, epoch, file, sha1) as Row | undefined;
      return r ? importRow(r) : null;
    });
  }

  recordUnapplied(rec: UnappliedImport): Promise<number> {
    return this.c.write(() => insertImport(this.c, rec));
  }

  get(id: number): Promise<ImportRow | null> {
    return this.c.read(() => {
      const r = this.c.stmt('SELECT * FROM imports WHERE id = ?').get(id) as Row | undefined;
      return r ? importRow(r) : null;
    });
  }

  byRun(runId: number): Promise<ImportRow[]> {
    return this.c.read(() => (this.c.stmt('SELECT * FROM imports WHERE run_id = ? ORDER BY id').all(runId) as Row[]).map(importRow));
  }

  ofEpoch(tenant: string, epoch: string): Promise<ImportRow[]> {
    return this.c.read(() =>
      (
        this.c
          .stmt(
            `SELECT * FROM imports i WHERE tenant = ? AND epoch = ? AND reverts_import_id IS NULL
                AND id = (SELECT max(id) FROM imports j WHERE j.tenant = i.tenant AND j.epoch = i.epoch AND j.file = i.file AND j.reverts_import_id IS NULL) ORDER BY file`,
          )
          .all(tenant, epoch) as Row[]
      ).map(importRow),
    );
  }

  recent(tenant: string, limit: number, offset = 0): Promise<ImportRow[]> {
    return this.c.read(() => (this.c.stmt('SELECT * FROM imports WHERE tenant = ? ORDER BY id DESC LIMIT ? OFFSET ?').all(tenant, limit, offset) as Row[]).map(importRow));
  }

  errors(importId: number, limit: number, offset = 0) {
    return this.c.read(() =>
      (this.c.stmt('SELECT line, "column", value, reason FROM import_errors WHERE import_id = ? ORDER BY line, rowid LIMIT ? OFFSET ?').all(importId, limit, offset) as Row[]).map((r) => ({
        line: Number(r.line),
        column: (r.column as string | null) ?? null,
        value: (r.value as string | null) ?? null,
        reason: String(r.reason),
      })),
    );
  }

  async *errorRows(importId: number): AsyncIterable<ErrorRow[]> {
    // Keyset paging by line: every problem of a line arrives in the same page.
    for (let after = -1; ; ) {
      const rows = await this.c.read(
        () =>
          this.c
            .stmt(
              `SELECT line, "column", value, reason, raw FROM import_errors
                WHERE import_id = ? AND line IN (SELECT DISTINCT line FROM import_errors WHERE import_id = ? AND line > ? ORDER BY line LIMIT ${PAGE})
                ORDER BY line, rowid`,
            )
            .all(importId, importId, after) as Row[],
      );
      if (rows.length === 0) return;
      const out: ErrorRow[] = [];
      for (const r of rows) {
        const line = Number(r.line);
        const problem: RowProblem = { column: (r.column as string | null) ?? '', value: (r.value as string | null) ?? '', reason: String(r.reason) };
        const last = out[out.length - 1];
        if (last && last.line === line) last.problems.push(problem);
        else out.push({ line, raw: r.raw ? (JSON.parse(String(r.raw)) as string[]) : [], problems: [problem] });
      }
      after = out[out.length - 1].line;
      yield out;
    }
  }

  held(tenant: string): Promise<HeldUpload[]> {
    return this.c.read(() => (this.c.stmt(`${HELD_SQL} ORDER BY h.id`).all(tenant) as Row[]).map(heldRow));
  }

  heldImport(tenant: string, epoch: string): Promise<HeldUpload | null> {
    return this.c.read(() => {
      const r = this.c.stmt(`${HELD_SQL} AND h.epoch = ? ORDER BY h.id DESC LIMIT 1`).get(tenant, epoch) as Row | undefined;
      return r ? heldRow(r) : null;
    });
  }

  totals() {
    // Rows only of imports that were applied: a held import's counts are an estimate (its release is
    // another import with what really happened), and a rejected or discarded one changed nobody.
    return this.c.read(() => {
      const byStatus = Object.fromEntries((this.c.stmt('SELECT status, count(*) AS n FROM imports GROUP BY status').all() as Row[]).map((r) => [String(r.status), Number(r.n)]));
      const r = this.c
        .stmt(`SELECT coalesce(sum(created),0) AS created, coalesce(sum(updated),0) AS updated, coalesce(sum(unchanged),0) AS unchanged, coalesce(sum(deactivated),0) AS deactivated, coalesce(sum(archived),0) AS archived, coalesce(sum(failed),0) AS failed FROM imports WHERE status IN ('applied', 'applied with errors')`)
        .get() as Row;
      return { byStatus, rows: Object.fromEntries(Object.entries(r).map(([k, v]) => [k, Number(v)])) };
    });
  }
}

export class SqliteOutbox implements OutboxStore {
  constructor(private readonly c: SqliteConnection) {}

  /** Inside the caller's transaction. */
  insert(o: NewOutcome): { id: number; created: boolean } {
    const info = this.c
      .stmt('INSERT INTO outcomes (tenant, kind, dedupe_key, epoch, payload, filed, created_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (dedupe_key) DO NOTHING')
      .run(o.tenant, o.kind, o.dedupeKey, o.epoch, JSON.stringify(o.payload), o.filed ? 1 : 0, nowIso());
    if (info.changes === 1) return { id: Number(info.lastInsertRowid), created: true };
    return { id: Number(this.c.stmt('SELECT id FROM outcomes WHERE dedupe_key = ?').pluck().get(o.dedupeKey)), created: false };
  }

  record(o: NewOutcome): Promise<{ id: number; created: boolean }> {
    return this.c.write(() => this.insert(o));
  }

  recordStale(tenant: string, epochs: string[], o: NewOutcome): Promise<void> {
    return this.c.write(() => {
      const now = nowIso();
      for (const epoch of epochs) {
        this.c
          .stmt(
            `INSERT INTO stale_uploads (tenant, epoch, first_seen, reported_at) VALUES (?, ?, ?, ?)
             ON CONFLICT (tenant, epoch) DO UPDATE SET reported_at = excluded.reported_at`,
          )
          .run(tenant, epoch, now, now);
      }
      this.insert(o);
    });
  }

  file(id: number, location: string | null, note: string | null, misfiled = false): Promise<void> {
    return this.c.write(() => {
      const row = this.c.stmt('SELECT payload FROM outcomes WHERE id = ?').get(id) as { payload: string } | undefined;
      if (!row) return;
      const before = JSON.parse(row.payload) as OutcomePayload;
      const payload = { ...before, location, locationNote: note, misfiled, operators: before.operators || misfiled };
      this.c.stmt('UPDATE outcomes SET payload = ?, filed = 1 WHERE id = ?').run(JSON.stringify(payload), id);
    });
  }

  unfiled(tenant: string, epoch: string): Promise<Outcome | null> {
    return this.c.read(() => {
      const r = this.c.stmt(`SELECT * FROM outcomes WHERE tenant = ? AND epoch = ? AND filed = 0 ORDER BY id DESC LIMIT 1`).get(tenant, epoch) as Row | undefined;
      return r ? outcomeRow(r) : null;
    });
  }

  unreported(tenant?: string): Promise<Outcome[]> {
    return this.c.read(() =>
      ((tenant === undefined
        ? this.c.stmt('SELECT * FROM outcomes WHERE reported_at IS NULL AND filed = 1 ORDER BY id').all()
        : this.c.stmt('SELECT * FROM outcomes WHERE reported_at IS NULL AND filed = 1 AND tenant = ? ORDER BY id').all(tenant)) as Row[]
      ).map(outcomeRow),
    );
  }

  markReported(id: number, mail: NewMail[]): Promise<void> {
    return this.c.write(() => {
      const changed = this.c.stmt('UPDATE outcomes SET reported_at = ? WHERE id = ? AND reported_at IS NULL').run(nowIso(), id).changes;
      if (changed === 1) for (const m of mail) insertMail(this.c, m);
    });
  }

  get(id: number): Promise<Outcome | null> {
    return this.c.read(() => {
      const r = this.c.stmt('SELECT * FROM outcomes WHERE id = ?').get(id) as Row | undefined;
      return r ? outcomeRow(r) : null;
    });
  }

  recent(tenant: string, limit: number): Promise<Outcome[]> {
    return this.c.read(() => (this.c.stmt('SELECT * FROM outcomes WHERE tenant = ? ORDER BY id DESC LIMIT ?').all(tenant, limit) as Row[]).map(outcomeRow));
  }

  ofEpoch(tenant: string, epoch: string): Promise<Outcome[]> {
    return this.c.read(() => (this.c.stmt('SELECT * FROM outcomes WHERE tenant = ? AND epoch = ? ORDER BY id DESC').all(tenant, epoch) as Row[]).map(outcomeRow));
  }
}

function insertMail(c: SqliteConnection, mail: NewMail): number {
  const at = nowIso();
  c.stmt(
    `INSERT INTO mail_queue (tenant, dedupe_key, mail_from, mail_to, reply_to, subject, text, html, attachments, status, attempts, next_attempt_at, created_at)
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'queued', 0, ?, ?) ON CONFLICT (dedupe_key) DO NOTHING`,
  ).run(mail.tenant, mail.dedupeKey, mail.from, JSON.stringify(mail.to), mail.replyTo ?? null, mail.subject, mail.text, mail.html, JSON.stringify(mail.attachments), at, at);
  // Read back rather than trust lastInsertRowid: after an ignored insert it is stale.
  return Number(c.stmt('SELECT id FROM mail_queue WHERE dedupe_key = ?').pluck().get(mail.dedupeKey));
}

export class SqliteMail implements MailStore {
  constructor(private readonly c: SqliteConnection) {}

  enqueue(mail: NewMail): Promise<number> {
    return this.c.write(() => insertMail(this.c, mail));
  }

  due(now: Date, tenant?: string): Promise<number[]> {
    return this.c.read(
      () =>
        (tenant === undefined
          ? this.c.stmt(`SELECT id FROM mail_queue WHERE status = 'queued' AND next_attempt_at <= ? ORDER BY next_attempt_at, id`).pluck().all(now.toISOString())
          : this.c.stmt(`SELECT id FROM mail_queue WHERE status = 'queued' AND next_attempt_at <= ? AND tenant = ? ORDER BY next_attempt_at, id`).pluck().all(now.toISOString(), tenant)) as number[],
    );
  }

  claim(id: number, now: Date, until: Date): Promise<MailRow | null> {
    return this.c.write(() => {
      const changed = this.c
        .stmt(`UPDATE mail_queue SET attempts = attempts + 1, next_attempt_at = ? WHERE id = ? AND status = 'queued' AND next_attempt_at <= ?`)
        .run(until.toISOString(), id, now.toISOString()).changes;
      return changed === 1 ? mailRow(this.c.stmt('SELECT * FROM mail_queue WHERE id = ?').get(id) as Row) : null;
    });
  }

  markSent(id: number, messageId: string, note: string | null): Promise<void> {
    return this.c.write(() => {
      this.c.stmt(`UPDATE mail_queue SET status = 'sent', sent_at = ?, message_id = ?, last_error = ? WHERE id = ?`).run(nowIso(), messageId, note, id);
    });
  }

  markRetry(id: number, error: string, at: Date): Promise<void> {
    return this.c.write(() => {
      this.c.stmt('UPDATE mail_queue SET last_error = ?, next_attempt_at = ? WHERE id = ?').run(error, at.toISOString(), id);
    });
  }

  markFailed(id: number, error: string): Promise<void> {
    return this.c.write(() => {
      this.c.stmt(`UPDATE mail_queue SET status = 'failed', last_error = ? WHERE id = ?`).run(error, id);
    });
  }

  summary(tenant?: string): Promise<MailQueueSummary> {
    return this.c.read(() => {
      const where = tenant === undefined ? '' : 'WHERE tenant = @tenant';
      const and = tenant === undefined ? '' : 'AND tenant = @tenant';
      const row = this.c
        .stmt(
          `SELECT count(*) FILTER (WHERE status = 'queued') AS queued, count(*) FILTER (WHERE status = 'sent') AS sent,
                  count(*) FILTER (WHERE status = 'failed') AS failed, min(created_at) FILTER (WHERE status = 'queued') AS oldest
             FROM mail_queue ${where}`,
        )
        .get({ tenant }) as Row;
      // The error of the most recently failed message that is still waiting (or gave up).
      const lastError = this.c
        .stmt(`SELECT last_error FROM mail_queue WHERE status IN ('queued', 'failed') AND last_error IS NOT NULL ${and} ORDER BY next_attempt_at DESC, id DESC LIMIT 1`)
        .pluck()
        .get({ tenant }) as string | undefined;
      return { queued: Number(row.queued), sent: Number(row.sent), failed: Number(row.failed), oldestQueuedAt: (row.oldest as string | null) ?? null, lastError: lastError ?? null };
    });
  }

  list(tenant: string, limit: number): Promise<MailRow[]> {
    return this.c.read(() => (this.c.stmt('SELECT * FROM mail_queue WHERE tenant = ? ORDER BY id DESC LIMIT ?').all(tenant, limit) as Row[]).map(mailRow));
  }

  get(id: number): Promise<MailRow | null> {
    return this.c.read(() => {
      const r = this.c.stmt('SELECT * FROM mail_queue WHERE id = ?').get(id) as Row | undefined;
      return r ? mailRow(r) : null;
    });
  }

  requeue(id: number, dedupeKey: string): Promise<number> {
    return this.c.write(() => {
      const r = this.c.stmt('SELECT * FROM mail_queue WHERE id = ?').get(id) as Row | undefined;
      if (!r) throw new Error(`no mail ${id}`);
      const m = mailRow(r);
      return insertMail(this.c, { tenant: m.tenant, dedupeKey, from: m.from, to: m.to, replyTo: m.replyTo, subject: m.subject, text: m.text, html: m.html, attachments: m.attachments });
    });
  }
}
