/**
 * A small, pure-JS SFTP server (ssh2 in server mode) that serves one local directory to one user.
 *
 * It is what the demo and the tests run against when OpenSSH's sshd is not available, so it
 * behaves like OpenSSH's `internal-sftp` inside a `ChrootDirectory` wherever the worker could
 * notice a difference: the directory is `/`, `..` never climbs above it, plain RENAME refuses to
 * overwrite while `posix-rename@openssh.com` overwrites, and file-system errors map to the same
 * SFTP status codes.
 *
 * Confinement: every path is normalised lexically (`/../x` is `/x`, as in POSIX and in a chroot),
 * then resolved on disk; a path whose real location (following symlinks) is outside the root is
 * refused with PERMISSION_DENIED. Unlike a chroot, a symlink's absolute target is not reread
 * inside the root: it is simply refused when it points outside. SYMLINK, READLINK and hard-link
 * requests are not implemented, so clients cannot make links; only someone with local access to
 * the root can. (The check-then-use is not atomic, so a root that must stay sealed should hold no
 * symlink pointing out of it: a client could rename one into a path being resolved.)
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { constants as fsConstants, type Dir, type Stats } from 'node:fs';
import fs from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { getSystemErrorMap } from 'node:util';
import ssh2 from 'ssh2';
import type { Attributes, AuthContext, Connection, InputAttributes, ParsedKey, SFTPWrapper } from 'ssh2';

// ssh2 is CommonJS; under NodeNext ESM only its default export (module.exports) is reliable.
const { Server, utils } = ssh2;
const { OPEN_MODE, STATUS_CODE } = utils.sftp;

export interface EmbeddedSftpServerOptions {
  /** Local directory served as `/` of every SFTP session. Must exist. */
  root: string;
  username: string;
  /** Accept password authentication with this password. */
  password?: string;
  /** Accept public-key authentication with this key (an OpenSSH public key line). */
  authorizedKey?: string;
  /** Default 127.0.0.1. */
  host?: string;
  /** Default 0: a free port, see `EmbeddedSftpServer.port`. */
  port?: number;
  /** Host private key (PEM or OpenSSH format). Default: a fresh ed25519 key. */
  hostKey?: string | Buffer;
}

export interface EmbeddedSftpServer {
  host: string;
  port: number;
  /** Exactly as OpenSSH prints it: `SHA256:` + unpadded base64 of the SHA-256 of the key blob. */
  hostKeyFingerprint: string;
  /** The served directory, as given in the options. */
  root: string;
  /** Stops listening and disconnects every client. Safe to call more than once. */
  stop(): Promise<void>;
}

/**
 * OpenSSH's sftp-server caps a READ reply a little under its 256 KiB packet limit; clients
 * (ssh2's included) refuse larger packets, and a short read is always allowed.
 */
const MAX_READ_LENGTH = 256 * 1024 - 1024;
/** Directory entries per READDIR reply; keeps each NAME packet far below the packet limit. */
const READDIR_BATCH = 128;
/** How long stop() lets clients take the disconnect before their sockets are destroyed. */
const STOP_GRACE_MS = 1000;
/** Extensions announced in the VERSION reply; each is implemented in `SftpSession.extended`. */
const EXTENSIONS: Record<string, string> = { 'posix-rename@openssh.com': '1' };

export async function startEmbeddedSftpServer(opts: EmbeddedSftpServerOptions): Promise<EmbeddedSftpServer> {
  if (opts.password === undefined && opts.authorizedKey === undefined) {
    throw new Error('embedded SFTP server: give a password, an authorizedKey, or both');
  }
  const jail = await Jail.open(opts.root);
  const hostKey = opts.hostKey ?? generateEd25519KeyPair().private;
  const hostKeyFingerprint = sha256Fingerprint(parseSingleKey(hostKey, 'hostKey').getPublicSSH());
  const authenticate = makeAuthenticator(opts);

  const connections = new Set<Connection>();
  const sshServer = new Server({ hostKeys: [hostKey] }, (client) => {
    connections.add(client);
    client.on('close', () => connections.delete(client));
    serveClient(client, authenticate, jail);
  });

  // We own the TCP listener (and hand sockets to ssh2) so that stop() can destroy sockets of
  // clients that do not hang up; ssh2's own listener offers no way to do that.
  const sockets = new Set<net.Socket>();
  const listener = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    sshServer.injectSocket(socket);
  });
  const host = opts.host ?? '127.0.0.1';
  await listen(listener, opts.port ?? 0, host);
  const port = (listener.address() as net.AddressInfo).port;

  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopping ??= new Promise<void>((resolve) => {
      listener.close(() => resolve());
      for (const client of connections) client.end();
      setTimeout(() => {
        for (const socket of sockets) socket.destroy();
      }, STOP_GRACE_MS).unref();
    });
    return stopping;
  };

  return { host, port, hostKeyFingerprint, root: opts.root, stop };
}

