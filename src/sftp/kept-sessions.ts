// SFTP connections the daemon keeps open between a tenant's runs (`sftp.keepOpenSeconds`).
//
// A tenant polled every few minutes logs in every few minutes: a key exchange and an
// authentication each time, on our side and on the district's server. With keepOpenSeconds set,
// a run that ends with its connection healthy leaves it here, and the tenant's next run within
// that many seconds takes it instead of connecting. A kept connection is only ever used by one
// run (take() removes it), is checked with one cheap request before it is used (a server may
// have closed it meanwhile: then the run simply connects), is never handed to other settings than
// the ones it was opened with (host, user, credentials, pinned key: a digest of them is kept with
// it), and is closed when nobody took it in time or when the daemon stops.
import crypto from 'node:crypto';
import type { SftpSettings } from '../config.js';
import type { SftpSession } from './client.js';

interface Kept {
  session: SftpSession;
  settings: string;
  timer: NodeJS.Timeout;
}

/** The settings a connection was opened with, as one digest (no secret kept in the clear). */
function identity(settings: SftpSettings): string {
  const { host, port, username, password, privateKey, passphrase, hostKey } = settings;
  return crypto.createHash('sha256').update(JSON.stringify([host, port, username, password, privateKey, passphrase, hostKey])).digest('base64');
}

export class KeptSessions {
  private readonly kept = new Map<string, Kept>();
  private closed = false;

  /** Connections kept now. */
  get size(): number {
    return this.kept.size;
  }

  /**
   * The tenant's kept connection if it was opened with these settings and still answers;
   * otherwise null (and a kept one is closed). Either way nothing is kept for the tenant after.
   */
  async take(tenant: string, settings: SftpSettings): Promise<SftpSession | null> {
    const k = this.kept.get(tenant);
    if (!k) return null;
    this.kept.delete(tenant);
    clearTimeout(k.timer);
    if (k.settings !== identity(settings)) {
      await k.session.close();
      return null;
    }
    return (await k.session.answers()) ? k.session : null;
  }

  /** Keeps the tenant's open connection for `seconds`, then closes it; closes it at once if it cannot be kept. */
  async keep(tenant: string, settings: SftpSettings, session: SftpSession, seconds: number): Promise<void> {
    if (this.closed || seconds <= 0 || !session.isOpen) return session.close();
    // Normally none is kept here any more: the tenant's runs never overlap (its lease), and each
    // takes what was kept before it keeps its own.
    const previous = this.kept.get(tenant);
    if (previous) {
      clearTimeout(previous.timer);
      await previous.session.close();
    }
    // take() and close() clear the timer: when it fires, the connection is still the one kept.
    const timer = setTimeout(() => {
      this.kept.delete(tenant);
      void session.close();
    }, seconds * 1000);
    timer.unref(); // a kept connection never holds the process open
    this.kept.set(tenant, { session, settings: identity(settings), timer });
  }

  /** Closes every kept connection; later ones are closed at once. Idempotent. */
  async close(): Promise<void> {
    this.closed = true;
    const all = [...this.kept.values()];
    this.kept.clear();
    for (const k of all) clearTimeout(k.timer);
    await Promise.all(all.map((k) => k.session.close()));
  }
}
