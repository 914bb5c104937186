// Several workers on one PostgreSQL, end to end: `provisioner run` daemons (real processes), each
// passing for a machine of its own (PROVISIONER_TEST_HOSTNAME), so that a killed one is found out
// by its leases running out, as across machines, and never by its pid. Three daemons share a
// dozen tenants; one is killed with -9 while it holds work. With default settings, the others
// finish its uploads within two minutes: every epoch applied exactly once, every report mailed
// once, nothing left claimed or locked, no run left "running", and `status` from anywhere shows
// who is up. A daemon takes a trigger only when it has a free slot: with more triggers than one
// daemon's slots, a free daemon runs the rest at once.
import fs from 'node:fs';
import { afterEach, describe, expect, it, onTestFailed } from 'vitest';
import { spawnDaemon, waitFor, type DaemonProcess } from './harness/daemon.js';
import { availableSftpServerKinds } from './harness/sftp-server.js';
import { startTestSmtpServer, type TestSmtpServer } from './harness/smtp-server.js';
import { availableStores } from './harness/stores.js';
import { World } from './harness/world.js';

const HEADER = 'user_id,first_name,last_name,email,role,school_id,active';
const TENANTS = Array.from({ length: 12 }, (_, i) => `district-${String(i + 1).padStart(2, '0')}`);
const ROWS = 100_000;
const EPOCH = '20240101-020000';
const NEVER_SOON = '0 0 1 1 *';

