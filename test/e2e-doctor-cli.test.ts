// `doctor` and the everyday commands as operations and tier-2 support use them, end to end:
// doctor checks only the folders a tenant uses, probes a missing folder inside itself and
// leaves nothing behind, reports an out-of-date database without upgrading it, and shows the
// fingerprint to pin when a tenant has none (which `run` then refuses without connecting);
// status, users, validate and trigger work without a tenant's SFTP secret in the shell.
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import Database from 'better-sqlite3';
import ssh2 from 'ssh2';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { generateEd25519KeyPair } from '../src/sftp/embedded-server.js';
import { spawnDaemon, waitFor, type DaemonProcess } from './harness/daemon.js';
import { availableSftpServerKinds } from './harness/sftp-server.js';
import { csv, World } from './harness/world.js';

const HEADER = 'user_id,first_name,last_name,email,role,school_id,active';
const NEVER_SOON = '0 0 1 1 *';

/** A TCP relay to the SFTP server that counts the connections made through it. */
async function countingRelay(port: number): Promise<{ port: number; connections(): number; stop(): Promise<void> }> {
  let n = 0;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    n++;
    const upstream = net.connect(port, '127.0.0.1');
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('error', () => {});
      s.on('close', () => sockets.delete(s));
    }
    client.pipe(upstream).pipe(client);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    connections: () => n,
    async stop() {
      for (const s of sockets) s.destroy();
      await new Promise((r) => server.close(r));
    },
  };
}

