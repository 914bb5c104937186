// PostgreSQL: the console's sessions (only a hash of each cookie is kept), by the server's clock.
import { iso } from '../rows.js';
import type { ConsoleSession, SessionStore } from '../types.js';
import type { PgConnection } from './connection.js';

export class PgSessions implements SessionStore {
  constructor(private readonly c: PgConnection) {}

  async create(s: { idHash: string; username: string; role: string; csrf: string; seconds: number }): Promise<void> {
    await this.c.query(`INSERT INTO console_sessions (id_hash, username, role, csrf, expires_at) VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5))`, [
      s.idHash, s.username, s.role, s.csrf, s.seconds,
    ]);
  }

  async get(idHash: string): Promise<ConsoleSession | null> {
    const r = await this.c.one('SELECT * FROM console_sessions WHERE id_hash = $1 AND expires_at > now()', [idHash]);
    return r ? { username: String(r.username), role: String(r.role), csrf: String(r.csrf), createdAt: iso(r.created_at), expiresAt: iso(r.expires_at) } : null;
  }

  async delete(idHash: string): Promise<void> {
    await this.c.query('DELETE FROM console_sessions WHERE id_hash = $1', [idHash]);
  }

  async prune(): Promise<number> {
    const r = await this.c.pool.query('DELETE FROM console_sessions WHERE expires_at <= now()');
    return r.rowCount ?? 0;
  }
}
