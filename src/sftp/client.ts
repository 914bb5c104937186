// Our one door to a tenant's SFTP account, over ssh2-sftp-client. It pins the host key (ssh2
// accepts any key unless told otherwise), puts a timeout on every call (calls can hang on a
// dead link), and is used by one run at a time: connect, work, close, on every path (or, in the
// daemon, kept for the tenant's next run: kept-sessions.ts).
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import ssh2, { type SFTPWrapper } from 'ssh2';
import SftpClient from 'ssh2-sftp-client';
import type { SftpSettings } from '../config.js';
import { HostKeyMismatchError, RemoteError, errorMessage } from '../errors.js';
import { printable } from '../text.js';
import { readInOrder, type ReadProgress } from './ordered-read.js';

export interface RemoteEntry {
  name: string;
  /** `link`: a symbolic link (never followed: it could point anywhere on the host). */
  type: 'file' | 'dir' | 'link' | 'other';
  size: number;
  /** Modification time in ms since the epoch. */
  mtime: number;
}

/** The fingerprint OpenSSH prints for a host key: SHA256 of the key blob, base64 without padding. */
export function fingerprintOf(keyBlob: Buffer): string {
  return 'SHA256:' + crypto.createHash('sha256').update(keyBlob).digest('base64').replace(/=+$/, '');
}

/**
 * Why we will not take a file of this name, or null: a backslash (a path separator to the
 * district's Windows tools, and to some servers) or a control character (a line break or an
 * escape sequence in every report and terminal it would reach).
 */
export function nameProblem(name: string): string | null {
  if (name.includes('\\')) return 'has a backslash (\\) in its name';
  if (/[\u0000-\u001f\u007f-\u009f]/.test(name)) return 'has a control character in its name';
  return null;
}

/** A remote name we work with: one path segment, no dot entries, nothing nameProblem() refuses. */
export function isSafeName(name: string): boolean {
  return name.length > 0 && name !== '.' && name !== '..' && !name.includes('/') && nameProblem(name) === null;
}

/** Where the session says what it worked around (a server that refuses to set permissions). */
export interface SessionLog {
  warn(obj: object, msg: string): void;
  debug(obj: object, msg: string): void;
}

export class SftpSession {
  private closed = false;
  /** The server refused a chmod once: said at warn once per session, then at debug. */
  private chmodRefused = false;

  private constructor(
    private readonly client: SftpClient,
    private readonly settings: SftpSettings,
    readonly label: string,
    private readonly log?: SessionLog,
  ) {}

  /**
   * Connects and logs in. The presented host key must match `settings.hostKey` (to only look
   * the key up, without logging in, use readHostKey).
   */
  static async connect(
    settings: SftpSettings,
    label: string,
    opts: { log?: SessionLog } = {},
  ): Promise<SftpSession & { hostKeySeen: string }> {
    if (!settings.hostKey) {
      throw new RemoteError(
        `${label} has no pinned host key (sftp.hostKey), so nothing is sent to its server. Run \`provisioner doctor --tenant ${label}\`, ` +
          `confirm the fingerprint it prints with the host's operator, and set tenants.${label}.sftp.hostKey to it.`,
      );
    }
    // The library's default listeners print "Global end listener: ..." with console.log, onto
    // our stdout (and into `--json` output). Every failure reaches us through the promises.
    // The connection closing by itself (the server ended an idle one) marks the session closed.
    let lost = (): void => {};
    const client = new SftpClient(label, { error: () => {}, end: () => {}, close: () => lost() });
    let seen = '';
    const timeoutMs = settings.timeoutSeconds * 1000;
    try {
      await withTimeout(
        () => client.connect({
          host: settings.host,
          port: settings.port,
          username: settings.username,
          password: settings.password,
          privateKey: settings.privateKey ? fs.readFileSync(settings.privateKey) : undefined,
          passphrase: settings.passphrase,
          readyTimeout: timeoutMs,
          keepaliveInterval: 10_000,
          keepaliveCountMax: 3,
          hostVerifier: (key: Buffer) => {
            seen = fingerprintOf(key);
            return seen === settings.hostKey;
          },
        }),
        timeoutMs,
        `connecting to ${settings.host}:${settings.port}`,
        () => destroy(client),
      );
    } catch (err) {
      destroy(client);
      if (seen && seen !== settings.hostKey) {
        throw new HostKeyMismatchError(label, settings.hostKey ?? '(none)', seen);
      }
      throw new RemoteError(`cannot connect to ${settings.username}@${settings.host}:${settings.port}: ${cleanMessage(err)}`, {
        cause: err,
      });
    }
    // ssh2 leaves Nagle's algorithm on. A download keeps many small read requests and window
    // adjustments in flight; with Nagle each waits for the server's delayed ACK (40 ms on Linux),
    // and a loopback download of 71 MB took 1.3-2.4 s instead of 0.5-0.8 (355 MB: 10-11 s
    // instead of 2.5), every second run or so.
    (client as unknown as { client?: { setNoDelay?: (on: boolean) => void } }).client?.setNoDelay?.(true);
    const session = new SftpSession(client, settings, label, opts.log) as SftpSession & { hostKeySeen: string };
    session.hostKeySeen = seen;
    lost = () => {
      session.closed = true;
    };
    return session;
  }