/**
 * A fresh, unencrypted ed25519 key pair in OpenSSH format (`public` is an authorized_keys line).
 *
 * Use this rather than ssh2's generateKeyPairSync('ed25519') directly: that one strips leading zero
 * bytes from the public key, so about one key in 256 comes out malformed and ssh2 itself then
 * refuses it ("Malformed OpenSSH private key"). Such a pair is simply generated again.
 */
export function generateEd25519KeyPair(): { private: string; public: string } {
  for (let attempt = 0; attempt < 16; attempt++) {
    const pair = utils.generateKeyPairSync('ed25519');
    if (isWellFormedKeyPair(pair)) return pair;
  }
  throw new Error('ssh2 generated no well-formed ed25519 key pair in 16 attempts');
}

function isWellFormedKeyPair(pair: { private: string; public: string }): boolean {
  try {
    const privateKey = parseSingleKey(pair.private, 'private key');
    const publicKey = parseSingleKey(pair.public, 'public key');
    return privateKey.getPublicSSH().equals(publicKey.getPublicSSH());
  } catch {
    return false;
  }
}

/** `SHA256:…` exactly as `ssh-keygen -l` prints it for a public key blob. */
function sha256Fingerprint(publicKeyBlob: Buffer): string {
  return 'SHA256:' + createHash('sha256').update(publicKeyBlob).digest('base64').replace(/=+$/, '');
}

function listen(server: net.Server, port: number, host: string): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
}

// ---------------------------------------------------------------------------------------------
// Connections and authentication
// ---------------------------------------------------------------------------------------------

type Authenticator = (ctx: AuthContext) => void;

function serveClient(client: Connection, authenticate: Authenticator, jail: Jail): void {
  // A client that resets its connection is routine, not a reason to crash the process; ssh2
  // would throw an unhandled 'error' event without this listener.
  client.on('error', () => {});
  client.on('authentication', authenticate);
  client.on('ready', () => {
    client.on('session', (acceptSession) => {
      const session = acceptSession();
      // Only the SFTP subsystem has a listener: ssh2 refuses shell, exec, forwarding etc.
      session.on('sftp', (acceptSftp) => {
        const sftp = acceptSftp();
        advertiseExtensions(sftp, EXTENSIONS);
        new SftpSession(sftp, jail).listen();
      });
    });
  });
}

function makeAuthenticator(opts: EmbeddedSftpServerOptions): Authenticator {
  const username = Buffer.from(opts.username);
  const password = opts.password === undefined ? undefined : Buffer.from(opts.password);
  const key = opts.authorizedKey === undefined ? undefined : parseSingleKey(opts.authorizedKey, 'authorizedKey');
  const keyBlob = key?.getPublicSSH();
  const methods: ('password' | 'publickey')[] = [];
  if (password) methods.push('password');
  if (key) methods.push('publickey');

  return (ctx) => {
    const userMatches = constantTimeEqual(Buffer.from(ctx.username), username);
    if (ctx.method === 'password' && password && userMatches && constantTimeEqual(Buffer.from(ctx.password), password)) {
      return ctx.accept();
    }
    if (ctx.method === 'publickey' && key && keyBlob && userMatches && constantTimeEqual(ctx.key.data, keyBlob)) {
      // Without a signature the client only asks whether this key would do; ssh2 answers PK_OK.
      if (!ctx.signature || !ctx.blob) return ctx.accept();
      // verify() returns true, false, or an Error: only `true` proves possession of the key.
      if (key.verify(ctx.blob, ctx.signature, ctx.hashAlgo) === true) return ctx.accept();
    }
    ctx.reject(methods);
  };
}

/** Compares secrets without leaking, through timing, where they first differ. */
function constantTimeEqual(given: Buffer, expected: Buffer): boolean {
  // timingSafeEqual needs equal lengths; compare against itself so the time does not tell the length.
  if (given.length !== expected.length) {
    timingSafeEqual(given, given);
    return false;
  }
  return timingSafeEqual(given, expected);
}