describe.each(availableSftpServerKinds())('doctor and the command line on %s sftp', (kind) => {
  let world: World;
  let daemon: DaemonProcess | undefined;
  beforeEach(async (ctx) => {
    // On OpenSSH the account is an unprivileged user, as in production: the root of its
    // chroot is not writable, so a probe there (or of a folder the run never uses) would fail.
    world = await World.start(kind, `doctor-cli-${kind}-${ctx.task.name}`, { unprivileged: kind === 'openssh' });
  });
  afterEach(async (ctx) => {
    await daemon?.stop('SIGKILL');
    daemon = undefined;
    await world.stop(ctx.task.result?.state === 'fail');
  });

  it('passes a loose: auto tenant whose tmp does not exist, probes missing folders inside themselves, and leaves nothing behind', async () => {
    world.addTenant('lincoln', {
      loose: 'auto',
      paths: { upload: '/lincoln/upload', bak: '/lincoln/archive/bak', tmp: '/tmp', log: '/lincoln/logs/import.log' },
    });
    const rootBefore = fs.readdirSync(world.server.root).sort();
    // Every name created at the root of the account while doctor runs.
    const createdAtRoot: string[] = [];
    const watcher = fs.watch(world.server.root, (_event, name) => name && createdAtRoot.push(String(name)));
    let r;
    try {
      r = await world.cli(['doctor', '--tenant', 'lincoln']);
    } finally {
      await new Promise((res) => setTimeout(res, 100));
      watcher.close();
    }
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toContain('All checks passed.');
    expect(r.stdout).not.toContain('tmp folder'); // only keep-in-place tenants write to tmp
    expect(r.stdout).toMatch(/✓ lincoln: upload folder\s+\/lincoln\/upload exists and is writable/);
    expect(r.stdout).toMatch(/✓ lincoln: bak folder\s+\/lincoln\/archive\/bak does not exist yet; it can be created, and written/);
    expect(r.stdout).toMatch(/✓ lincoln: log folder\s+\/lincoln\/logs does not exist yet; it can be created, and written/);
    expect(r.stdout).toMatch(/✓ lincoln: failed folder\s+\/lincoln\/upload\/failed does not exist yet/);
    expect(createdAtRoot.filter((n) => n.startsWith('.provisioner-doctor-'))).toEqual([]);
    // Nothing left behind: not the probes, not the folders made to probe inside.
    expect(fs.readdirSync(world.server.root).sort()).toEqual(rootBefore);
    expect(fs.readdirSync(world.remote('/lincoln'))).toEqual(['upload']);
    expect(fs.readdirSync(world.remote('/lincoln/upload'))).toEqual([]);
  });

  it('reports an out-of-date database schema and does not upgrade it', async () => {
    world.addTenant('lincoln');
    expect((await world.cli(['status'])).code).toBe(0); // creates the database at the current schema
    const copy = path.join(world.dir, 'data', 'older.db');
    fs.copyFileSync(world.dbPath, copy);
    const db = new Database(copy);
    const latest = db.prepare('SELECT max(version) AS v FROM schema_migrations').get() as { v: number };
    db.prepare('DELETE FROM schema_migrations WHERE version = ?').run(latest.v);
    db.close();
    world.set('database', './data/older.db');

    const r = await world.cli(['doctor']);
    expect(r.code, r.stdout + r.stderr).toBe(1);
    expect(r.stdout).toMatch(new RegExp(`✗ database\\s+.*older\\.db .* is at schema version ${latest.v - 1}; this provisioner needs ${latest.v}`));
    expect(r.stdout).toContain('1 check(s) failed.');
    const after = new Database(copy, { readonly: true });
    try {
      expect(after.prepare('SELECT count(*) AS n FROM schema_migrations WHERE version = ?').get(latest.v)).toEqual({ n: 0 });
    } finally {
      after.close();
    }
  });

  it('shows the fingerprint to pin for a tenant without hostKey; run refuses that tenant without connecting', async () => {
    const relay = await countingRelay(world.server.port);
    try {
      world.addTenant('lincoln');
      const t = world.tenantConfig('lincoln') as { sftp: Record<string, unknown> };
      t.sftp.port = relay.port;
      delete t.sftp.hostKey;
      world.writeConfig();
      world.putEpoch('lincoln', '20240101-020000', { 'users.csv': csv(HEADER, 'u1,Ada,Lovelace,ada@lincoln.example,,,') });

      const d = await world.cli(['doctor', '--tenant', 'lincoln']);
      expect(d.code, d.stdout + d.stderr).toBe(1);
      expect(d.stdout).toMatch(new RegExp(`✗ lincoln: host key\\s+tenants\\.lincoln\\.sftp\\.hostKey is not set; 127\\.0\\.0\\.1:${relay.port} presents ${escape(world.server.hostKeyFingerprint)}`));
      expect(d.stdout).toContain(`set tenants.lincoln.sftp.hostKey: "${world.server.hostKeyFingerprint}"`);
      expect(d.stdout).toMatch(/- lincoln: folders\s+not checked until the host key is pinned/);

      const seen = relay.connections();
      const r = await world.cli(['run', '--now', '--tenant', 'lincoln']);
      expect(r.code, r.stdout + r.stderr).toBe(3);
      expect(r.stdout).toContain('lincoln has no pinned host key (sftp.hostKey), so nothing is sent to its server. Run `provisioner doctor --tenant lincoln`');
      expect(relay.connections()).toBe(seen); // not even a connection: no credentials can have gone out
      expect(world.exists('/lincoln/upload/20240101-020000/COMPLETE')).toBe(true);
    } finally {
      await relay.stop();
    }
  });

  it('status, users, validate --kind and trigger work without the SFTP secret of a tenant in the shell', async () => {
    world.addTenant('lincoln', { schedule: NEVER_SOON });
    const t = world.tenantConfig('lincoln') as { sftp: Record<string, unknown> };
    // The secret comes from the environment: the daemon has it, a support shell does not.
    const secret: Record<string, string> = world.server.password
      ? { LINCOLN_SFTP_PASSWORD: world.server.password }
      : { LINCOLN_SFTP_KEY: world.server.privateKeyPath! };
    if (world.server.password) {
      t.sftp.password = '${LINCOLN_SFTP_PASSWORD}';
      delete t.sftp.privateKey;
    } else t.sftp.privateKey = '${LINCOLN_SFTP_KEY}';
    world.writeConfig();
    const shell = { ...process.env };
    for (const k of Object.keys(secret)) delete shell[k];

    const status = await world.cliWithEnv(['status'], shell);
    expect(status.code, status.stdout + status.stderr).toBe(0);
    const users = await world.cliWithEnv(['users', '--tenant', 'lincoln'], shell);
    expect(users.code, users.stdout + users.stderr).toBe(0);
    expect(users.stdout).toContain('0 user(s)');
    const file = path.join(world.dir, 'users.csv');
    fs.writeFileSync(file, csv(HEADER, 'u1,Ada,Lovelace,ada@lincoln.example,,,'));
    const valid = await world.cliWithEnv(['validate', '--kind', 'samegoal-users', file], shell);
    expect(valid.code, valid.stdout + valid.stderr).toBe(0);
    expect(valid.stdout).toContain('valid');
    const missing = await world.cliWithEnv(['validate', '--kind', 'samegoal-users', path.join(world.dir, 'missing.csv')], shell);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain(`file not found: ${path.join(world.dir, 'missing.csv')}`);
    expect(missing.stderr).not.toMatch(/\n\s+at /);

    daemon = spawnDaemon(world, [], secret);
    await waitFor('the daemon', () => daemon!.output().includes('daemon started'), 15_000);
    world.putEpoch('lincoln', '20240101-020000', { 'users.csv': csv(HEADER, 'u1,Ada,Lovelace,ada@lincoln.example,,,') });
    const trigger = await world.cliWithEnv(['trigger', '--tenant', 'lincoln', '--wait'], shell);
    expect(trigger.code, trigger.stdout + trigger.stderr).toBe(0);
    expect(trigger.stdout).toContain('lincoln: ok');
    expect(world.exists('/lincoln/upload/bak/20240101-020000/users.csv')).toBe(true);
    const after = await world.cliWithEnv(['users', '--tenant', 'lincoln', '--json'], shell);
    expect(JSON.parse(after.stdout).map((u: { externalId: string }) => u.externalId)).toEqual(['u1']);
  });
});