  /**
   * Only reads the server's host key, to show the fingerprint to pin (`doctor` on a tenant
   * without `hostKey`). The handshake is refused at the key, before authentication starts, and
   * no password or key is even handed to the SSH client: nothing secret can reach the server.
   */
  static readHostKey(settings: Pick<SftpSettings, 'host' | 'port' | 'username' | 'timeoutSeconds'>): Promise<string> {
    return new Promise((resolve, reject) => {
      const client = new ssh2.Client();
      let seen = '';
      let settled = false;
      const finish = (err?: unknown) => {
        if (settled) return;
        settled = true;
        client.destroy();
        if (seen) resolve(seen);
        else reject(new RemoteError(`cannot connect to ${settings.host}:${settings.port}: ${err ? cleanMessage(err) : 'the connection closed before the server showed its key'}`, { cause: err }));
      };
      client.on('error', finish);
      client.on('close', () => finish());
      client.on('ready', () => finish(new Error('the server let us in without authentication'))); // cannot happen: the key is refused first
      client.connect({
        host: settings.host,
        port: settings.port,
        username: settings.username,
        readyTimeout: settings.timeoutSeconds * 1000,
        hostVerifier: (key: Buffer) => {
          seen = fingerprintOf(key);
          return false;
        },
      });
    });
  }

  /**
   * The entries of a folder, never `.`/`..` nor a name with `/` or NUL (no server sends those).
   * Names we will not take (nameProblem) are listed, so that the district can be told.
   */
  async list(dir: string): Promise<RemoteEntry[]> {
    const items = await this.call(`list ${dir}`, () => this.client.list(dir));
    return items
      .filter((i) => i.name.length > 0 && i.name !== '.' && i.name !== '..' && !i.name.includes('/') && !i.name.includes('\0'))
      .map((i) => ({
        name: i.name,
        type: i.type === 'd' ? 'dir' : i.type === '-' ? 'file' : i.type === 'l' ? 'link' : 'other',
        size: i.size,
        mtime: i.modifyTime,
      }));
  }

  /** 'file', 'dir', or false when the path does not exist. */
  async exists(p: string): Promise<'file' | 'dir' | false> {
    const r = await this.call(`exists ${p}`, () => this.client.exists(p));
    return r === 'd' ? 'dir' : r === false ? false : 'file';
  }

  async stat(p: string): Promise<{ size: number; mtime: number; isDirectory: boolean }> {
    const s = await this.call(`stat ${p}`, () => this.client.stat(p));
    return { size: s.size, mtime: s.modifyTime, isDirectory: s.isDirectory };
  }

  /**
   * Downloads with many reads in flight, writing the local file front to back: a reader may
   * follow it while it arrives (`progress`). The local file exists as soon as this is called.
   */
  async download(remote: string, local: string, progress?: ReadProgress): Promise<void> {
    fs.mkdirSync(path.dirname(local), { recursive: true });
    const fd = fs.openSync(local, 'w', 0o600);
    try {
      // Every chunk that arrives proves the link alive: the timeout is for silence.
      await this.call(`download ${remote}`, (alive) => readInOrder(this.sftp(), remote, fd, alive, progress));
    } finally {
      fs.closeSync(fd);
    }
  }

  /** ssh2's SFTP channel under the client, for the reads ssh2-sftp-client has no call for. */
  private sftp(): SFTPWrapper {
    const sftp = (this.client as unknown as { sftp?: SFTPWrapper }).sftp;
    if (!sftp) throw Object.assign(new Error('no sftp connection'), { code: 'ERR_NOT_CONNECTED' });
    return sftp;
  }

  async readText(remote: string): Promise<string> {
    const data = await this.call(`read ${remote}`, () => this.client.get(remote));
    return Buffer.isBuffer(data) ? data.toString('utf8') : String(data);
  }

  /**
   * Writes a file readable by the district (0644), whatever the server's umask would give. The
   * chmod is best effort: some servers refuse SETSTAT, and the file is written all the same.
   */
  async write(remote: string, content: string | Buffer): Promise<void> {
    const buf = Buffer.isBuffer(content) ? content : Buffer.from(content, 'utf8');
    await this.call(`write ${remote}`, () => this.client.put(buf, remote, { writeStreamOptions: { mode: 0o644 } }));
    try {
      await this.call(`chmod ${remote}`, () => this.client.chmod(remote, 0o644));
    } catch (err) {
      if (err instanceof RemoteError && err.connectionLost) throw err;
      const about = { file: printable(remote), err: errorMessage(err) };
      const why = cleanMessage(err instanceof Error && err.cause ? err.cause : err);
      const msg = `${this.label}: the SFTP server refused to set the permissions of ${printable(remote)} (${why}); it keeps the server's default`;
      if (this.chmodRefused) this.log?.debug(about, msg);
      else this.log?.warn(about, `${msg}. Files written on this server may not be readable by the district if its default is private.`);
      this.chmodRefused = true;
    }
  }