function parseSingleKey(data: string | Buffer, what: string): ParsedKey {
  const parsed: ParsedKey | ParsedKey[] | Error = utils.parseKey(data);
  // parseKey returns an array for OpenSSH-format private keys (the format may hold several).
  const key = Array.isArray(parsed) ? parsed[0] : parsed;
  if (!key || key instanceof Error) {
    throw new Error(`embedded SFTP server: cannot parse ${what}: ${key instanceof Error ? key.message : 'no key found'}`);
  }
  return key;
}

// ---------------------------------------------------------------------------------------------
// Announcing SFTP extensions (works around an ssh2 limitation)
// ---------------------------------------------------------------------------------------------

/** The VERSION packet ssh2's server always sends: length 5, type VERSION (2), version 3. */
const PLAIN_VERSION_PACKET = Buffer.from([0, 0, 0, 5, 2, 0, 0, 0, 3]);

/** The parts of ssh2's SFTP object that `advertiseExtensions` relies on. */
interface SftpInternals {
  _protocol?: SshProtocol;
  outgoing?: { id: number; window: number };
}
interface SshProtocol {
  channelData?: (channelId: number, data: Buffer | string) => void;
}
interface PendingVersion {
  packet: Buffer;
  outgoing: { window: number };
}

/** Per SSH connection: remote channel id → the VERSION packet to send instead of the plain one. */
const pendingVersions = new WeakMap<SshProtocol, Map<number, PendingVersion>>();

/**
 * ssh2's server answers INIT with a fixed VERSION packet that announces no extensions, and has no
 * option to change it. Clients only use extensions a server announces (ssh2's client refuses
 * `posixRename()` outright), so the worker would behave differently here than against OpenSSH.
 * We therefore swap that one packet, on its way out of this channel, for one that lists
 * `extensions`. If ssh2's internals ever change shape this does nothing: the server still works,
 * it just announces no extensions.
 */
function advertiseExtensions(sftp: SFTPWrapper, extensions: Record<string, string>): void {
  const { _protocol: protocol, outgoing } = sftp as unknown as SftpInternals;
  if (!protocol || typeof protocol.channelData !== 'function' || typeof outgoing?.id !== 'number') return;

  const pending = pendingVersionsOf(protocol);
  const channelId = outgoing.id;
  pending.set(channelId, { packet: encodeVersionPacket(extensions), outgoing });
  sftp.once('close', () => {
    if (pending.get(channelId)?.outgoing === outgoing) pending.delete(channelId);
  });
}

function pendingVersionsOf(protocol: SshProtocol): Map<number, PendingVersion> {
  let pending = pendingVersions.get(protocol);
  if (!pending) {
    pending = new Map();
    pendingVersions.set(protocol, pending);
    interceptVersionPackets(protocol, pending);
  }
  return pending;
}

/** Wraps the connection's channelData() once; every SFTP channel on it registers in `pending`. */
function interceptVersionPackets(protocol: SshProtocol, pending: Map<number, PendingVersion>): void {
  const send = protocol.channelData!;
  protocol.channelData = function (this: unknown, channelId: number, data: Buffer | string) {
    const version = pending.get(channelId);
    if (version && Buffer.isBuffer(data) && data.equals(PLAIN_VERSION_PACKET)) {
      pending.delete(channelId);
      // ssh2 has already charged the plain packet to the channel's flow-control window; charge
      // the extra bytes too (the window is always this large at the start of a channel).
      const extra = version.packet.length - data.length;
      if (version.outgoing.window >= extra) {
        version.outgoing.window -= extra;
        return send.call(this, channelId, version.packet);
      }
    }
    return send.call(this, channelId, data);
  };
}

function encodeVersionPacket(extensions: Record<string, string>): Buffer {
  const body: Buffer[] = [Buffer.from([2, 0, 0, 0, 3])]; // type VERSION, version 3
  for (const [name, data] of Object.entries(extensions)) body.push(sshString(name), sshString(data));
  const payload = Buffer.concat(body);
  const length = Buffer.alloc(4);
  length.writeUInt32BE(payload.length);
  return Buffer.concat([length, payload]);
}

function sshString(value: string): Buffer {
  const bytes = Buffer.from(value, 'utf8');
  const length = Buffer.alloc(4);
  length.writeUInt32BE(bytes.length);
  return Buffer.concat([length, bytes]);
}

// ---------------------------------------------------------------------------------------------
// Paths: confining every request to the root
// ---------------------------------------------------------------------------------------------

/** An error that already knows which SFTP status it becomes. */
class SftpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

function permissionDenied(): SftpError {
  return new SftpError(STATUS_CODE.PERMISSION_DENIED, 'Permission denied');
}