const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');

// Without a pinned key, doctor only reads the server's key to print it: the handshake is refused
// at the key, so no password or private key can reach a server nobody has verified.
describe('doctor on a tenant without hostKey sends no credentials', () => {
  let world: World;
  beforeEach(async (ctx) => {
    world = await World.start('embedded', `doctor-nokey-${ctx.task.name}`);
  });
  afterEach(async (ctx) => {
    await world.stop(ctx.task.result?.state === 'fail');
  });

  const withoutHostKey = (id: string, sftp: Record<string, unknown>) => {
    world.addTenant(id);
    const t = world.tenantConfig(id) as { sftp: Record<string, unknown> };
    t.sftp = { ...t.sftp, ...sftp };
    delete t.sftp.hostKey;
    delete t.sftp.privateKey;
    world.writeConfig();
  };

  it('prints the fingerprint of a server that records every authentication attempt, and it records none', async () => {
    // An SSH server that says which authentication methods were tried (none, password, publickey…).
    const hostKey = generateEd25519KeyPair();
    const attempts: string[] = [];
    const server = new ssh2.Server({ hostKeys: [hostKey.private] }, (client) => {
      client.on('error', () => {});
      client.on('authentication', (ctx) => {
        attempts.push(ctx.method);
        ctx.reject();
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const port = (server.address() as net.AddressInfo).port;
      withoutHostKey('lincoln', { port, password: 'a-password-that-must-stay-here' });
      const d = await world.cli(['doctor', '--tenant', 'lincoln', '--json']);
      const json = JSON.parse(d.stdout) as { checks: { check: string; tenant: string | null; status: string; detail: string; fingerprint?: string }[] };
      const mine = json.checks.filter((c) => c.tenant === 'lincoln');
      const hostCheck = mine.find((c) => c.check === 'host key')!;
      expect(hostCheck).toMatchObject({ status: 'fail', fingerprint: expect.stringMatching(/^SHA256:[A-Za-z0-9+/]{43}$/) });
      expect(hostCheck.detail).toContain(`presents ${hostCheck.fingerprint}`);
      expect(mine.find((c) => c.check === 'sftp login')).toMatchObject({ status: 'skip', detail: expect.stringContaining('credentials are never sent to an unverified server') });
      expect(attempts).toEqual([]);
    } finally {
      await new Promise((r) => server.close(r));
    }
  });

  it('prints the fingerprint with a wrong password, and no login failure: no login was tried', async () => {
    withoutHostKey('lincoln', { password: 'wrong-password' });
    const d = await world.cli(['doctor', '--tenant', 'lincoln']);
    expect(d.code, d.stdout + d.stderr).toBe(1);
    expect(d.stdout).toContain(`set tenants.lincoln.sftp.hostKey: "${world.server.hostKeyFingerprint}"`);
    expect(d.stdout).toMatch(/- lincoln: sftp login\s+not tried until the host key is pinned/);
    expect(d.stdout).not.toMatch(/refused the login|authentication/i);
  });
});
