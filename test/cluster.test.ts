// Several workers on one PostgreSQL, end to end: three `provisioner run` daemons (real
// processes) share a dozen tenants; one is killed with -9 while it holds work. With default
// settings, the others finish its uploads within two minutes: every epoch applied exactly once,
// every report mailed once, nothing left claimed, and `status` from anywhere shows who is up.
import fs from 'node:fs';
import { afterEach, describe, expect, it, onTestFailed } from 'vitest';
import { spawnDaemon, waitFor, type DaemonProcess } from './harness/daemon.js';
import { availableSftpServerKinds } from './harness/sftp-server.js';
import { startTestSmtpServer, type TestSmtpServer } from './harness/smtp-server.js';
import { availableStores } from './harness/stores.js';
import { csv, World } from './harness/world.js';

const HEADER = 'user_id,first_name,last_name,email,role,school_id,active';
const TENANTS = Array.from({ length: 12 }, (_, i) => `district-${String(i + 1).padStart(2, '0')}`);
const ROWS = 100_000;
const EPOCH = '20240101-020000';

function roster(tenant: string): string {
  const lines = [HEADER];
  for (let i = 0; i < ROWS; i++) lines.push(`${tenant}-u${i},First${i},Last${i},u${i}@${tenant}.example,student,1,1`);
  return csv(...lines);
}

describe.skipIf(!availableStores().includes('postgres'))('a cluster of daemons on one PostgreSQL', () => {
  let world: World | undefined;
  let smtp: TestSmtpServer | undefined;
  let daemons: DaemonProcess[] = [];
  let failed = false;

  afterEach(async () => {
    for (const d of daemons) await d.stop('SIGKILL');
    daemons = [];
    await smtp?.stop();
    await world?.stop(failed);
  });

  it('shares a dozen tenants among three daemons; one killed -9 in the middle is finished by the others within two minutes, once', async () => {
    failed = false;
    onTestFailed(() => {
      failed = true;
      daemons.forEach((d, i) => process.stderr.write(`\n--- daemon ${i} ---\n${d.output().slice(-20_000)}\n`));
    });
    smtp = await startTestSmtpServer();
    world = await World.start(availableSftpServerKinds()[0], 'cluster', { store: 'postgres' });
    world.set('leaseSeconds', undefined); // the default lease: what "within two minutes" is promised with
    world.set('mail', { from: 'Provisioning <provisioning@vendor.example>', smtp: smtp.url });
    for (const t of TENANTS) {
      world.addTenant(t, { schedule: '0 0 1 1 *', notify: { to: [`it@${t}.example`], when: 'always' } });
      world.putEpoch(t, EPOCH, { 'users.csv': roster(t) });
    }
    const w = world;
    daemons = [0, 1, 2].map(() => spawnDaemon(w));
    await waitFor('three daemons', () => daemons.every((d) => d.output().includes('daemon started')), 30_000);

    const trigger = await w.cli(['trigger', ...TENANTS.flatMap((t) => ['--tenant', t])]);
    expect(trigger.code, trigger.stderr).toBe(0);

    // The victim: a daemon in the middle of an upload (it holds a tenant and a claimed epoch).
    const victim = await waitFor(
      'a daemon holding a claimed upload',
      () => {
        const held = w.query<{ pid: number; tenant: string }>(
          `SELECT d.pid, c.tenant FROM claims c JOIN daemons d ON d.owner = c.owner JOIN tenant_locks l ON l.owner = c.owner AND l.tenant = c.tenant`,
        );
        return held.length ? daemons.find((d) => d.child.pid === Number(held[0].pid)) : undefined;
      },
      60_000,
      20,
    );
    victim.child.kill('SIGKILL');
    const killedAt = Date.now();
    await victim.exited;

    const applied = () => Number(w.query<{ n: number }>(`SELECT count(*) AS n FROM imports WHERE status = 'applied'`)[0].n);
    await waitFor('every epoch applied and filed in bak', () => applied() === TENANTS.length && TENANTS.every((t) => w.exists(`/${t}/upload/bak/${EPOCH}/result.json`)), 150_000, 250);
    const finishedAfter = Date.now() - killedAt;
    process.stderr.write(`[cluster] every upload done ${(finishedAfter / 1000).toFixed(1)} s after the kill\n`);
    expect(finishedAfter).toBeLessThan(120_000);
    await waitFor('every report mailed', () => smtp!.messages.length >= TENANTS.length, 60_000, 250);
    await new Promise((r) => setTimeout(r, 3000)); // a duplicate would come now

    // Exactly once: one applied import and one report per tenant, every user there once.
    const perTenant = w.query<{ tenant: string; n: number }>(`SELECT tenant, count(*) AS n FROM imports WHERE status = 'applied' GROUP BY tenant ORDER BY tenant`);
    expect(perTenant.map((r) => [r.tenant, Number(r.n)])).toEqual(TENANTS.map((t) => [t, 1]));
    expect(Number(w.query<{ n: number }>('SELECT count(*) AS n FROM users')[0].n)).toBe(TENANTS.length * ROWS);
    expect(smtp.messages.map((m) => m.to[0]).sort()).toEqual(TENANTS.map((t) => `it@${t}.example`));
    // Nothing left claimed, on the hosts or in the database.
    expect(w.query('SELECT * FROM claims')).toEqual([]);
    for (const t of TENANTS) expect(fs.existsSync(w.remote(`/${t}/upload/.processing/${EPOCH}`))).toBe(false);

    // Any machine with the database URL sees the two daemons left, and what they did.
    const status = await w.cli(['status']);
    expect(status.code).toBe(0);
    expect(status.stdout.match(/^daemon: /gm)).toHaveLength(2);
    const json = JSON.parse((await w.cli(['status', '--json'])).stdout) as { lastRun: { status: string } | null }[];
    expect(json.every((s) => s.lastRun !== null)).toBe(true);
  }, 300_000);
});
