// PostgreSQL: the import records and their row errors, the outbox of outcomes, and the mail
// queue. A message is taken for one attempt by exactly one worker (a conditional UPDATE), so it
// is delivered once whichever daemon sends it.
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
  OutboxStore,
  UnappliedImport,
} from '../types.js';
import { countsOf, importRow, iso, isoOrNull, mailRow, outcomeRow } from '../rows.js';
import type { Client, PgConnection } from './connection.js';

type Row = Record<string, unknown>;
type Q = Pick<Client, 'query'>;
const PAGE = 2000;

/** Inserts one import record (on the caller's client, inside its transaction); returns its id. */
/**
 * `startedAt` comes from the worker's clock, which may differ from the database's (and from the
 * other workers'): only how long ago it was is taken from it, the moment itself from the
 * database, so that started_at and finished_at are on one clock.
 */
export async function insertImport(q: Q, rec: UnappliedImport | (Omit<UnappliedImport, 'status'> & { status: string; createdFields?: string[] | null })): Promise<number> {
  const k = rec.counts;
  const agoMs = Math.max(0, Date.now() - Date.parse(rec.startedAt)) || 0;
  const r = await q.query(
    `INSERT INTO imports (run_id, tenant, epoch, file, kind, status, message, content_sha1, rows, created, updated, unchanged, deactivated, archived, failed,
                          actor, started_at, header, held_import_id, created_fields)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, clock_timestamp() - $17 * interval '1 millisecond', $18, $19, $20) RETURNING id`,
    [
      rec.runId, rec.tenant, rec.epoch, rec.file, rec.kind, rec.status, rec.message, rec.contentSha1,
      k.rows, k.created, k.updated, k.unchanged, k.deactivated, k.archived, k.failed,
      rec.actor, agoMs, rec.header ? JSON.stringify(rec.header) : null, rec.heldImportId ?? null,
      'createdFields' in rec && rec.createdFields ? JSON.stringify(rec.createdFields) : null,
    ],
  );
  return Number((r.rows[0] as Row).id);
}

const HELD_SQL = `
  SELECT h.*,
         (SELECT min(a.id) FROM imports a
           WHERE a.tenant = h.tenant AND a.kind IS NOT DISTINCT FROM h.kind AND a.id > h.id AND a.status IN ('applied', 'applied with errors')
             AND a.held_import_id IS DISTINCT FROM h.id AND a.reverts_import_id IS NULL) AS superseded_by, -- an undo is no newer upload
         (SELECT o.payload->>'location' FROM outcomes o
           WHERE o.tenant = h.tenant AND o.epoch = h.epoch AND o.kind = 'epoch' ORDER BY o.id DESC LIMIT 1) AS location
    FROM imports h
   WHERE h.tenant = $1 AND h.status = 'held'
     AND NOT EXISTS (SELECT 1 FROM imports r WHERE r.held_import_id = h.id)
     AND NOT EXISTS (SELECT 1 FROM imports l WHERE l.tenant = h.tenant AND l.epoch = h.epoch AND l.file = h.file AND l.id > h.id)`;

function heldRow(r: Row): HeldUpload {
  return {
    importId: Number(r.id),
    epoch: String(r.epoch),
    file: String(r.file),
    kind: (r.kind as string | null) ?? null,
    heldAt: iso(r.finished_at),
    message: (r.message as string | null) ?? null,
    counts: countsOf(r),
    location: (r.location as string | null) ?? null,
    supersededBy: r.superseded_by === null || r.superseded_by === undefined ? null : Number(r.superseded_by),
  };
}

export class PgImports implements ImportStore {
  constructor(private readonly c: PgConnection) {}

  async findApplied(tenant: string, epoch: string, file: string, sha1: string): Promise<ImportRow | null> {
    const r = await this.c.one(
      `SELECT * FROM imports WHERE tenant = $1 AND epoch = $2 AND file = $3 AND content_sha1 = $4 AND status IN ('applied', 'applied with errors') ORDER BY id DESC LIMIT 1`,
      [tenant, epoch, file, sha1],
    );
    return r ? importRow(r) : null;
  }

  async recordUnapplied(rec: UnappliedImport): Promise<number> {
    return insertImport(this.c.pool, rec);
  }

