/**
 * A small, pure-JS SFTP server (ssh2 in server mode) that serves one local directory to one user.
 * This file starts it and authenticates clients; embedded/ holds the rest: the SFTP session's
 * request handlers (session.ts, files.ts), the confinement to the root (jail.ts) and the
 * announcement of extensions (version-packet.ts).
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
import net from 'node:net';
import ssh2 from 'ssh2';
import type { AuthContext, Connection, ParsedKey } from 'ssh2';
import { Jail } from './embedded/jail.js';
import { SftpSession } from './embedded/session.js';
import { advertiseExtensions } from './embedded/version-packet.js';

// ssh2 is CommonJS; under NodeNext ESM only its default export (module.exports) is reliable.
const { Server, utils } = ssh2;

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
  /** SSH connections accepted since the start, and those open now (tests count logins with them). */
  connections(): { accepted: number; open: number };
  /** Ends every client's connection and keeps listening (as a server that drops idle clients would). */
  disconnectAll(): void;
  /** Stops listening and disconnects every client. Safe to call more than once. */
  stop(): Promise<void>;
}

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
  let accepted = 0;
  const sshServer = new Server({ hostKeys: [hostKey] }, (client) => {
    accepted++;
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

  const disconnectAll = (): void => {
    for (const client of connections) client.end();
  };
  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopping ??= new Promise<void>((resolve) => {
      listener.close(() => resolve());
      disconnectAll();
      setTimeout(() => {
        for (const socket of sockets) socket.destroy();
      }, STOP_GRACE_MS).unref();
    });
    return stopping;
  };
  const count = () => ({ accepted, open: connections.size });

  return { host, port, hostKeyFingerprint, root: opts.root, connections: count, disconnectAll, stop };
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