/** Maps SFTP paths onto local paths inside one directory and refuses any that lead outside it. */
class Jail {
  private constructor(readonly root: string) {}

  static async open(root: string): Promise<Jail> {
    // Compare against the real path: the root itself may sit behind a symlink (e.g. /tmp on macOS).
    const real = await fs.realpath(root);
    if (!(await fs.stat(real)).isDirectory()) throw new Error(`embedded SFTP server: root ${root} is not a directory`);
    return new Jail(real);
  }

  /** Absolute, normalised SFTP path: relative paths start at `/`, and `..` stops at `/`. */
  static normalize(sftpPath: string): string {
    if (sftpPath.includes('\0')) throw new SftpError(STATUS_CODE.BAD_MESSAGE, 'Invalid path');
    return path.posix.resolve('/', sftpPath);
  }

  /**
   * The local path that `sftpPath` leads to, following symlinks (for open, stat, opendir,
   * setstat, realpath). The target need not exist yet (a file about to be created), but its
   * parent directory must.
   */
  async resolve(sftpPath: string): Promise<string> {
    const local = path.join(this.root, Jail.normalize(sftpPath));
    try {
      return this.inside(await fs.realpath(local));
    } catch (err) {
      if (errorCode(err) !== 'ENOENT') throw err;
    }
    // A dangling symlink would make a create land wherever it points: refuse it.
    if (await isSymlink(local)) throw permissionDenied();
    return this.resolveEntry(sftpPath, { allowRoot: true });
  }

  /**
   * The local path of the directory entry `sftpPath` itself, not following a final symlink (for
   * lstat, remove, mkdir, rmdir, rename). Only lstat may name `/`: nobody removes or renames it.
   */
  async resolveEntry(sftpPath: string, { allowRoot = false } = {}): Promise<string> {
    const virtual = Jail.normalize(sftpPath);
    if (virtual === '/') {
      if (allowRoot) return this.root;
      throw permissionDenied();
    }
    const parent = this.inside(await fs.realpath(path.join(this.root, path.posix.dirname(virtual))));
    return path.join(parent, path.posix.basename(virtual));
  }

  /** The SFTP path of a local path inside the root. */
  toSftpPath(local: string): string {
    return '/' + path.relative(this.root, local).split(path.sep).join('/');
  }

  private inside(realPath: string): string {
    const relative = path.relative(this.root, realPath);
    if (relative === '..' || relative.startsWith('..' + path.sep) || path.isAbsolute(relative)) {
      throw permissionDenied();
    }
    return realPath;
  }
}

async function isSymlink(local: string): Promise<boolean> {
  try {
    return (await fs.lstat(local)).isSymbolicLink();
  } catch {
    return false;
  }
}

function errorCode(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException | undefined)?.code;
}

/** Status and message for a failed request, mapped the way OpenSSH's sftp-server maps errno. */
function statusFor(err: unknown): { code: number; message: string } {
  if (err instanceof SftpError) return { code: err.status, message: err.message };
  switch (errorCode(err)) {
    case 'ENOENT':
    case 'ENOTDIR':
    case 'ELOOP':
      return { code: STATUS_CODE.NO_SUCH_FILE, message: 'No such file' };
    case 'EACCES':
    case 'EPERM':
      return { code: STATUS_CODE.PERMISSION_DENIED, message: 'Permission denied' };
    default: {
      // Say what went wrong (e.g. "directory not empty") without the local path in err.message.
      const errno = (err as NodeJS.ErrnoException | undefined)?.errno;
      const description = errno === undefined ? undefined : getSystemErrorMap().get(errno)?.[1];
      return { code: STATUS_CODE.FAILURE, message: description ?? 'Failure' };
    }
  }
}

// ---------------------------------------------------------------------------------------------
// One SFTP session: the request handlers
// ---------------------------------------------------------------------------------------------

type OpenHandle =
  | { kind: 'file'; file: FileHandle; local: string }
  | { kind: 'dir'; dir: Dir; local: string; dotsPending: boolean };

class SftpSession {
  private readonly handles = new Map<number, OpenHandle>();
  private nextHandle = 0;
  private requestsInFlight = 0;
  private clientSentEof = false;
  private closed = false;

  constructor(
    private readonly sftp: SFTPWrapper,
    private readonly jail: Jail,
  ) {}