  async get(id: number): Promise<ImportRow | null> {
    const r = await this.c.one('SELECT * FROM imports WHERE id = $1', [id]);
    return r ? importRow(r) : null;
  }

  async byRun(runId: number): Promise<ImportRow[]> {
    return (await this.c.query('SELECT * FROM imports WHERE run_id = $1 ORDER BY id', [runId])).map(importRow);
  }

  async ofEpoch(tenant: string, epoch: string): Promise<ImportRow[]> {
    return (
      await this.c.query(
        'SELECT DISTINCT ON (file) * FROM imports WHERE tenant = $1 AND epoch = $2 AND reverts_import_id IS NULL ORDER BY file, id DESC',
        [tenant, epoch],
      )
    ).map(importRow);
  }

  async recent(tenant: string, limit: number, offset = 0): Promise<ImportRow[]> {
    return (await this.c.query('SELECT * FROM imports WHERE tenant = $1 ORDER BY id DESC LIMIT $2 OFFSET $3', [tenant, limit, offset])).map(importRow);
  }

  async errors(importId: number, limit: number, offset = 0) {
    return (await this.c.query('SELECT line, "column", value, reason FROM import_errors WHERE import_id = $1 ORDER BY line, ctid LIMIT $2 OFFSET $3', [importId, limit, offset])).map((r) => ({
      line: Number(r.line), column: (r.column as string | null) ?? null, value: (r.value as string | null) ?? null, reason: String(r.reason),
    }));
  }

  async *errorRows(importId: number): AsyncIterable<ErrorRow[]> {
    for (let after = -1; ; ) {
      const rows = await this.c.query(
        `SELECT line, "column", value, reason, raw FROM import_errors
          WHERE import_id = $1 AND line IN (SELECT DISTINCT line FROM import_errors WHERE import_id = $1 AND line > $2 ORDER BY line LIMIT ${PAGE})
          ORDER BY line, ctid`,
        [importId, after],
      );
      if (rows.length === 0) return;
      const out: ErrorRow[] = [];
      for (const r of rows) {
        const line = Number(r.line);
        const problem = { column: (r.column as string | null) ?? '', value: (r.value as string | null) ?? '', reason: String(r.reason) };
        const last = out[out.length - 1];
        if (last && last.line === line) last.problems.push(problem);
        else out.push({ line, raw: (r.raw as string[] | null) ?? [], problems: [problem] });
      }
      after = out[out.length - 1].line;
      yield out;
    }
  }

  async held(tenant: string): Promise<HeldUpload[]> {
    return (await this.c.query(`${HELD_SQL} ORDER BY h.id`, [tenant])).map(heldRow);
  }

  async heldImport(tenant: string, epoch: string): Promise<HeldUpload | null> {
    const r = await this.c.one(`${HELD_SQL} AND h.epoch = $2 ORDER BY h.id DESC LIMIT 1`, [tenant, epoch]);
    return r ? heldRow(r) : null;
  }

  async totals() {
    // Rows only of imports that were applied: a held import's counts are an estimate (its release is
    // another import with what really happened), and a rejected or discarded one changed nobody.
    const byStatus = Object.fromEntries((await this.c.query('SELECT status, count(*) AS n FROM imports GROUP BY status')).map((r) => [String(r.status), Number(r.n)]));
    const r = (await this.c.one(
      `SELECT coalesce(sum(created),0) AS created, coalesce(sum(updated),0) AS updated, coalesce(sum(unchanged),0) AS unchanged, coalesce(sum(deactivated),0) AS deactivated, coalesce(sum(archived),0) AS archived, coalesce(sum(failed),0) AS failed FROM imports WHERE status IN ('applied', 'applied with errors')`,
    ))!;
    return { byStatus, rows: Object.fromEntries(Object.entries(r).map(([k, v]) => [k, Number(v)])) };
  }
}

