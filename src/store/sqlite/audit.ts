// SQLite: the audit trail of what people did by hand (release, discard, undo, run now, resend).
import type { AuditEntry, AuditStore } from '../types.js';
import type { SqliteConnection } from './connection.js';

const nowIso = (): string => new Date().toISOString();
type Row = Record<string, unknown>;

export class SqliteAudit implements AuditStore {
  constructor(private readonly c: SqliteConnection) {}

  record(e: Omit<AuditEntry, 'id' | 'at'>): Promise<number> {
    return this.c.write(() =>
      Number(
        this.c
          .stmt('INSERT INTO audit (at, actor, action, tenant, target, result, detail) VALUES (?, ?, ?, ?, ?, ?, ?)')
          .run(nowIso(), e.actor, e.action, e.tenant, e.target, e.result, e.detail).lastInsertRowid,
      ),
    );
  }

  recent(opts: { tenant?: string; limit: number }): Promise<AuditEntry[]> {
    return this.c.read(() =>
      ((opts.tenant === undefined
        ? this.c.stmt('SELECT * FROM audit ORDER BY id DESC LIMIT ?').all(opts.limit)
        : this.c.stmt('SELECT * FROM audit WHERE tenant = ? ORDER BY id DESC LIMIT ?').all(opts.tenant, opts.limit)) as Row[]
      ).map((r) => ({
        id: Number(r.id),
        at: String(r.at),
        actor: String(r.actor),
        action: String(r.action),
        tenant: (r.tenant as string | null) ?? null,
        target: (r.target as string | null) ?? null,
        result: String(r.result),
        detail: (r.detail as string | null) ?? null,
      })),
    );
  }
}
