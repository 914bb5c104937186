// `doctor` and `status` against a real SFTP server (both kinds: folder permissions differ
// between OpenSSH and the embedded server), a real SMTP server and real SQLite.
import fs from 'node:fs';
import { afterEach, beforeEach, describe, expect, it, onTestFailed } from 'vitest';
import { freePort, spawnDaemon, waitFor } from './harness/daemon.js';
import { startTestSmtpServer, type TestSmtpServer } from './harness/smtp-server.js';
import type { Check } from '../src/service/doctor.js';
import { csv, World, worlds } from './harness/world.js';

const HEADER = 'user_id,first_name,last_name,email,role,school_id,active';


describe.each(worlds())('doctor and status on %s', (_label, kind, store) => {
  let world: World;
  let smtp: TestSmtpServer | undefined;
  let failed = false;
  beforeEach(async (ctx) => {
    failed = false;
    onTestFailed(() => {
      failed = true;
    });
    world = await World.start(kind, `${kind}-${ctx.task.name}-${store}`, { store });
  });
  afterEach(async () => {
    await smtp?.stop();
    smtp = undefined;
    await world.stop(failed);
  });

  it('passes on a good tenant, prints the host key fingerprint and checks SMTP', async () => {
    smtp = await startTestSmtpServer();
    world.set('mail', { from: 'Provisioning <provisioning@vendor.example>', smtp: smtp.url });
    world.addTenant('lincoln', { paths: { upload: '/lincoln/upload', bak: '/lincoln/upload/bak', tmp: '/lincoln/tmp', log: '/lincoln/log/import.log' } });
    const r = await world.cli(['doctor']);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(/✓ config\s+.*is valid: 1 tenant/);
    expect(r.stdout).toMatch(/✓ database\s+.*(writable, schema version \d+|new and writable)/);
    expect(r.stdout).toMatch(/✓ mail\s+the SMTP server smtp:\/\/127\.0\.0\.1:\d+\/? accepts connections/);
    expect(r.stdout).toMatch(new RegExp(`✓ lincoln: host key\\s+.*${escape(world.server.hostKeyFingerprint)}`));
    expect(r.stdout).toMatch(/✓ lincoln: sftp login/);
    expect(r.stdout).toMatch(/✓ lincoln: upload folder\s+\/lincoln\/upload exists and is writable/);
    expect(r.stdout).toMatch(/✓ lincoln: bak folder\s+\/lincoln\/upload\/bak does not exist yet; it can be created, and written \(it is made on first use\)/);
    expect(r.stdout).toMatch(/✓ lincoln: log folder\s+\/lincoln\/log does not exist yet/);
    // The password digests' key: beside a SQLite database by default; PostgreSQL's workers
    // share one only through the configuration, so without it doctor warns (and still passes).
    if (store === 'sqlite') expect(r.stdout).toMatch(/✓ password digests\s+keyed by .*provisioner\.key, made on the first run/);
    else expect(r.stdout).toMatch(/! password digests\s+no key: every unchanged password .*\n\s+fix: set passwordDigestKey \(or passwordDigestKeyFile\), the same on every worker/);
    expect(r.stdout).toContain('All checks passed.');
    // Nothing is left behind by the probes, and nothing was created.
    expect(world.exists('/lincoln/upload/bak')).toBe(false);
    expect(fs.readdirSync(world.remote('/lincoln/upload'))).toEqual([]);

    const json = JSON.parse((await world.cli(['doctor', '--json', '--tenant', 'lincoln'])).stdout) as { ok: boolean; checks: Check[] };
    expect(json.ok).toBe(true);
    expect(json.checks.find((c) => c.check === 'host key')).toMatchObject({ tenant: 'lincoln', status: 'ok', fingerprint: world.server.hostKeyFingerprint });

    world.set('passwordDigestKey', 'a shared secret of the workers');
    expect((await world.cli(['doctor', '--tenant', 'lincoln'])).stdout).toMatch(/✓ password digests\s+keyed by passwordDigestKey/);
  });

  it('fails on a wrong host key, shows the fingerprint the server presented, and sends no credentials', async () => {
    world.addTenant('lincoln');
    const t = world.tenantConfig('lincoln') as { sftp: Record<string, unknown> };
    t.sftp.hostKey = 'SHA256:' + 'A'.repeat(43);
    world.writeConfig();
    const r = await world.cli(['doctor', '--tenant', 'lincoln']);
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/✗ lincoln: host key\s+.* presents SHA256:\S+, but tenants\.lincoln\.sftp\.hostKey pins SHA256:A{43}/);
    expect(r.stdout).toContain(`set tenants.lincoln.sftp.hostKey: "${world.server.hostKeyFingerprint}"`);
    expect(r.stdout).toMatch(/- lincoln: sftp login\s+not tried/);
    expect(r.stdout).toContain('1 check(s) failed.');
    const json = JSON.parse((await world.cli(['doctor', '--json'])).stdout) as { ok: boolean; checks: Check[] };
    expect(json.ok).toBe(false);
    expect(json.checks.find((c) => c.check === 'host key')).toMatchObject({ status: 'fail', fingerprint: world.server.hostKeyFingerprint });
  });

  it('fails on an unreachable host and an unwritable mail outbox, and says what to fix', async () => {
    world.addTenant('lincoln');
    const t = world.tenantConfig('lincoln') as { sftp: Record<string, unknown> };
    t.sftp.port = await freePort();
    world.writeConfig();
    // A folder under a file can never be created (root can write anywhere, so no chmod here).
    world.set('mail', { from: 'Provisioning <provisioning@vendor.example>', outbox: './config.yaml/outbox' });
    const r = await world.cli(['doctor']);
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/✗ lincoln: sftp login\s+cannot connect to .*ECONNREFUSED/);
    expect(r.stdout).toContain('fix: check tenants.lincoln.sftp.host and tenants.lincoln.sftp.port');
    expect(r.stdout).toMatch(/✗ mail\s+\S+\/config\.yaml\/outbox: ENOTDIR/);
    expect(r.stdout).toContain('2 check(s) failed.');
    expect((await world.cli(['doctor', '--tenant', 'nope'])).code).toBe(2);
  });

  it('status shows the next run, held files, queued mail and whether the daemon runs', async () => {
    const deadSmtp = await freePort();
    world.set('mail', { from: 'Provisioning <provisioning@vendor.example>', smtp: `smtp://127.0.0.1:${deadSmtp}`, timeoutSeconds: 5 });
    world.addTenant('lincoln', { schedule: '0 2 * * *', timezone: 'America/Chicago', options: { fullSync: true, maxDeactivatePercent: 10 } });
    const users = Array.from({ length: 10 }, (_, i) => `u${i},First${i},Last${i},u${i}@lincoln.example,staff,1,1`);
    world.putEpoch('lincoln', '20240101-020000', { 'users.csv': csv(HEADER, ...users) });
    expect((await world.cli(['run', '--now'])).code).toBe(0);
    world.putEpoch('lincoln', '20240102-020000', { 'users.csv': csv(HEADER, users[0]) });
    const held = await world.cli(['run', '--now']);
    expect(held.code, held.stdout).toBe(1);
    world.putEpoch('lincoln', '20240103-020000', { 'users.csv': csv(HEADER, users[0]) }, false);

    const [s] = JSON.parse((await world.cli(['status', '--json'])).stdout);
    expect(s).toMatchObject({ tenant: 'lincoln', enabled: true, schedule: '0 2 * * *', timezone: 'America/Chicago' });
    expect(s.lastRun).toMatchObject({ reason: 'now', status: 'errors' });
    expect(s.imports[0]).toMatchObject({ epoch: '20240102-020000', file: 'users.csv', status: 'held', rows: 1 });
    // 02:00 in Chicago is 07:00 or 08:00 UTC, within the next day.
    const next = new Date(s.nextRun);
    expect([7, 8]).toContain(next.getUTCHours());
    expect(next.getTime() - Date.now()).toBeGreaterThan(0);
    expect(next.getTime() - Date.now()).toBeLessThan(25 * 3600_000);
    expect(s.held).toEqual([
      {
        importId: expect.any(Number), epoch: '20240102-020000', file: 'users.csv', kind: 'samegoal-users', heldAt: expect.any(String),
        message: expect.stringContaining('deactivate'), counts: expect.objectContaining({ rows: 1, deactivated: 9 }),
        location: '/lincoln/upload/.held/20240102-020000', supersededBy: null,
      },
    ]);
    expect(s.queuedMail).toMatchObject({ queued: 2, sent: 0 });
    expect(s.pending).toEqual({ triggers: 0, claimed: [] });
    expect(s.daemon).toEqual({ running: false, owner: null, host: null, since: null, heartbeatAt: null });

    const text = await world.cli(['status']);
    expect(text.stdout).toContain('daemon: not running');
    // Which process ran the last run (with several workers: which machine's log to read).
    const [host, pid] = String(s.lastRun.owner).split(':');
    expect(text.stdout).toContain(`(now, on ${host}, pid ${pid})`);
    expect(text.stdout).toMatch(/lincoln\s*│.*│\s*errors\s*│.*│\s*-\s*│\s*1\s*│\s*-\s*│\s*2/);
    expect(text.stdout).toContain('held: 20240102-020000/users.csv');
    expect(text.stdout).toContain('provisioner release --tenant lincoln 20240102-020000');

    const d = spawnDaemon(world);
    try {
      await waitFor('the daemon', () => d.output().includes('daemon started'), 15_000);
      expect((await world.cli(['trigger', '--tenant', 'lincoln'])).code).toBe(0);
      const [live] = JSON.parse((await world.cli(['status', '--json'])).stdout);
      expect(live.daemon).toMatchObject({ running: true, owner: expect.stringMatching(/:\d+:[0-9a-f]+$/), since: expect.any(String) });
      expect((await world.cli(['status'])).stdout).toMatch(/daemon: \S+:\d+:[0-9a-f]+ on \S+, up since/);
    } finally {
      expect(await d.stop()).toBe(0);
    }
  }, 120_000);
});

const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