/** The report's "finished at" is when the outcome is recorded, by the database's clock (not the worker's). */
export async function insertOutcome(q: Q, o: NewOutcome): Promise<{ id: number; created: boolean }> {
  const r = await q.query(
    `INSERT INTO outcomes (tenant, kind, dedupe_key, epoch, payload, filed, created_at)
     VALUES ($1, $2, $3, $4, jsonb_set($5::jsonb, '{finishedAt}', to_jsonb(to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'))), $6, now())
     ON CONFLICT (dedupe_key) DO NOTHING RETURNING id`,
    [o.tenant, o.kind, o.dedupeKey, o.epoch, JSON.stringify(o.payload), o.filed],
  );
  if (r.rows.length) return { id: Number((r.rows[0] as Row).id), created: true };
  return { id: Number(((await q.query('SELECT id FROM outcomes WHERE dedupe_key = $1', [o.dedupeKey])).rows[0] as Row).id), created: false };
}

export class PgOutbox implements OutboxStore {
  constructor(private readonly c: PgConnection) {}

  record(o: NewOutcome): Promise<{ id: number; created: boolean }> {
    return insertOutcome(this.c.pool, o);
  }

  recordStale(tenant: string, epochs: string[], o: NewOutcome): Promise<void> {
    return this.c.tx(async (q) => {
      await q.query(
        `INSERT INTO stale_uploads (tenant, epoch, first_seen, reported_at) SELECT $1, e, now(), now() FROM unnest($2::text[]) AS e
         ON CONFLICT (tenant, epoch) DO UPDATE SET reported_at = excluded.reported_at`,
        [tenant, epochs],
      );
      await insertOutcome(q, o);
    });
  }

  async file(id: number, location: string | null, note: string | null, misfiled = false): Promise<void> {
    await this.c.query(
      `UPDATE outcomes SET payload = payload || jsonb_build_object('location', $2::text, 'locationNote', $3::text, 'misfiled', $4::boolean,
              'operators', coalesce((payload->>'operators')::boolean, false) OR $4::boolean), filed = true WHERE id = $1`,
      [id, location, note, misfiled],
    );
  }

  async unfiled(tenant: string, epoch: string): Promise<Outcome | null> {
    const r = await this.c.one('SELECT * FROM outcomes WHERE tenant = $1 AND epoch = $2 AND NOT filed ORDER BY id DESC LIMIT 1', [tenant, epoch]);
    return r ? outcomeRow(r) : null;
  }

  async unreported(tenant?: string): Promise<Outcome[]> {
    const rows =
      tenant === undefined
        ? await this.c.query('SELECT * FROM outcomes WHERE reported_at IS NULL AND filed ORDER BY id')
        : await this.c.query('SELECT * FROM outcomes WHERE reported_at IS NULL AND filed AND tenant = $1 ORDER BY id', [tenant]);
    return rows.map(outcomeRow);
  }

  /** Marks it reported and queues its mail, once: a second worker reporting the same outcome changes nothing. */
  markReported(id: number, mail: NewMail[]): Promise<void> {
    return this.c.tx(async (q) => {
      const r = await q.query('UPDATE outcomes SET reported_at = now() WHERE id = $1 AND reported_at IS NULL RETURNING id', [id]);
      if (r.rows.length === 1) for (const m of mail) await insertMail(q, m);
    });
  }

  async get(id: number): Promise<Outcome | null> {
    const r = await this.c.one('SELECT * FROM outcomes WHERE id = $1', [id]);
    return r ? outcomeRow(r) : null;
  }

  async recent(tenant: string, limit: number): Promise<Outcome[]> {
    return (await this.c.query('SELECT * FROM outcomes WHERE tenant = $1 ORDER BY id DESC LIMIT $2', [tenant, limit])).map(outcomeRow);
  }

  async ofEpoch(tenant: string, epoch: string): Promise<Outcome[]> {
    return (await this.c.query('SELECT * FROM outcomes WHERE tenant = $1 AND epoch = $2 ORDER BY id DESC', [tenant, epoch])).map(outcomeRow);
  }
}

