// Feeds that stop, end to end on both stores: a tenant with expectEveryHours whose last successful
// import is older than that is mailed to the operators once per episode (never to the district),
// shown as overdue in `status --json` and in the metrics, and on time again once an upload is
// applied; the next stop is a new episode with its own notice. A tenant that expects nothing is
// never overdue.
import PostalMime from 'postal-mime';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { freePort, spawnDaemon, waitFor, type DaemonProcess } from './harness/daemon.js';
import { HttpClient, parsePrometheus, sample } from './harness/http.js';
import { availableSftpServerKinds } from './harness/sftp-server.js';
import { startTestSmtpServer, type TestSmtpServer } from './harness/smtp-server.js';
import { availableStores } from './harness/stores.js';
import { csv, World } from './harness/world.js';

const HEADER = 'user_id,first_name,last_name,email,role,school_id,active';
const NEVER_SOON = '0 0 1 1 *';
const OPS = 'ops@vendor.example';
/** 3.6 seconds: a feed that stops is overdue within the test. */
const EXPECT_HOURS = 0.001;
const kind = availableSftpServerKinds()[0];

describe.each(availableStores())(`overdue feeds on ${kind} sftp, %s`, (store) => {
  let world: World;
  let smtp: TestSmtpServer;
  let daemon: DaemonProcess | undefined;

  beforeEach(async (ctx) => {
    world = await World.start(kind, `overdue-${store}-${ctx.task.name}`, { store });
    smtp = await startTestSmtpServer();
    world.set('mail', { from: 'Provisioning <provisioning@vendor.example>', smtp: smtp.url, operators: [OPS], retrySeconds: 1 });
  });
  afterEach(async (ctx) => {
    // (vitest runs afterEach before onTestFailed: the daemon's log is printed here.)
    if (ctx.task.result?.state === 'fail' && daemon) process.stderr.write(`\n--- daemon output ---\n${daemon.output()}\n`);
    await daemon?.stop('SIGKILL');
    daemon = undefined;
    await smtp.stop();
    await world.stop(ctx.task.result?.state === 'fail');
  });

  // The subject says it (a header: readable in the raw message); the body is read decoded.
  const overdueMails = () => smtp.messages.filter((m) => /^Subject:.*feed overdue/m.test(m.raw.toString()));
  const bodyOf = async (raw: Buffer) => (await PostalMime.parse(raw)).text ?? '';
  const status = async (tenant: string) => JSON.parse((await world.cli(['status', '--tenant', tenant, '--json'])).stdout)[0];

  it('tells the operators once per episode, shows it in status and the metrics, and is on time again after an upload', async () => {
    const port = await freePort();
    world.set('http', { listen: `127.0.0.1:${port}` });
    world.addTenant('lincoln', { schedule: NEVER_SOON, expectEveryHours: EXPECT_HOURS, notify: { to: ['it@lincoln.example'], when: 'failures' } });
    world.addTenant('quiet', { schedule: NEVER_SOON, notify: { to: ['it@quiet.example'], when: 'failures' } });
    world.putEpoch('lincoln', '20240101-020000', { 'users.csv': csv(HEADER, 'u1,Ada,Lovelace,ada@lincoln.example,teacher,100,1') });
    expect((await world.cli(['run', '--now'])).code).toBe(0);
    const first = await status('lincoln');
    expect(first.feed).toMatchObject({ expectEveryHours: EXPECT_HOURS, overdue: false, lastSuccess: expect.any(String) });

    daemon = spawnDaemon(world);
    const metrics = async () => parsePrometheus((await new HttpClient(`http://127.0.0.1:${port}`).get('/metrics')).text).samples;
    await waitFor('the operators to be told', () => overdueMails().length === 1, 20_000, 100);
    const notice = overdueMails()[0];
    expect(notice.to).toEqual([OPS]);
    const text = await bodyOf(notice.raw);
    expect(text).toContain('lincoln district (lincoln)');
    expect(text).toContain('No upload from lincoln district has been applied since');
    expect(text).toContain('the district was not told');

    const late = await status('lincoln');
    expect(late.feed).toMatchObject({ overdue: true, lastSuccess: first.feed.lastSuccess });
    expect((await status('quiet')).feed).toMatchObject({ expectEveryHours: null, overdue: false });
    const text1 = (await world.cli(['status', '--tenant', 'lincoln'])).stdout;
    expect(text1).toContain('(overdue)');
    expect(text1).toContain('overdue: no upload applied since');
    let samples = await metrics();
    expect(sample(samples, 'provisioner_tenants_overdue')).toBe(1);
    expect(sample(samples, 'provisioner_tenant_overdue', { tenant: 'lincoln' })).toBe(1);
    expect(sample(samples, 'provisioner_tenant_overdue', { tenant: 'quiet' })).toBeUndefined();

    // A run that finds nothing to take is no delivery: still overdue, still one notice.
    const idle = await world.cli(['run', '--now', '--tenant', 'lincoln']);
    expect(idle.stdout).toContain('nothing to do');
    expect((await status('lincoln')).feed).toMatchObject({ overdue: true, lastSuccess: first.feed.lastSuccess });

    // Once per episode: the daemon looks every second and says nothing more.
    await new Promise((r) => setTimeout(r, 3000));
    expect(overdueMails()).toHaveLength(1);
    expect(smtp.messages.every((m) => !m.to.includes('it@lincoln.example'))).toBe(true);

    // An upload is applied: on time again; when it stops again, a new episode and a new notice.
    world.putEpoch('lincoln', '20240102-020000', { 'users.csv': csv(HEADER, 'u2,Alan,Turing,alan@lincoln.example,teacher,100,1') });
    const t = await world.cli(['trigger', '--tenant', 'lincoln', '--wait']);
    expect(t.code, t.stdout + t.stderr).toBe(0);
    const fresh = await status('lincoln');
    expect(fresh.feed.overdue).toBe(false);
    expect(fresh.feed.lastSuccess > first.feed.lastSuccess).toBe(true);
    samples = await metrics();
    expect(sample(samples, 'provisioner_tenants_overdue')).toBe(0);
    await waitFor('the second episode', () => overdueMails().length === 2, 20_000, 100);
    await new Promise((r) => setTimeout(r, 2000));
    expect(overdueMails()).toHaveLength(2);
    expect(world.query("SELECT count(*) AS n FROM outcomes WHERE kind = 'overdue'")[0].n).toBe(2);
    expect(await daemon.stop('SIGTERM')).toBe(0);
  });

  it('counts a feed that never delivered from its first run, and a disabled tenant is never overdue', async () => {
    world.addTenant('lincoln', { schedule: NEVER_SOON, expectEveryHours: EXPECT_HOURS, notify: { when: 'never' } });
    world.addTenant('paused', { enabled: false, expectEveryHours: EXPECT_HOURS, notify: { when: 'never' } });
    expect((await status('lincoln')).feed).toMatchObject({ overdue: false, dueBy: null }); // never looked at: nothing known
    expect((await world.cli(['run', '--now', '--tenant', 'lincoln', '--tenant', 'paused'])).code).toBe(0);
    daemon = spawnDaemon(world);
    await waitFor('the operators to be told', () => overdueMails().length === 1, 20_000, 100);
    expect(await bodyOf(overdueMails()[0].raw)).toContain('has ever been applied');
    const s = await status('lincoln');
    expect(s.feed).toMatchObject({ overdue: true, lastSuccess: null });
    expect((await status('paused')).feed.overdue).toBe(false);
  });
});
