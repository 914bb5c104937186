/**
 * Real SFTP servers for end-to-end tests: OpenSSH's sshd on loopback where it is installed (as
 * in CI), and the embedded pure-JS server everywhere. Tests create and inspect the files a
 * tenant would see by working directly in `root` with node:fs.
 *
 *   for (const kind of availableSftpServerKinds()) { const server = await startTestSftpServer(kind); … }
 *
 * Env: PROVISIONER_TEST_SFTP=embedded|openssh runs only that kind; KEEP_TEST_ARTIFACTS=1 keeps the
 * temporary directories (sshd_config, keys, root) after stop() for a look.
 *
 * OpenSSH logs in as root by default, which reads and writes everything. With
 * `{ unprivileged: true }` it logs in as a dedicated system user instead (UNPRIVILEGED_USER,
 * created if missing), so a file the district made unreadable (chmod 000) really is unreadable;
 * the chroot stays root-owned, and the tests hand the folders they make to `owner` (World does).
 * `{ umask: '077' }` plays a server whose new files are private unless the client says otherwise.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import fs from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { generateEd25519KeyPair, startEmbeddedSftpServer } from '../../src/sftp/embedded-server.js';

export type SftpServerKind = 'openssh' | 'embedded';

export interface TestSftpServer {
  kind: SftpServerKind;
  host: '127.0.0.1';
  port: number;
  username: string;
  /** Set when the server accepts a password (embedded). */
  password?: string;
  /** An unencrypted OpenSSH private key file the server accepts (both kinds). */
  privateKeyPath?: string;
  /** The host key's fingerprint as OpenSSH prints it (`SHA256:…`), for pinning. */
  hostKeyFingerprint: string;
  /** Local directory that is `/` for the SFTP user. */
  root: string;
  /** Set when the SFTP user is not root: folders and files the tests make must belong to it. */
  owner?: { name: string; uid: number; gid: number };
  /** Embedded only: SSH connections accepted since the start and open now; ending every client's. */
  connections?: () => { accepted: number; open: number };
  disconnectAll?: () => void;
  /** Stops the server and removes its directories (unless KEEP_TEST_ARTIFACTS=1). Idempotent. */
  stop(): Promise<void>;
}

const SSHD = '/usr/sbin/sshd';
const HOST = '127.0.0.1';
/** ChrootDirectory and each of its parents must be root-owned and not group/world-writable, which rules out /tmp. */
const OPENSSH_ROOTS = '/srv/provisioner-test';
const STARTUP_TIMEOUT_MS = 10_000;
const run = promisify(execFile);

export function availableSftpServerKinds(): SftpServerKind[] {
  const wanted = process.env.PROVISIONER_TEST_SFTP;
  if (wanted === 'embedded') return ['embedded'];
  if (wanted === 'openssh') return ['openssh']; // asked for explicitly: fail loudly if it cannot run
  if (wanted) throw new Error(`PROVISIONER_TEST_SFTP must be "embedded" or "openssh", not "${wanted}"`);
  // sshd with a ChrootDirectory and a root login needs root, as in CI.
  const canRunSshd = existsSync(SSHD) && process.getuid?.() === 0;
  return canRunSshd ? ['openssh', 'embedded'] : ['embedded'];
}

export interface TestSftpServerOptions {
  /** OpenSSH only: log in as an unprivileged system user instead of root. */
  unprivileged?: boolean;
  /** OpenSSH only: the umask of the SFTP server (`internal-sftp -u`), e.g. '077' for a server that makes private files. */
  umask?: string;
  /**
   * OpenSSH only: MaxStartups and MaxSessions (default 100 each). Raise them for many
   * connections at once (the benchmark's polling row opens one per tenant, dozens at a time).
   */
  maxStartups?: number;
  maxSessions?: number;
  /** OpenSSH only: SFTP requests the server refuses (`internal-sftp -P`), e.g. 'setstat,fsetstat' for a server that will not chmod. */
  deniedRequests?: string;
}

/** The system user the unprivileged OpenSSH server logs in as. */
export const UNPRIVILEGED_USER = 'provisioner-sftp';