  listen(): void {
    const { sftp } = this;
    const serve = (id: number, handler: () => Promise<void>) => this.reply(id, handler);
    sftp.on('OPEN', (id, filename, flags, attrs) => serve(id, () => this.open(id, filename, flags, attrs)));
    sftp.on('READ', (id, handle, offset, length) => serve(id, () => this.read(id, handle, offset, length)));
    sftp.on('WRITE', (id, handle, offset, data) => serve(id, () => this.write(id, handle, offset, data)));
    sftp.on('CLOSE', (id, handle) => serve(id, () => this.close(id, handle)));
    sftp.on('FSTAT', (id, handle) => serve(id, () => this.fstat(id, handle)));
    sftp.on('FSETSTAT', (id, handle, attrs) => serve(id, () => this.fsetstat(id, handle, attrs)));
    sftp.on('STAT', (id, p) => serve(id, () => this.stat(id, p)));
    sftp.on('LSTAT', (id, p) => serve(id, () => this.lstat(id, p)));
    sftp.on('SETSTAT', (id, p, attrs) => serve(id, () => this.setstat(id, p, attrs)));
    sftp.on('OPENDIR', (id, p) => serve(id, () => this.opendir(id, p)));
    sftp.on('READDIR', (id, handle) => serve(id, () => this.readdir(id, handle)));
    sftp.on('MKDIR', (id, p, attrs) => serve(id, () => this.mkdir(id, p, attrs)));
    sftp.on('RMDIR', (id, p) => serve(id, () => this.rmdir(id, p)));
    sftp.on('REMOVE', (id, p) => serve(id, () => this.remove(id, p)));
    sftp.on('RENAME', (id, from, to) => serve(id, () => this.rename(id, from, to)));
    sftp.on('REALPATH', (id, p) => serve(id, () => this.realpath(id, p)));
    sftp.on('EXTENDED', (id, name, data) => serve(id, () => this.extended(id, name, data)));
    // READLINK and SYMLINK stay unhandled: ssh2 answers OP_UNSUPPORTED (see the file comment).

    // ssh2 reports a malformed packet as 'error' and closes the channel itself; without a
    // listener the error would be thrown and take the process down.
    sftp.on('error', () => {});
    // A client that is done sends EOF and waits for the server to close the channel (OpenSSH's
    // sftp does; its sftp-server exits on EOF). ssh2 leaves that to us.
    sftp.on('end', () => {
      this.clientSentEof = true;
      this.closeChannelWhenIdle();
    });
    sftp.once('close', () => {
      this.closed = true;
      void this.closeAllHandles();
    });
  }

  /** Runs one request; whatever it throws becomes the matching SFTP status reply. */
  private reply(id: number, handler: () => Promise<void>): void {
    this.requestsInFlight++;
    handler()
      .catch((err: unknown) => {
        const { code, message } = statusFor(err);
        this.sftp.status(id, code, message);
      })
      .finally(() => {
        this.requestsInFlight--;
        this.closeChannelWhenIdle();
      });
  }

  /** After the client's EOF, close the channel once every reply has been sent. */
  private closeChannelWhenIdle(): void {
    if (this.clientSentEof && this.requestsInFlight === 0) this.sftp.end();
  }

  private ok(id: number): void {
    this.sftp.status(id, STATUS_CODE.OK);
  }

  // --- files -----------------------------------------------------------------------------------

  private async open(id: number, filename: string, pflags: number, attrs: Partial<InputAttributes>): Promise<void> {
    const local = await this.jail.resolve(filename);
    const mode = typeof attrs.mode === 'number' ? attrs.mode & 0o7777 : 0o666;
    const file = await fs.open(local, toOpenFlags(pflags), mode);
    this.sftp.handle(id, this.addHandle({ kind: 'file', file, local }));
  }

  private async read(id: number, handle: Buffer, offset: number, length: number): Promise<void> {
    const { file } = this.fileHandle(handle);
    const buffer = Buffer.allocUnsafe(Math.min(length, MAX_READ_LENGTH));
    const { bytesRead } = await file.read(buffer, 0, buffer.length, offset);
    if (bytesRead === 0) return this.sftp.status(id, STATUS_CODE.EOF);
    this.sftp.data(id, buffer.subarray(0, bytesRead));
  }

  private async write(id: number, handle: Buffer, offset: number, data: Buffer): Promise<void> {
    const { file } = this.fileHandle(handle);
    // With APPEND the file was opened O_APPEND, so (as in OpenSSH) the offset is ignored.
    for (let written = 0; written < data.length; ) {
      const { bytesWritten } = await file.write(data, written, data.length - written, offset + written);
      written += bytesWritten;
    }
    this.ok(id);
  }

