// SQLite: the console's sessions (only a hash of each cookie is kept).
import type { ConsoleSession, SessionStore } from '../types.js';
import type { SqliteConnection } from './connection.js';

type Row = Record<string, unknown>;

export class SqliteSessions implements SessionStore {
  constructor(private readonly c: SqliteConnection) {}

  create(s: { idHash: string; username: string; role: string; csrf: string; seconds: number }): Promise<void> {
    return this.c.write(() => {
      const now = new Date();
      this.c
        .stmt('INSERT INTO console_sessions (id_hash, username, role, csrf, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)')
        .run(s.idHash, s.username, s.role, s.csrf, now.toISOString(), new Date(now.getTime() + s.seconds * 1000).toISOString());
    });
  }

  get(idHash: string): Promise<ConsoleSession | null> {
    return this.c.read(() => {
      const r = this.c.stmt('SELECT * FROM console_sessions WHERE id_hash = ? AND expires_at > ?').get(idHash, new Date().toISOString()) as Row | undefined;
      return r ? { username: String(r.username), role: String(r.role), csrf: String(r.csrf), createdAt: String(r.created_at), expiresAt: String(r.expires_at) } : null;
    });
  }

  delete(idHash: string): Promise<void> {
    return this.c.write(() => {
      this.c.stmt('DELETE FROM console_sessions WHERE id_hash = ?').run(idHash);
    });
  }

  prune(): Promise<number> {
    return this.c.write(() => this.c.stmt('DELETE FROM console_sessions WHERE expires_at <= ?').run(new Date().toISOString()).changes);
  }
}