export async function startTestSftpServer(kind: SftpServerKind, opts: TestSftpServerOptions = {}): Promise<TestSftpServer> {
  if ((opts.unprivileged || opts.umask || opts.deniedRequests) && kind !== 'openssh') throw new Error('only the OpenSSH test server can log in as an unprivileged user, take a umask or refuse requests');
  return kind === 'openssh' ? startOpenSsh(opts) : startEmbedded();
}

// ---------------------------------------------------------------------------------------------
// embedded
// ---------------------------------------------------------------------------------------------

async function startEmbedded(): Promise<TestSftpServer> {
  const root = await fs.mkdtemp(path.join(os.tmpdir(), 'provisioner-sftp-root-'));
  // Keys live outside root, so the SFTP user cannot see them.
  const keysDir = await fs.mkdtemp(path.join(os.tmpdir(), 'provisioner-sftp-keys-'));
  const clientKey = generateEd25519KeyPair();
  const privateKeyPath = path.join(keysDir, 'id_ed25519');
  await fs.writeFile(privateKeyPath, clientKey.private, { mode: 0o600 });

  const username = 'tenant';
  const password = randomBytes(12).toString('base64url');
  const server = await startEmbeddedSftpServer({ root, username, password, authorizedKey: clientKey.public, host: HOST }).catch(
    async (err: unknown) => {
      await removeDirs(root, keysDir);
      throw err;
    },
  );

  return {
    kind: 'embedded',
    host: HOST,
    port: server.port,
    username,
    password,
    privateKeyPath,
    hostKeyFingerprint: server.hostKeyFingerprint,
    root,
    connections: server.connections,
    disconnectAll: server.disconnectAll,
    stop: once(async () => {
      await server.stop();
      await removeDirs(root, keysDir);
    }),
  };
}

// ---------------------------------------------------------------------------------------------
// openssh
// ---------------------------------------------------------------------------------------------

async function startOpenSsh(options: TestSftpServerOptions): Promise<TestSftpServer> {
  const { unprivileged = false, umask, deniedRequests } = options;
  if (umask !== undefined && !/^[0-7]{3,4}$/.test(umask)) throw new Error(`umask must be octal digits, not "${umask}"`);
  if (deniedRequests !== undefined && !/^[a-z@.]+(,[a-z@.]+)*$/.test(deniedRequests)) throw new Error(`deniedRequests must be request names separated by commas, not "${deniedRequests}"`);
  // sshd's privilege-separation directory; a fresh container may not have it.
  await fs.mkdir('/run/sshd', { recursive: true, mode: 0o755 });
  const owner = unprivileged ? await ensureUnprivilegedUser() : undefined;
  const root = await makeChrootDir();
  const confDir = await fs.mkdtemp(path.join(os.tmpdir(), 'provisioner-sshd-'));
  try {
    const hostKeyPath = path.join(confDir, 'ssh_host_ed25519_key');
    const privateKeyPath = path.join(confDir, 'id_ed25519');
    await generateKey(hostKeyPath);
    await generateKey(privateKeyPath);
    const authorizedKeysPath = path.join(confDir, 'authorized_keys');
    await fs.copyFile(`${privateKeyPath}.pub`, authorizedKeysPath);
    if (owner) {
      // sshd reads authorized_keys as the user logging in; the keys themselves stay root's (0600).
      await fs.chmod(confDir, 0o711);
      await fs.chmod(authorizedKeysPath, 0o644);
    }
    const hostKeyFingerprint = await fingerprintOf(`${hostKeyPath}.pub`);

    const { sshd, port } = await spawnSshd({ confDir, root, hostKeyPath, authorizedKeysPath, umask, deniedRequests, maxStartups: options.maxStartups ?? 100, maxSessions: options.maxSessions ?? 100 });
    return {
      kind: 'openssh',
      host: HOST,
      port,
      username: owner?.name ?? 'root',
      privateKeyPath,
      hostKeyFingerprint,
      root,
      owner,
      stop: once(async () => {
        await stopSshd(sshd);
        await removeDirs(root, confDir);
      }),
    };
  } catch (err) {
    await removeDirs(root, confDir);
    throw err;
  }
}