  private async close(id: number, handle: Buffer): Promise<void> {
    const open = this.lookupHandle(handle);
    this.handles.delete(handleNumber(handle));
    await closeHandle(open);
    this.ok(id);
  }

  private async fstat(id: number, handle: Buffer): Promise<void> {
    const open = this.lookupHandle(handle);
    const stats = open.kind === 'file' ? await open.file.stat() : await fs.stat(open.local);
    this.sftp.attrs(id, toAttributes(stats));
  }

  private async fsetstat(id: number, handle: Buffer, attrs: Partial<InputAttributes>): Promise<void> {
    const open = this.lookupHandle(handle);
    await applyAttributes(open.kind === 'file' ? open.file : pathTarget(open.local), attrs);
    this.ok(id);
  }

  // --- paths -----------------------------------------------------------------------------------

  private async stat(id: number, sftpPath: string): Promise<void> {
    this.sftp.attrs(id, toAttributes(await fs.stat(await this.jail.resolve(sftpPath))));
  }

  private async lstat(id: number, sftpPath: string): Promise<void> {
    const local = await this.jail.resolveEntry(sftpPath, { allowRoot: true });
    this.sftp.attrs(id, toAttributes(await fs.lstat(local)));
  }

  private async setstat(id: number, sftpPath: string, attrs: Partial<InputAttributes>): Promise<void> {
    await applyAttributes(pathTarget(await this.jail.resolve(sftpPath)), attrs);
    this.ok(id);
  }

  private async realpath(id: number, sftpPath: string): Promise<void> {
    const resolved = this.jail.toSftpPath(await this.jail.resolve(sftpPath));
    // OpenSSH sends the path as longname too, and empty attributes.
    this.sftp.name(id, [{ filename: resolved, longname: resolved, attrs: {} as Attributes }]);
  }

  private async mkdir(id: number, sftpPath: string, attrs: Partial<InputAttributes>): Promise<void> {
    const mode = typeof attrs.mode === 'number' ? attrs.mode & 0o7777 : 0o777;
    await fs.mkdir(await this.jail.resolveEntry(sftpPath), { mode });
    this.ok(id);
  }

  private async rmdir(id: number, sftpPath: string): Promise<void> {
    await fs.rmdir(await this.jail.resolveEntry(sftpPath));
    this.ok(id);
  }

  private async remove(id: number, sftpPath: string): Promise<void> {
    await fs.unlink(await this.jail.resolveEntry(sftpPath));
    this.ok(id);
  }

  private async rename(id: number, from: string, to: string): Promise<void> {
    await renameWithoutReplacing(await this.jail.resolveEntry(from), await this.jail.resolveEntry(to));
    this.ok(id);
  }

  private async extended(id: number, name: string, data: Buffer | undefined): Promise<void> {
    if (name !== 'posix-rename@openssh.com') return this.sftp.status(id, STATUS_CODE.OP_UNSUPPORTED);
    const [from, to] = readSshStrings(data, 2);
    // Unlike RENAME this replaces an existing target, atomically (rename(2)).
    await fs.rename(await this.jail.resolveEntry(from), await this.jail.resolveEntry(to));
    this.ok(id);
  }

  // --- directories -----------------------------------------------------------------------------

  private async opendir(id: number, sftpPath: string): Promise<void> {
    const local = await this.jail.resolve(sftpPath);
    const dir = await fs.opendir(local, { bufferSize: READDIR_BATCH });
    this.sftp.handle(id, this.addHandle({ kind: 'dir', dir, local, dotsPending: true }));
  }

  private async readdir(id: number, handle: Buffer): Promise<void> {
    const open = this.lookupHandle(handle);
    if (open.kind !== 'dir') throw new SftpError(STATUS_CODE.FAILURE, 'Not a directory handle');
    // Entries can vanish between listing and lstat; keep reading until one survives or the end.
    for (;;) {
      const names = await nextDirectoryNames(open);
      if (names.length === 0) return this.sftp.status(id, STATUS_CODE.EOF);
      const entries = await Promise.all(names.map((name) => this.describeEntry(open.local, name)));
      const present = entries.filter((entry) => entry !== undefined);
      if (present.length > 0) return this.sftp.name(id, present);
    }
  }

  private async describeEntry(dirLocal: string, name: string) {
    // `..` of the root is the root itself, as in a chroot: never describe what lies outside.
    const local = name === '..' && dirLocal === this.jail.root ? dirLocal : path.join(dirLocal, name);
    try {
      const stats = await fs.lstat(local);
      return { filename: name, longname: longname(name, stats), attrs: toAttributes(stats) };
    } catch (err) {
      if (errorCode(err) === 'ENOENT') return undefined;
      throw err;
    }
  }