  async append(remote: string, content: string): Promise<void> {
    const exists = await this.exists(remote);
    if (!exists) return this.write(remote, content);
    await this.call(`append ${remote}`, () => this.client.append(Buffer.from(content, 'utf8'), remote));
  }

  async mkdirp(dir: string): Promise<void> {
    if (await this.exists(dir)) return;
    await this.call(`mkdir ${dir}`, () => this.client.mkdir(dir, true));
  }

  /** Plain SFTP rename: fails when the target exists, which is what makes claims atomic. */
  async rename(from: string, to: string): Promise<void> {
    await this.call(`rename ${from} -> ${to}`, () => this.client.rename(from, to));
  }

  async remove(p: string): Promise<void> {
    await this.call(`delete ${p}`, () => this.client.delete(p));
  }

  /** Removes an empty folder (a server refuses one that is not empty). */
  async rmdir(p: string): Promise<void> {
    await this.call(`rmdir ${p}`, () => this.client.rmdir(p, false));
  }

  /** False once the connection is closed or known lost. */
  get isOpen(): boolean {
    return !this.closed;
  }

  /**
   * A kept connection still answers: one cheap request (REALPATH of the login folder) within
   * `waitSeconds`. False closes it; never throws.
   */
  async answers(waitSeconds = 5): Promise<boolean> {
    if (this.closed) return false;
    try {
      await this.call('checking the connection', () => this.client.realPath('.'), Math.min(waitSeconds, this.settings.timeoutSeconds));
      return true;
    } catch {
      await this.close();
      return false;
    }
  }

  /** Idempotent; never throws. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    try {
      await withTimeout(() => this.client.end(), 5000, 'closing', () => destroy(this.client));
    } catch {
      destroy(this.client);
    }
  }

  private async call<T>(what: string, fn: (alive: () => void) => Promise<T>, timeoutSeconds = this.settings.timeoutSeconds): Promise<T> {
    if (this.closed) throw new RemoteError(`${this.label}: ${what}: the connection is already closed`);
    try {
      return await withTimeout(fn, timeoutSeconds * 1000, what, () => {
        this.closed = true;
        destroy(this.client);
      });
    } catch (err) {
      if (err instanceof RemoteError) throw err;
      const lost = isConnectionLoss(err);
      if (lost) this.closed = true;
      throw new RemoteError(`${this.label}: ${printable(what)} failed: ${cleanMessage(err)}`, { cause: err, connectionLost: lost });
    }
  }
}

/**
 * The connection is gone (reset, closed, not connected), as opposed to the server refusing one
 * request (SFTP status codes: no such file, permission denied, failure).
 */
function isConnectionLoss(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code === 'number') return false;
  if (code === 'EACCES' || code === 'ENOENT' || code === 'ENOTDIR' || code === 'ERR_BAD_PATH') return false;
  if (code === 'ECONNRESET' || code === 'ERR_NOT_CONNECTED' || code === 'EPIPE' || code === 'ETIMEDOUT') return true;
  return /unexpected (end|close)|no sftp connection|not connected|socket|connection (lost|closed)/i.test(errorMessage(err));
}

/** Is this error the remote saying "no such file"? */
export function isNoSuchFile(err: unknown): boolean {
  const cause = err instanceof Error && err.cause ? err.cause : err;
  const code = (cause as { code?: unknown } | undefined)?.code;
  return code === 2 || code === 'ENOENT' || /no such file/i.test(errorMessage(err));
}

/**
 * Rejects (and runs onTimeout, which closes the connection) when `ms` pass without an answer.
 * `start` gets an `alive` callback: long transfers call it on progress, so the limit applies
 * to silence, not to the size of the file.
 */
function withTimeout<T>(start: (alive: () => void) => Promise<T>, ms: number, what: string, onTimeout: () => void): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  let fail: (err: Error) => void = () => {};
  const timeout = new Promise<never>((_, reject) => (fail = reject));
  const arm = (): void => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      onTimeout();
      fail(new RemoteError(`${printable(what)}: no answer within ${Math.round(ms / 1000)} s; the connection was closed`, { connectionLost: true }));
    }, ms);
  };
  arm();
  return Promise.race([start(arm), timeout]).finally(() => clearTimeout(timer));
}

function destroy(client: SftpClient): void {
  try {
    (client as unknown as { client?: { destroy?: () => void } }).client?.destroy?.();
  } catch {
    /* already gone */
  }
}

function cleanMessage(err: unknown): string {
  return errorMessage(err).replace(/^(connect|list|fastGet|get|put|rename|mkdir|rmdir|delete|stat|exists|append): /, '');
}