function roster(tenant: string, rows = ROWS): string {
  const lines = [HEADER];
  for (let i = 0; i < rows; i++) lines.push(`${tenant}-u${i},First${i},Last${i},u${i}@${tenant}.example,student,1,1`);
  return lines.join('\n') + '\n';
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
    smtp = undefined;
    await world?.stop(failed);
  });

  const watch = () => {
    failed = false;
    onTestFailed(() => {
      failed = true;
      daemons.forEach((d, i) => process.stderr.write(`\n--- daemon ${i} ---\n${d.output().slice(-20_000)}\n`));
    });
  };
  /** A daemon that passes for a machine of its own. */
  const machine = (w: World, i: number) => spawnDaemon(w, [], { PROVISIONER_TEST_HOSTNAME: `worker-${i}.cluster.test` });
  const ownerOf = (w: World, d: DaemonProcess) => w.query<{ owner: string }>('SELECT owner FROM daemons WHERE pid = ?', d.child.pid)[0]?.owner;
  const count = (w: World, sql: string, ...params: unknown[]) => Number(w.query<{ n: number }>(sql, ...params)[0].n);

  it('shares a dozen tenants among three daemons; one killed -9 in the middle is finished by the others once its lease runs out, within two minutes, once', async () => {
    watch();
    smtp = await startTestSmtpServer();
    world = await World.start(availableSftpServerKinds()[0], 'cluster', { store: 'postgres' });
    world.set('leaseSeconds', undefined); // the default lease: what "within two minutes" is promised with
    world.set('mail', { from: 'Provisioning <provisioning@vendor.example>', smtp: smtp.url });
    for (const t of TENANTS) {
      world.addTenant(t, { schedule: NEVER_SOON, notify: { to: [`it@${t}.example`], when: 'always' } });
      world.putEpoch(t, EPOCH, { 'users.csv': roster(t) });
    }
    const w = world;
    daemons = [1, 2, 3].map((i) => machine(w, i));
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
    const victimOwner = ownerOf(w, victim);
    victim.child.kill('SIGKILL');
    const killedAt = Date.now();
    await victim.exited;
    // What it had in hand (the claimed uploads not yet filed are its tenants' unfinished work).
    const orphaned = w.query<{ tenant: string }>('SELECT tenant FROM tenant_locks WHERE owner = ? ORDER BY tenant', victimOwner).map((r) => r.tenant);
    expect(orphaned.length).toBeGreaterThan(0);

    const applied = () => count(w, `SELECT count(*) AS n FROM imports WHERE status = 'applied'`);
    await waitFor('every epoch applied and filed in bak', () => applied() === TENANTS.length && TENANTS.every((t) => w.exists(`/${t}/upload/bak/${EPOCH}/result.json`)), 150_000, 250);
    const finishedAfter = Date.now() - killedAt;
    process.stderr.write(`[cluster] every upload done ${(finishedAfter / 1000).toFixed(1)} s after the kill\n`);
    expect(finishedAfter).toBeLessThan(120_000);
    // Taken over through the lease, not the pid: the victim renewed it every 20 s, so nobody could
    // take its tenants back for at least 40 s after the kill.
    const retaken = w.query<{ started_at: string }>(
      `SELECT r.started_at FROM imports i JOIN runs r ON r.id = i.run_id
        WHERE i.status = 'applied' AND r.owner <> ? AND i.tenant IN (${orphaned.map(() => '?').join(', ')})`,
      victimOwner,
      ...orphaned,
    );
    expect(retaken.length).toBeGreaterThan(0);
    for (const r of retaken) expect(Date.parse(r.started_at) - killedAt).toBeGreaterThan(35_000);

    await waitFor('every report mailed', () => smtp!.messages.length >= TENANTS.length, 60_000, 250);
    // The victim's run is marked interrupted by the housekeeping of the others (once its lease is gone).
    await waitFor('no run left running', () => count(w, `SELECT count(*) AS n FROM runs WHERE status = 'running'`) === 0, 60_000, 500);
    await new Promise((r) => setTimeout(r, 3000)); // a duplicate would come now

    // Exactly once: one applied import and one report per tenant, every user there once.
    const perTenant = w.query<{ tenant: string; n: number }>(`SELECT tenant, count(*) AS n FROM imports WHERE status = 'applied' GROUP BY tenant ORDER BY tenant`);
    expect(perTenant.map((r) => [r.tenant, Number(r.n)])).toEqual(TENANTS.map((t) => [t, 1]));
    expect(count(w, 'SELECT count(*) AS n FROM users')).toBe(TENANTS.length * ROWS);
    expect(smtp.messages.map((m) => m.to[0]).sort()).toEqual(TENANTS.map((t) => `it@${t}.example`));
    // Nothing left claimed or locked, on the hosts or in the database; the killed run is interrupted.
    expect(w.query('SELECT * FROM claims')).toEqual([]);
    expect(w.query('SELECT * FROM tenant_locks')).toEqual([]);
    for (const t of TENANTS) expect(fs.existsSync(w.remote(`/${t}/upload/.processing/${EPOCH}`))).toBe(false);
    expect(count(w, `SELECT count(*) AS n FROM runs WHERE status = 'interrupted' AND owner = ?`, victimOwner)).toBeGreaterThan(0);
    expect(count(w, `SELECT count(*) AS n FROM triggers WHERE finished_at IS NULL`)).toBe(0);

    // The work was spread: each daemon left applied some of the uploads.
    const survivors = daemons.filter((d) => d !== victim).map((d) => ownerOf(w, d));
    const appliedBy = new Set(w.query<{ owner: string }>(`SELECT DISTINCT r.owner FROM imports i JOIN runs r ON r.id = i.run_id WHERE i.status = 'applied'`).map((r) => r.owner));
    for (const owner of survivors) expect(appliedBy.has(owner), `${owner} applied nothing`).toBe(true);

    // Any machine with the database URL sees the two daemons left, and what they did.
    const status = await w.cli(['status']);
    expect(status.code).toBe(0);
    expect(status.stdout.match(/^daemon: /gm)).toHaveLength(2);
    for (const i of [1, 2, 3]) expect(status.stdout.includes(`on worker-${i}.cluster.test`)).toBe(daemons[i - 1] !== victim);
    const json = JSON.parse((await w.cli(['status', '--json'])).stdout) as { lastRun: { status: string } | null }[];
    expect(json.every((s) => s.lastRun !== null)).toBe(true);
  }, 300_000);

  it('a daemon takes a trigger only with a free slot: a free daemon runs the rest at once, each picked up within 5 s', async () => {
    watch();
    world = await World.start(availableSftpServerKinds()[0], 'cluster-slots', { store: 'postgres' });
    world.set('concurrency', 1);
    world.addTenant('big', { schedule: NEVER_SOON, notify: { when: 'never' } });
    world.putEpoch('big', EPOCH, { 'users.csv': roster('big', 400_000) });
    for (const t of ['small-1', 'small-2']) {
      world.addTenant(t, { schedule: NEVER_SOON, notify: { when: 'never' } });
      world.putEpoch(t, EPOCH, { 'users.csv': roster(t, 10) });
    }
    const w = world;
    daemons = [1, 2].map((i) => machine(w, i));
    await waitFor('two daemons', () => daemons.every((d) => d.output().includes('daemon started')), 30_000);

    // More triggers than one daemon's slots (1): the big one first.
    const r = await w.cli(['trigger', '--tenant', 'big', '--tenant', 'small-1', '--tenant', 'small-2']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('2 running daemons serve it: the first with a free slot picks it up');
    await waitFor('every trigger finished', () => count(w, 'SELECT count(*) AS n FROM triggers WHERE finished_at IS NULL') === 0, 120_000, 200);

    const triggers = w.query<{ tenant: string; requested_at: string; picked_up_at: string; picked_up_by: string; finished_at: string; status: string }>(
      'SELECT tenant, requested_at, picked_up_at, picked_up_by, finished_at, status FROM triggers ORDER BY id',
    );
    expect(triggers.map((t) => [t.tenant, t.status])).toEqual([['big', 'ok'], ['small-1', 'ok'], ['small-2', 'ok']]);
    const [big, ...small] = triggers;
    // The daemon busy with the big upload took nothing else; the other ran the small ones, one
    // after the other, while the big one was still being applied.
    for (const s of small) {
      expect(s.picked_up_by).not.toBe(big.picked_up_by);
      expect(Date.parse(s.picked_up_at) - Date.parse(s.requested_at)).toBeLessThan(5000);
      expect(Date.parse(s.finished_at)).toBeLessThan(Date.parse(big.finished_at));
    }
    expect(count(w, `SELECT count(*) AS n FROM imports WHERE status = 'applied'`)).toBe(3);
  }, 180_000);
});