/**
 * The unprivileged SFTP user, created on first use: a system account without a home or a login
 * shell, whose password field is `*` (no password, but not "locked": sshd without PAM refuses a
 * locked account even for key logins). Test files run side by side, so a concurrent useradd
 * (which locks /etc/passwd) is waited for.
 */
async function ensureUnprivilegedUser(): Promise<{ name: string; uid: number; gid: number }> {
  const name = UNPRIVILEGED_USER;
  const lookup = async () => {
    try {
      const [uid, gid] = await Promise.all([run('id', ['-u', name]), run('id', ['-g', name])]);
      return { name, uid: Number(uid.stdout.trim()), gid: Number(gid.stdout.trim()) };
    } catch {
      return undefined;
    }
  };
  for (let attempt = 1; ; attempt++) {
    const found = await lookup();
    if (found) return found;
    try {
      await run('useradd', ['--system', '--no-create-home', '--home-dir', '/', '--shell', '/usr/sbin/nologin', '--password', '*', name]);
    } catch (err) {
      if (attempt >= 20) throw new Error(`cannot create the system user ${name}: ${(err as Error).message}`);
      await new Promise((r) => setTimeout(r, 250));
    }
  }
}

async function makeChrootDir(): Promise<string> {
  await fs.mkdir(OPENSSH_ROOTS, { recursive: true });
  await fs.chmod(OPENSSH_ROOTS, 0o755); // in case a umask or an earlier run left it writable
  const root = path.join(OPENSSH_ROOTS, randomBytes(6).toString('hex'));
  await fs.mkdir(root);
  await fs.chmod(root, 0o755);
  return root;
}

async function generateKey(file: string): Promise<void> {
  await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'provisioner-test', '-f', file]);
}

async function fingerprintOf(publicKeyFile: string): Promise<string> {
  // "256 SHA256:abc… comment (ED25519)"
  const { stdout } = await run('ssh-keygen', ['-l', '-E', 'sha256', '-f', publicKeyFile]);
  const fingerprint = stdout.split(/\s+/).find((field) => field.startsWith('SHA256:'));
  if (!fingerprint) throw new Error(`no SHA256 fingerprint in ssh-keygen output: ${stdout}`);
  return fingerprint;
}

function sshdConfig(o: SshdSpawnOptions & { port: number; pidFile: string }): string {
  const sftp = ['internal-sftp', ...(o.umask ? ['-u', o.umask] : []), ...(o.deniedRequests ? ['-P', o.deniedRequests] : [])].join(' ');
  return [
    `ListenAddress ${HOST}`,
    `Port ${o.port}`,
    `HostKey ${o.hostKeyPath}`,
    `PidFile ${o.pidFile}`,
    'UsePAM no',
    'UseDNS no',
    'PermitRootLogin prohibit-password',
    'PubkeyAuthentication yes',
    'PasswordAuthentication no',
    'KbdInteractiveAuthentication no',
    `AuthorizedKeysFile ${o.authorizedKeysPath}`,
    'StrictModes no',
    'AllowTcpForwarding no',
    'X11Forwarding no',
    'PermitTTY no',
    // Tests may open many connections at once; the default (10:30:100) drops some at random.
    `MaxStartups ${o.maxStartups}`,
    `MaxSessions ${o.maxSessions}`,
    'LogLevel INFO',
    `Subsystem sftp ${sftp}`,
    `ForceCommand ${sftp}`,
    `ChrootDirectory ${o.root}`,
    '',
  ].join('\n');
}

interface SshdSpawnOptions {
  confDir: string;
  root: string;
  hostKeyPath: string;
  authorizedKeysPath: string;
  umask?: string;
  deniedRequests?: string;
  maxStartups: number;
  maxSessions: number;
}