  // --- handles ---------------------------------------------------------------------------------

  private addHandle(open: OpenHandle): Buffer {
    if (this.closed) {
      // The client left while this file was being opened: nobody will ever CLOSE it.
      void closeHandle(open).catch(() => {});
      throw new SftpError(STATUS_CODE.CONNECTION_LOST, 'Session closed');
    }
    const number = this.nextHandle++ >>> 0;
    this.handles.set(number, open);
    const handle = Buffer.alloc(4);
    handle.writeUInt32BE(number);
    return handle;
  }

  private lookupHandle(handle: Buffer): OpenHandle {
    const open = this.handles.get(handleNumber(handle));
    if (!open) throw new SftpError(STATUS_CODE.FAILURE, 'Invalid handle');
    return open;
  }

  private fileHandle(handle: Buffer): Extract<OpenHandle, { kind: 'file' }> {
    const open = this.lookupHandle(handle);
    if (open.kind !== 'file') throw new SftpError(STATUS_CODE.FAILURE, 'Not a file handle');
    return open;
  }

  /** A client that disconnects without CLOSE must not leak file descriptors. */
  private async closeAllHandles(): Promise<void> {
    const open = [...this.handles.values()];
    this.handles.clear();
    await Promise.allSettled(open.map(closeHandle));
  }
}

function handleNumber(handle: Buffer): number {
  return handle.length === 4 ? handle.readUInt32BE(0) : -1;
}

async function closeHandle(open: OpenHandle): Promise<void> {
  if (open.kind === 'file') await open.file.close();
  else await open.dir.close();
}

async function nextDirectoryNames(open: Extract<OpenHandle, { kind: 'dir' }>): Promise<string[]> {
  // OpenSSH lists `.` and `..` too; ssh2's client filters them out.
  const names: string[] = [];
  if (open.dotsPending) {
    names.push('.', '..');
    open.dotsPending = false;
  }
  while (names.length < READDIR_BATCH) {
    const entry = await open.dir.read();
    if (!entry) break;
    names.push(entry.name);
  }
  return names;
}

// ---------------------------------------------------------------------------------------------
// File-system helpers
// ---------------------------------------------------------------------------------------------

/** SFTP open flags → open(2) flags, as OpenSSH's sftp-server maps them. */
function toOpenFlags(pflags: number): number {
  const { O_RDONLY, O_WRONLY, O_RDWR, O_APPEND, O_CREAT, O_TRUNC, O_EXCL } = fsConstants;
  const read = (pflags & OPEN_MODE.READ) !== 0;
  const write = (pflags & OPEN_MODE.WRITE) !== 0;
  let flags = read && write ? O_RDWR : write ? O_WRONLY : O_RDONLY;
  if (pflags & OPEN_MODE.APPEND) flags |= O_APPEND;
  if (pflags & OPEN_MODE.CREAT) flags |= O_CREAT;
  if (pflags & OPEN_MODE.TRUNC) flags |= O_TRUNC;
  if (pflags & OPEN_MODE.EXCL) flags |= O_EXCL;
  return flags;
}

/** Link errors that mean "this file system cannot hard-link here", not "the target exists". */
const LINK_UNSUPPORTED = new Set(['EPERM', 'EOPNOTSUPP', 'ENOTSUP', 'ENOSYS', 'EXDEV', 'EMLINK']);

/**
 * Plain SFTP RENAME must fail when the target exists (the worker relies on it to claim uploads).
 * Like OpenSSH: a regular file is hard-linked to its new name and then unlinked, which fails
 * atomically on an existing target; anything else is checked first and then renamed.
 */
async function renameWithoutReplacing(from: string, to: string): Promise<void> {
  if ((await fs.lstat(from)).isFile()) {
    try {
      await fs.link(from, to);
    } catch (err) {
      if (!LINK_UNSUPPORTED.has(errorCode(err) ?? '')) throw err;
      return checkThenRename(from, to);
    }
    try {
      await fs.unlink(from);
    } catch (err) {
      await fs.unlink(to).catch(() => {}); // leave things as they were
      throw err;
    }
    return;
  }
  await checkThenRename(from, to);
}

async function checkThenRename(from: string, to: string): Promise<void> {
  const targetExists = await fs.lstat(to).then(
    () => true,
    () => false,
  );
  if (targetExists) throw new SftpError(STATUS_CODE.FAILURE, 'File exists');
  await fs.rename(from, to);
}

