/**
 * The SFTP servers the end-to-end tests run against behave like a real tenant account, seen
 * through ssh2-sftp-client (the client the worker uses).
 */
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import SftpClient from 'ssh2-sftp-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { availableSftpServerKinds, startTestSftpServer, type TestSftpServer } from './harness/sftp-server.js';

const SFTP_CLI = '/usr/bin/sftp';

/** The fingerprint OpenSSH prints for a host key blob, computed here independently of the servers. */
function fingerprint(hostKey: Buffer): string {
  return 'SHA256:' + createHash('sha256').update(hostKey).digest('base64').replace(/=+$/, '');
}

interface ConnectOptions {
  auth?: 'key' | 'password';
  password?: string;
  expectedFingerprint?: string;
}

async function connect(server: TestSftpServer, options: ConnectOptions = {}): Promise<SftpClient> {
  const auth = options.auth ?? (server.privateKeyPath ? 'key' : 'password');
  const presented: string[] = [];
  const client = new SftpClient();
  const connecting = client.connect({
    host: server.host,
    port: server.port,
    username: server.username,
    ...(auth === 'key'
      ? { privateKey: await fs.readFile(server.privateKeyPath!) }
      : { password: options.password ?? server.password }),
    hostVerifier: (key: Buffer) => {
      presented.push(fingerprint(key));
      return fingerprint(key) === (options.expectedFingerprint ?? server.hostKeyFingerprint);
    },
    readyTimeout: 10_000,
  });
  // end() on a failed client marks it ended, so its late 'end'/'close' events are not logged.
  await connecting.catch(async (err: unknown) => {
    await client.end();
    throw err;
  });
  expect(presented).toEqual([server.hostKeyFingerprint]);
  return client;
}

