// The PostgreSQL connection pool (node-postgres). A query, a transaction on one client, or a
// client held for a while (staging uses temporary tables, which live in one session). The
// password comes from the URL, else from PGPASSWORD, else from the password file (~/.pgpass, or
// PGPASSFILE) as with libpq: node-postgres 8 reads it, and warns once that it will stop doing
// so in version 9. BIGINT ids come back as numbers: they stay far below 2^53.
import pg from 'pg';

export type Client = pg.PoolClient;

const types = {
  getTypeParser(oid: number, format?: 'text' | 'binary') {
    if (oid === 20) return (v: string) => Number(v); // int8: ids and counts
    return pg.types.getTypeParser(oid, format);
  },
};

export class PgConnection {
  readonly pool: pg.Pool;
  private closed = false;

  constructor(readonly url: string, opts: { max?: number } = {}) {
    this.pool = new pg.Pool({
      connectionString: url,
      max: opts.max ?? 10,
      types: types as pg.CustomTypesConfig,
      connectionTimeoutMillis: 15_000,
      idleTimeoutMillis: 10_000,
      application_name: 'provisioner',
    });
    // A dropped idle connection must not crash the worker; the next query opens another.
    this.pool.on('error', () => {});
  }

  async query<T = Record<string, unknown>>(sql: string, params: unknown[] = []): Promise<T[]> {
    const r = await this.pool.query(sql, params);
    return r.rows as T[];
  }

  async one<T = Record<string, unknown>>(sql: string, params: unknown[] = []): Promise<T | null> {
    return (await this.query<T>(sql, params))[0] ?? null;
  }

  /** `fn` runs between BEGIN and COMMIT on one client (ROLLBACK when it throws). */
  async tx<T>(fn: (c: Client) => Promise<T>): Promise<T> {
    const client = await this.pool.connect();
    try {
      await client.query('BEGIN');
      const result = await fn(client);
      await client.query('COMMIT');
      return result;
    } catch (err) {
      await client.query('ROLLBACK').catch(() => {});
      throw err;
    } finally {
      client.release();
    }
  }

  /**
   * A connection of its own, outside the pool, that LISTENs on `channel` (a pooled client would
   * go back to the pool, and its LISTEN with it). `alive` turns false when the connection is lost.
   */
  async listen(channel: string, onNotify: () => void): Promise<{ readonly alive: boolean; close(): Promise<void> }> {
    const client = new pg.Client({ connectionString: this.url, application_name: 'provisioner', connectionTimeoutMillis: 15_000, keepAlive: true });
    let alive = true;
    let ended: Promise<void> | undefined;
    const end = () => (ended ??= client.end().catch(() => {}));
    client.on('error', () => {
      alive = false;
      void end();
    });
    client.on('end', () => (alive = false));
    client.on('notification', (m) => {
      if (m.channel === channel) onNotify();
    });
    try {
      await client.connect();
      await client.query(`LISTEN ${channel}`);
    } catch (err) {
      await end();
      throw err;
    }
    return {
      get alive() {
        return alive;
      },
      async close() {
        alive = false;
        await end();
      },
    };
  }

  /** A client of its own until released (temporary tables, COPY). */
  async hold(): Promise<Client> {
    return this.pool.connect();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.pool.end();
  }
}