async function insertMail(q: Q, mail: NewMail): Promise<number> {
  await q.query(
    `INSERT INTO mail_queue (tenant, dedupe_key, mail_from, mail_to, reply_to, subject, text, html, attachments, status, attempts, next_attempt_at, created_at)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'queued', 0, now(), now()) ON CONFLICT (dedupe_key) DO NOTHING`,
    [mail.tenant, mail.dedupeKey, mail.from, JSON.stringify(mail.to), mail.replyTo ?? null, mail.subject, mail.text, mail.html, JSON.stringify(mail.attachments)],
  );
  return Number(((await q.query('SELECT id FROM mail_queue WHERE dedupe_key = $1', [mail.dedupeKey])).rows[0] as Row).id);
}

export class PgMail implements MailStore {
  constructor(private readonly c: PgConnection) {}

  enqueue(mail: NewMail): Promise<number> {
    return insertMail(this.c.pool, mail);
  }

  async due(now: Date, tenant?: string): Promise<number[]> {
    const rows =
      tenant === undefined
        ? await this.c.query<{ id: number }>(`SELECT id FROM mail_queue WHERE status = 'queued' AND next_attempt_at <= $1 ORDER BY next_attempt_at, id`, [now])
        : await this.c.query<{ id: number }>(`SELECT id FROM mail_queue WHERE status = 'queued' AND next_attempt_at <= $1 AND tenant = $2 ORDER BY next_attempt_at, id`, [now, tenant]);
    return rows.map((r) => r.id);
  }

  async claim(id: number, now: Date, until: Date): Promise<MailRow | null> {
    const r = await this.c.one(
      `UPDATE mail_queue SET attempts = attempts + 1, next_attempt_at = $3 WHERE id = $1 AND status = 'queued' AND next_attempt_at <= $2 RETURNING *`,
      [id, now, until],
    );
    return r ? mailRow(r) : null;
  }

  async markSent(id: number, messageId: string, note: string | null): Promise<void> {
    await this.c.query(`UPDATE mail_queue SET status = 'sent', sent_at = now(), message_id = $2, last_error = $3 WHERE id = $1`, [id, messageId, note]);
  }

  async markRetry(id: number, error: string, at: Date): Promise<void> {
    await this.c.query('UPDATE mail_queue SET last_error = $2, next_attempt_at = $3 WHERE id = $1', [id, error, at]);
  }

  async markFailed(id: number, error: string): Promise<void> {
    await this.c.query(`UPDATE mail_queue SET status = 'failed', last_error = $2 WHERE id = $1`, [id, error]);
  }

  async summary(tenant?: string): Promise<MailQueueSummary> {
    const where = tenant === undefined ? '' : 'WHERE tenant = $1';
    const and = tenant === undefined ? '' : 'AND tenant = $1';
    const params = tenant === undefined ? [] : [tenant];
    const row = (await this.c.one(
      `SELECT count(*) FILTER (WHERE status = 'queued') AS queued, count(*) FILTER (WHERE status = 'sent') AS sent,
              count(*) FILTER (WHERE status = 'failed') AS failed, min(created_at) FILTER (WHERE status = 'queued') AS oldest
         FROM mail_queue ${where}`,
      params,
    ))!;
    const last = await this.c.one<{ last_error: string }>(
      `SELECT last_error FROM mail_queue WHERE status IN ('queued', 'failed') AND last_error IS NOT NULL ${and} ORDER BY next_attempt_at DESC, id DESC LIMIT 1`,
      params,
    );
    return { queued: Number(row.queued), sent: Number(row.sent), failed: Number(row.failed), oldestQueuedAt: isoOrNull(row.oldest), lastError: last?.last_error ?? null };
  }

  async list(tenant: string, limit: number): Promise<MailRow[]> {
    return (await this.c.query('SELECT * FROM mail_queue WHERE tenant = $1 ORDER BY id DESC LIMIT $2', [tenant, limit])).map(mailRow);
  }

  async get(id: number): Promise<MailRow | null> {
    const r = await this.c.one('SELECT * FROM mail_queue WHERE id = $1', [id]);
    return r ? mailRow(r) : null;
  }

  async requeue(id: number, dedupeKey: string): Promise<number> {
    const m = await this.get(id);
    if (!m) throw new Error(`no mail ${id}`);
    return insertMail(this.c.pool, { tenant: m.tenant, dedupeKey, from: m.from, to: m.to, replyTo: m.replyTo, subject: m.subject, text: m.text, html: m.html, attachments: m.attachments });
  }
}