/** What SETSTAT/FSETSTAT change; a FileHandle already has exactly these methods. */
interface AttributeTarget {
  truncate(size: number): Promise<void>;
  chmod(mode: number): Promise<void>;
  utimes(atime: number, mtime: number): Promise<void>;
}

function pathTarget(local: string): AttributeTarget {
  return {
    truncate: (size) => fs.truncate(local, size),
    chmod: (mode) => fs.chmod(local, mode),
    utimes: (atime, mtime) => fs.utimes(local, atime, mtime),
  };
}

/**
 * Applies size, permissions and times, in OpenSSH's order. Ownership changes are accepted and
 * ignored: the embedded server has a single virtual user.
 */
async function applyAttributes(target: AttributeTarget, attrs: Partial<InputAttributes>): Promise<void> {
  if (typeof attrs.size === 'number') await target.truncate(attrs.size);
  if (typeof attrs.mode === 'number') await target.chmod(attrs.mode & 0o7777);
  if (typeof attrs.atime === 'number' && typeof attrs.mtime === 'number') await target.utimes(attrs.atime, attrs.mtime);
}

function toAttributes(stats: Stats): Attributes {
  return {
    mode: stats.mode,
    uid: stats.uid,
    gid: stats.gid,
    size: stats.size,
    atime: Math.floor(stats.atimeMs / 1000),
    mtime: Math.floor(stats.mtimeMs / 1000),
  };
}

/** Reads `count` SSH strings (uint32 length + UTF-8 bytes) from an extended request's data. */
function readSshStrings(data: Buffer | undefined, count: number): string[] {
  const strings: string[] = [];
  let offset = 0;
  for (let i = 0; i < count; i++) {
    if (!data || offset + 4 > data.length) throw new SftpError(STATUS_CODE.BAD_MESSAGE, 'Malformed request');
    const length = data.readUInt32BE(offset);
    offset += 4;
    if (offset + length > data.length) throw new SftpError(STATUS_CODE.BAD_MESSAGE, 'Malformed request');
    strings.push(data.toString('utf8', offset, offset + length));
    offset += length;
  }
  return strings;
}

// ---------------------------------------------------------------------------------------------
// `ls -l` style long names (clients such as ssh2-sftp-client read the type and rights from them)
// ---------------------------------------------------------------------------------------------

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
const SIX_MONTHS_MS = 182 * 24 * 60 * 60 * 1000;

/** Like OpenSSH (with numeric owners): `-rw-r--r--    1 0        0            1234 Jan  5 12:34 name`. */
function longname(name: string, stats: Stats): string {
  return [
    // OpenSSH's strmode() ends with a space (where ls marks ACLs), hence two spaces after the mode.
    modeString(stats.mode) + ' ',
    String(stats.nlink).padStart(3),
    String(stats.uid).padEnd(8),
    String(stats.gid).padEnd(8),
    String(stats.size).padStart(8),
    lsDate(stats.mtime),
    name,
  ].join(' ');
}

function modeString(mode: number): string {
  const { S_IFMT, S_IFDIR, S_IFLNK, S_IFIFO, S_IFSOCK, S_IFCHR, S_IFBLK } = fsConstants;
  const types: Record<number, string> = { [S_IFDIR]: 'd', [S_IFLNK]: 'l', [S_IFIFO]: 'p', [S_IFSOCK]: 's', [S_IFCHR]: 'c', [S_IFBLK]: 'b' };
  const type = types[mode & S_IFMT] ?? '-';
  const bits = [...'rwxrwxrwx'].map((letter, i) => (mode & (0o400 >> i) ? letter : '-'));
  if (mode & 0o4000) bits[2] = bits[2] === 'x' ? 's' : 'S';
  if (mode & 0o2000) bits[5] = bits[5] === 'x' ? 's' : 'S';
  if (mode & 0o1000) bits[8] = bits[8] === 'x' ? 't' : 'T';
  return type + bits.join('');
}

/** `%b %e %H:%M` for the last six months, else `%b %e  %Y`, as ls and OpenSSH print. */
function lsDate(date: Date): string {
  const age = Date.now() - date.getTime();
  const day = `${MONTHS[date.getMonth()]} ${String(date.getDate()).padStart(2)}`;
  if (age >= 0 && age < SIX_MONTHS_MS) {
    return `${day} ${String(date.getHours()).padStart(2, '0')}:${String(date.getMinutes()).padStart(2, '0')}`;
  }
  return `${day}  ${date.getFullYear()}`;
}