/** Starts sshd on a free port; retries with another port if the one picked was taken meanwhile. */
async function spawnSshd(o: SshdSpawnOptions): Promise<{ sshd: ChildProcess; port: number }> {
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    const configPath = path.join(o.confDir, 'sshd_config');
    const pidFile = path.join(o.confDir, 'sshd.pid');
    await fs.writeFile(configPath, sshdConfig({ ...o, port, pidFile }));
    const sshd = spawn(SSHD, ['-D', '-e', '-f', configPath], { stdio: ['ignore', 'ignore', 'pipe'] });
    const stderr = collectOutput(sshd);
    try {
      await waitForSshBanner(sshd, port);
      return { sshd, port };
    } catch (err) {
      await stopSshd(sshd);
      if (attempt < 3 && /Address already in use/.test(stderr())) continue;
      throw new Error(`sshd did not start on ${HOST}:${port}: ${(err as Error).message}\nsshd stderr:\n${stderr()}`);
    }
  }
}

/** A port that was free a moment ago (bind port 0, read it, close). */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = net.createServer();
    probe.once('error', reject);
    probe.listen(0, HOST, () => {
      const { port } = probe.address() as net.AddressInfo;
      probe.close(() => resolve(port));
    });
  });
}

/** Keeps the last 64 KiB of the child's stderr, for error messages. */
function collectOutput(child: ChildProcess): () => string {
  let output = '';
  child.stderr?.setEncoding('utf8');
  child.stderr?.on('data', (chunk: string) => {
    output = (output + chunk).slice(-65536);
  });
  return () => output;
}

/** Resolves once something on `port` greets like an SSH server; rejects if sshd exits first. */
async function waitForSshBanner(sshd: ChildProcess, port: number): Promise<void> {
  const deadline = Date.now() + STARTUP_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (sshd.exitCode !== null || sshd.signalCode !== null) {
      throw new Error(`sshd exited (${sshd.exitCode ?? sshd.signalCode})`);
    }
    if (await readsSshBanner(port)) return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`no SSH banner within ${STARTUP_TIMEOUT_MS} ms`);
}

function readsSshBanner(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, HOST);
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(1000, () => done(false));
    socket.once('error', () => done(false));
    socket.once('data', (data) => done(data.toString('latin1').startsWith('SSH-')));
  });
}

/** SIGTERM sshd (and the per-connection sshd processes it forked), SIGKILL after a second. */
async function stopSshd(sshd: ChildProcess): Promise<void> {
  if (sshd.pid === undefined || sshd.exitCode !== null || sshd.signalCode !== null) return;
  // Connection handlers call setsid(), so they are not in sshd's process group, and they outlive
  // the listener; find them by parent pid instead.
  const children = await childPids(sshd.pid);
  const exited = new Promise<void>((resolve) => sshd.once('exit', () => resolve()));
  sshd.kill('SIGTERM');
  for (const pid of children) signal(pid, 'SIGTERM');
  const timer = setTimeout(() => {
    sshd.kill('SIGKILL');
    for (const pid of children) signal(pid, 'SIGKILL');
  }, 1000);
  await exited;
  clearTimeout(timer);
}

/** Pids whose parent is `parent` (Linux /proc; empty elsewhere). */
async function childPids(parent: number): Promise<number[]> {
  let entries: string[];
  try {
    entries = await fs.readdir('/proc');
  } catch {
    return [];
  }
  const children: number[] = [];
  for (const entry of entries) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      // /proc/<pid>/stat: "pid (comm) state ppid …"; comm may contain spaces, so split after ')'.
      const stat = await fs.readFile(`/proc/${entry}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === parent) children.push(Number(entry));
    } catch {
      // the process exited meanwhile
    }
  }
  return children;
}

function signal(pid: number, name: NodeJS.Signals): void {
  try {
    process.kill(pid, name);
  } catch {
    // already gone
  }
}

// ---------------------------------------------------------------------------------------------
// shared
// ---------------------------------------------------------------------------------------------

async function removeDirs(...dirs: string[]): Promise<void> {
  if (process.env.KEEP_TEST_ARTIFACTS === '1') return;
  await Promise.all(dirs.map((dir) => fs.rm(dir, { recursive: true, force: true })));
}

/** Wraps `fn` so that every call after the first returns the first call's promise. */
function once(fn: () => Promise<void>): () => Promise<void> {
  let result: Promise<void> | undefined;
  return () => (result ??= fn());
}