describe.each(availableSftpServerKinds())('%s SFTP server', (kind) => {
  let server: TestSftpServer;
  let sftp: SftpClient;
  let localDir: string;

  beforeAll(async () => {
    server = await startTestSftpServer(kind);
    sftp = await connect(server);
    localDir = await fs.mkdtemp(path.join(os.tmpdir(), 'provisioner-sftp-test-'));
  }, 30_000);

  afterAll(async () => {
    await sftp?.end();
    await server?.stop();
    if (localDir) await fs.rm(localDir, { recursive: true, force: true });
  });

  const local = (...parts: string[]) => path.join(server.root, ...parts);

  it('reports a host key fingerprint in OpenSSH format', () => {
    expect(server.hostKeyFingerprint).toMatch(/^SHA256:[A-Za-z0-9+/]{43}$/);
  });

  it('refuses a client that pins another host key', async () => {
    await expect(connect(server, { expectedFingerprint: 'SHA256:' + 'A'.repeat(43) })).rejects.toThrow();
  });

  it('starts sessions at / and serves files written locally into root', async () => {
    await fs.writeFile(local('hello.txt'), 'hello from the test\n');
    expect(await sftp.cwd()).toBe('/');
    expect((await sftp.get('/hello.txt')).toString()).toBe('hello from the test\n');
    expect((await sftp.get('hello.txt')).toString()).toBe('hello from the test\n');
  });

  it('creates directories recursively', async () => {
    await sftp.mkdir('/upload/20240101-000000/deep', true);
    expect((await fs.stat(local('upload/20240101-000000/deep'))).isDirectory()).toBe(true);
    expect(await sftp.exists('/upload/20240101-000000')).toBe('d');
    expect(await sftp.exists('/upload/missing')).toBe(false);
    await expect(sftp.mkdir('/no/parent/here')).rejects.toThrow();
  });

  it('puts a Buffer, lists it and stats it', async () => {
    await sftp.mkdir('/put', true);
    await sftp.put(Buffer.from('id,name\n1,Ada\n'), '/put/users.csv');
    expect(await fs.readFile(local('put/users.csv'), 'utf8')).toBe('id,name\n1,Ada\n');

    const listing = await sftp.list('/put');
    expect(listing.map((entry) => [entry.name, entry.type, entry.size])).toEqual([['users.csv', '-', 14]]);

    await fs.mkdir(local('put/sub'));
    const types = Object.fromEntries((await sftp.list('/put')).map((entry) => [entry.name, entry.type]));
    expect(types).toEqual({ 'users.csv': '-', sub: 'd' });

    const onDisk = await fs.stat(local('put/users.csv'));
    const stats = await sftp.stat('/put/users.csv');
    expect(stats.size).toBe(14);
    expect(stats.isFile).toBe(true);
    expect(stats.modifyTime).toBe(Math.floor(onDisk.mtimeMs / 1000) * 1000);
    expect((await sftp.stat('/put/sub')).isDirectory).toBe(true);
    await expect(sftp.stat('/put/nope.csv')).rejects.toThrow(/No such file/);
  });

  it('lists many entries (several READDIR replies)', async () => {
    await fs.mkdir(local('many'));
    const names = Array.from({ length: 300 }, (_, i) => `file-${String(i).padStart(3, '0')}.csv`);
    await Promise.all(names.map((name) => fs.writeFile(local('many', name), name)));
    const listed = (await sftp.list('/many')).map((entry) => entry.name).sort();
    expect(listed).toEqual(names);
  });

  it('fastGets a 3 MB file with 256 KiB chunks, byte for byte', async () => {
    const content = randomBytes(3 * 1024 * 1024 + 12_345);
    await fs.writeFile(local('big.bin'), content);
    const target = path.join(localDir, 'big.bin');
    await sftp.fastGet('/big.bin', target, { chunkSize: 262144 });
    expect((await fs.readFile(target)).equals(content)).toBe(true);
  });

  it('fastPuts a file, byte for byte', async () => {
    const content = randomBytes(1024 * 1024 + 7);
    const source = path.join(localDir, 'upload.bin');
    await fs.writeFile(source, content);
    await sftp.fastPut(source, '/uploaded.bin');
    expect((await fs.readFile(local('uploaded.bin'))).equals(content)).toBe(true);
  });

  it('renames, and refuses to rename onto an existing file', async () => {
    await fs.mkdir(local('ren'));
    await fs.writeFile(local('ren/a.csv'), 'a');
    await sftp.rename('/ren/a.csv', '/ren/b.csv');
    expect(existsSync(local('ren/a.csv'))).toBe(false);
    expect(await fs.readFile(local('ren/b.csv'), 'utf8')).toBe('a');

    await fs.writeFile(local('ren/c.csv'), 'c');
    await expect(sftp.rename('/ren/c.csv', '/ren/b.csv')).rejects.toThrow();
    expect(await fs.readFile(local('ren/b.csv'), 'utf8')).toBe('a');
    expect(await fs.readFile(local('ren/c.csv'), 'utf8')).toBe('c');
  });

  it('renames directories (the claim move), and refuses onto an existing one', async () => {
    await fs.mkdir(local('claim/20240101-000000'), { recursive: true });
    await fs.mkdir(local('claim/.processing'));
    await fs.writeFile(local('claim/20240101-000000/COMPLETE'), '');
    await sftp.rename('/claim/20240101-000000', '/claim/.processing/20240101-000000');
    expect(existsSync(local('claim/.processing/20240101-000000/COMPLETE'))).toBe(true);
    // A second claimer finds the epoch gone.
    await expect(sftp.rename('/claim/20240101-000000', '/claim/.processing/20240101-000000')).rejects.toThrow();

    await fs.mkdir(local('claim/other'));
    await expect(sftp.rename('/claim/other', '/claim/.processing')).rejects.toThrow();
  });

  it('posixRenames onto an existing file, replacing it', async () => {
    await fs.mkdir(local('posix'));
    await fs.writeFile(local('posix/new.sha1'), 'new');
    await fs.writeFile(local('posix/current.sha1'), 'old');
    await sftp.posixRename('/posix/new.sha1', '/posix/current.sha1');
    expect(existsSync(local('posix/new.sha1'))).toBe(false);
    expect(await fs.readFile(local('posix/current.sha1'), 'utf8')).toBe('new');
  });

  it('appends to a file', async () => {
    await sftp.put(Buffer.from('line 1\n'), '/log.txt');
    await sftp.append(Buffer.from('line 2\n'), '/log.txt');
    await sftp.append(Buffer.from('line 3\n'), '/log.txt');
    expect(await fs.readFile(local('log.txt'), 'utf8')).toBe('line 1\nline 2\nline 3\n');
  });

  it('deletes files', async () => {
    await fs.writeFile(local('gone.csv'), 'x');
    await sftp.delete('/gone.csv');
    expect(existsSync(local('gone.csv'))).toBe(false);
    await expect(sftp.delete('/gone.csv')).rejects.toThrow();
    await sftp.delete('/gone.csv', true); // notFoundOK
  });

  it('removes directory trees recursively', async () => {
    await fs.mkdir(local('tree/a/b'), { recursive: true });
    await fs.writeFile(local('tree/top.csv'), '1');
    await fs.writeFile(local('tree/a/mid.csv'), '2');
    await fs.writeFile(local('tree/a/b/leaf.csv'), '3');
    await expect(sftp.rmdir('/tree')).rejects.toThrow(); // not empty
    await sftp.rmdir('/tree', true);
    expect(existsSync(local('tree'))).toBe(false);
  });

  it('keeps `..` inside root', async () => {
    await fs.mkdir(local('etc'), { recursive: true });
    await fs.writeFile(local('etc/passwd'), 'inside root\n');
    const outside = await fs.readFile('/etc/passwd', 'utf8');
    const read = await sftp.get('/../../etc/passwd').then(
      (data) => (data as Buffer).toString(),
      () => undefined, // refusing is fine too
    );
    expect(read).not.toBe(outside);
    if (read !== undefined) expect(read).toBe('inside root\n');
    expect(await sftp.realPath('/../..')).toBe('/');
  });

  it('does not follow a symlink out of root', async () => {
    const secretDir = await fs.mkdtemp(path.join(os.tmpdir(), 'provisioner-outside-'));
    try {
      await fs.writeFile(path.join(secretDir, 'secret.txt'), 'outside root\n');
      await fs.symlink(path.join(secretDir, 'secret.txt'), local('escape.txt'));
      await fs.symlink(secretDir, local('escape-dir'));
      await expect(sftp.get('/escape.txt')).rejects.toThrow();
      await expect(sftp.list('/escape-dir')).rejects.toThrow();
      await expect(sftp.put(Buffer.from('x'), '/escape-dir/planted.txt')).rejects.toThrow();
      expect(await fs.readdir(secretDir)).toEqual(['secret.txt']);
    } finally {
      await fs.rm(local('escape.txt'), { force: true });
      await fs.rm(local('escape-dir'), { force: true });
      await fs.rm(secretDir, { recursive: true, force: true });
    }
  });

  it('serves several clients at once', async () => {
    await fs.mkdir(local('concurrent'));
    const clients = await Promise.all([1, 2, 3, 4].map(() => connect(server)));
    try {
      await Promise.all(
        clients.map((client, i) => client.put(Buffer.from(`client ${i}`), `/concurrent/${i}.txt`)),
      );
      const listings = await Promise.all(clients.map((client) => client.list('/concurrent')));
      for (const listing of listings) expect(listing).toHaveLength(4);
    } finally {
      await Promise.all(clients.map((client) => client.end()));
    }
  });

  // The benchmark fetches with OpenSSH's sftp, which (unlike ssh2-sftp-client) sends EOF when done
  // and waits for the server to close the channel.
  it.skipIf(!existsSync(SFTP_CLI))("serves OpenSSH's sftp command-line client", async () => {
    const content = randomBytes(700_000);
    await fs.writeFile(local('cli.bin'), content);
    const batchFile = path.join(localDir, 'batch');
    const target = path.join(localDir, 'cli.bin');
    await fs.writeFile(batchFile, `ls -l /\nget /cli.bin ${target}\n`);
    const { stdout } = await promisify(execFile)(
      SFTP_CLI,
      [
        '-b', batchFile,
        '-P', String(server.port),
        '-i', server.privateKeyPath!,
        '-o', 'BatchMode=yes',
        '-o', 'StrictHostKeyChecking=no',
        '-o', 'UserKnownHostsFile=/dev/null',
        '-o', 'LogLevel=ERROR',
        `${server.username}@${server.host}`,
      ],
      { timeout: 20_000 },
    );
    expect(stdout).toMatch(/cli\.bin$/m);
    expect((await fs.readFile(target)).equals(content)).toBe(true);
  }, 30_000);

  if (kind === 'embedded') {
    it('accepts the password and the key, and refuses a wrong password', async () => {
      const byPassword = await connect(server, { auth: 'password' });
      await byPassword.end();
      const byKey = await connect(server, { auth: 'key' });
      await byKey.end();
      await expect(connect(server, { auth: 'password', password: 'wrong' })).rejects.toThrow();
    });
  }
});
