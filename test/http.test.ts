// The daemon's HTTP side without a browser, on both stores: health, readiness and metrics for the
// vendor's monitoring (no login, no personal data; Prometheus text computed from the store), and
// who may use the console: no session, a wrong password, too many wrong passwords, a viewer
// acting, a form without its CSRF token, an authenticating proxy's header from a trusted and an
// untrusted address, Secure cookies behind TLS, signing out. Data is always escaped.
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { parseConfig } from '../src/config.js';
import { HttpServer } from '../src/http/server.js';
import { spawnSync } from 'node:child_process';
import { hashPassword, verifyPassword } from '../src/import/passwords.js';
import { silentLogger } from '../src/log.js';
import { openStore } from '../src/store/open.js';
import { freePort, spawnDaemon, waitFor, type DaemonProcess } from './harness/daemon.js';
import { HttpClient, parsePrometheus, sample } from './harness/http.js';
import { availableSftpServerKinds } from './harness/sftp-server.js';
import { availableStores } from './harness/stores.js';
import { CLI, csv, World } from './harness/world.js';

const HEADER = 'user_id,first_name,last_name,email,role,school_id,active';
const NEVER_SOON = '0 0 1 1 *';
const kind = availableSftpServerKinds()[0];

describe.each(availableStores())(`http on ${kind} sftp, %s`, (store) => {
  let world: World;
  let daemon: DaemonProcess | undefined;
  let base: string;
  let settings: Record<string, unknown>;

  beforeEach(async (ctx) => {
    world = await World.start(kind, `http-${store}-${ctx.task.name}`, { store });
    const port = await freePort();
    base = `http://127.0.0.1:${port}`;
    settings = {
      listen: `127.0.0.1:${port}`,
      users: { alice: { passwordHash: await hashPassword('alice-pw'), role: 'operator' }, bob: { passwordHash: await hashPassword('bob-pw'), role: 'operator' }, victor: { passwordHash: await hashPassword('victor-pw'), role: 'viewer' } },
      proxyHeader: 'X-Forwarded-User',
      proxyRole: 'viewer',
      trustedProxies: ['127.0.0.1'],
    };
    world.set('http', settings);
    // Mail that cannot be delivered stays queued (the queue metrics have something to show).
    world.set('mail', { from: 'Provisioning <provisioning@vendor.example>', smtp: `smtp://127.0.0.1:${await freePort()}`, timeoutSeconds: 2 });
    world.addTenant('lincoln', { schedule: NEVER_SOON, expectEveryHours: 1000 });
  });
  afterEach(async (ctx) => {
    // (vitest runs afterEach before onTestFailed: the daemon's log is printed here.)
    if (ctx.task.result?.state === 'fail' && daemon) process.stderr.write(`\n--- daemon output ---\n${daemon.output()}\n`);
    await daemon?.stop('SIGKILL');
    daemon = undefined;
    await world.stop(ctx.task.result?.state === 'fail');
  });

  async function startDaemon(): Promise<void> {
    daemon = spawnDaemon(world);
    await waitFor('the daemon to be ready', async () => (await new HttpClient(base).get('/readyz').catch(() => null))?.status === 200, 20_000, 100);
  }

  it('serves /healthz, /readyz and /metrics without a login: Prometheus text from the store, no personal data', async () => {
    world.putEpoch('lincoln', '20240101-020000', {
      'users.csv': csv(HEADER, 'u1,Ada,Lovelace,ada@lincoln.example,teacher,100,1', 'u2,Alan,Turing,not-an-email,teacher,100,1', 'u3,Grace,Hopper,grace@lincoln.example,admin,200,1'),
    });
    expect((await world.cli(['run', '--tenant', 'lincoln', '--now'])).code).toBe(1);
    await startDaemon();
    const anon = new HttpClient(base);
    const health = await anon.get('/healthz');
    expect(health.status).toBe(200);
    expect(health.text).toBe('ok\n');
    expect((await anon.get('/readyz')).text).toBe('ready\n');

    const scrape = await anon.get('/metrics');
    expect(scrape.status).toBe(200);
    expect(scrape.headers['content-type']).toContain('text/plain');
    const { samples, types } = parsePrometheus(scrape.text);
    expect(types.get('provisioner_runs_total')).toBe('counter');
    expect(types.get('provisioner_run_duration_seconds')).toBe('histogram');
    expect(sample(samples, 'provisioner_runs_total', { result: 'errors' })).toBe(1);
    expect(sample(samples, 'provisioner_runs_total', { result: 'ok' })).toBe(0);
    expect(sample(samples, 'provisioner_imports_total', { status: 'applied with errors' })).toBe(1);
    expect(sample(samples, 'provisioner_rows_total', { action: 'created' })).toBe(2);
    expect(sample(samples, 'provisioner_rows_total', { action: 'failed' })).toBe(1);
    for (const action of ['updated', 'unchanged', 'deactivated', 'archived']) expect(sample(samples, 'provisioner_rows_total', { action })).toBe(0);
    expect(sample(samples, 'provisioner_mail_queue_depth')).toBe(1);
    expect(sample(samples, 'provisioner_mail_oldest_queued_seconds')).toBeGreaterThan(0);
    const last = sample(samples, 'provisioner_tenant_last_success_timestamp_seconds', { tenant: 'lincoln' })!;
    expect(Math.abs(last - Date.now() / 1000)).toBeLessThan(120);
    expect(sample(samples, 'provisioner_tenants_overdue')).toBe(0);
    expect(sample(samples, 'provisioner_tenant_overdue', { tenant: 'lincoln' })).toBe(0);
    expect(sample(samples, 'provisioner_run_duration_seconds_count')).toBeUndefined(); // this daemon ran nothing yet
    for (const secret of ['Lovelace', 'ada@lincoln.example', 'not-an-email', 'u1']) expect(scrape.text).not.toContain(secret);

    // This daemon's runs go into the histogram.
    world.putEpoch('lincoln', '20240102-020000', { 'users.csv': csv(HEADER, 'u4,Edsger,Dijkstra,edsger@lincoln.example,teacher,300,1') });
    expect((await world.cli(['trigger', '--tenant', 'lincoln', '--wait'])).code).toBe(0);
    const after = parsePrometheus((await anon.get('/metrics')).text).samples;
    expect(sample(after, 'provisioner_run_duration_seconds_count', { result: 'ok' })).toBe(1);
    expect(sample(after, 'provisioner_runs_total', { result: 'ok' })).toBe(1);
    expect(sample(after, 'provisioner_rows_total', { action: 'created' })).toBe(3);
  });

  it('counts the rows of applied imports only: a held upload counts once, as what its release did; a discarded one not at all', async () => {
    world.addTenant('lincoln', { schedule: NEVER_SOON, options: { fullSync: true, maxDeactivatePercent: 10 } });
    const ten = Array.from({ length: 10 }, (_, i) => `u${i},First${i},Last${i},u${i}@lincoln.example,teacher,100,1`);
    world.putEpoch('lincoln', '20240101-020000', { 'users.csv': csv(HEADER, ...ten) });
    expect((await world.cli(['run', '--tenant', 'lincoln', '--now'])).code).toBe(0);
    // One user only: held (it would deactivate nine), discarded; then again, held and released.
    world.putEpoch('lincoln', '20240102-020000', { 'users.csv': csv(HEADER, ten[0]) });
    expect((await world.cli(['run', '--tenant', 'lincoln', '--now'])).code).toBe(1);
    expect((await world.cli(['discard', '--tenant', 'lincoln', '20240102-020000'])).code).toBe(0);
    world.putEpoch('lincoln', '20240103-020000', { 'users.csv': csv(HEADER, ten[0]) });
    expect((await world.cli(['run', '--tenant', 'lincoln', '--now'])).code).toBe(1);
    expect((await world.cli(['release', '--tenant', 'lincoln', '20240103-020000'])).code).toBe(0);
    expect(world.query('SELECT external_id FROM users WHERE NOT active ORDER BY external_id').map((u) => u.external_id)).toEqual(ten.slice(1).map((r) => r.split(',')[0]));

    await startDaemon();
    const { samples } = parsePrometheus((await new HttpClient(base).get('/metrics')).text);
    expect(sample(samples, 'provisioner_imports_total', { status: 'held' })).toBe(2);
    expect(sample(samples, 'provisioner_imports_total', { status: 'discarded' })).toBe(1);
    expect(sample(samples, 'provisioner_imports_total', { status: 'applied' })).toBe(2);
    // Nine were deactivated, once: not the two holds' estimates too.
    expect(sample(samples, 'provisioner_rows_total', { action: 'deactivated' })).toBe(9);
    expect(sample(samples, 'provisioner_rows_total', { action: 'created' })).toBe(10);
    expect(sample(samples, 'provisioner_rows_total', { action: 'unchanged' })).toBe(1);
  });

  it('audits a run-now refused because the tenant is disabled, and shows it on its page', async () => {
    world.addTenant('closed', { enabled: false, schedule: NEVER_SOON });
    await startDaemon();
    const alice = new HttpClient(base);
    await alice.login('alice', 'alice-pw');
    const refused = await alice.post('/tenants/closed/run', { _csrf: await alice.csrf('/tenants/closed/run') });
    expect(refused.status).toBe(409);
    expect(refused.text).toContain('closed is disabled (enabled: false): no daemon runs it.');
    expect(world.query('SELECT actor, action, tenant, result, detail FROM audit')).toEqual([
      { actor: 'console:alice', action: 'run now', tenant: 'closed', result: 'refused', detail: 'closed is disabled (enabled: false): no daemon runs it.' },
    ]);
    expect(world.query('SELECT * FROM triggers')).toEqual([]);
    const page = await alice.get('/tenants/closed');
    expect(page.text).toMatch(/<td>console:alice<\/td><td>run now <\/td><td><span class="badge warn">refused<\/span><div class="small">closed is disabled/);
  });

  it('lets nobody in without an account: no session, wrong passwords (rate-limited), a viewer acting, a form without its token', async () => {
    await startDaemon();
    const anon = new HttpClient(base);
    const home = await anon.get('/');
    expect(home.status).toBe(303);
    expect(home.headers.location).toBe('/login?next=%2F');
    expect((await anon.get('/tenants/lincoln')).status).toBe(303);
    expect((await anon.post('/tenants/lincoln/run', {})).status).toBe(401);

    // The sign-in form: CSRF-protected, cookies HttpOnly and SameSite.
    const noToken = await anon.post('/login', { username: 'alice', password: 'alice-pw' });
    expect(noToken.status).toBe(403);
    expect(anon.cookies.has('prov_session')).toBe(false);
    const wrong = await anon.login('alice', 'nope');
    expect(wrong.status).toBe(401);
    expect(wrong.text).toContain('Wrong user name or password.');
    expect(anon.cookies.has('prov_session')).toBe(false);
    const unknown = await anon.login('nobody', 'alice-pw');
    expect(unknown.status).toBe(401);

    // Five wrong passwords for one name from one address, and then even the right one waits.
    for (let i = 0; i < 5; i++) expect((await anon.login('bob', `guess-${i}`)).status).toBe(401);
    const limited = await anon.login('bob', 'bob-pw');
    expect(limited.status).toBe(429);
    expect(Number(limited.headers['retry-after'])).toBeGreaterThan(0);
    expect(limited.text).toContain('Too many failed sign-ins');
    expect(anon.cookies.has('prov_session')).toBe(false);

    // A viewer looks and may not act.
    const viewer = new HttpClient(base);
    const signedIn = await viewer.login('victor', 'victor-pw');
    expect(signedIn.status).toBe(303);
    const cookie = signedIn.setCookies.find((c) => c.startsWith('prov_session='))!;
    expect(cookie).toMatch(/HttpOnly/i);
    expect(cookie).toMatch(/SameSite=Strict/i);
    expect(cookie).not.toMatch(/Secure/i);
    expect((await viewer.get('/')).status).toBe(200);
    expect((await viewer.get('/tenants/lincoln')).text).toContain('lincoln district');
    expect((await viewer.get('/tenants/lincoln/run')).status).toBe(403);
    const viewerToken = await viewer.csrf('/tenants/lincoln'); // the sign-out form's
    const refused = await viewer.post('/tenants/lincoln/run', { _csrf: viewerToken });
    expect(refused.status).toBe(403);
    expect(refused.text).toContain('victor is a viewer');

    // An operator acts only with the form's token.
    const alice = new HttpClient(base);
    expect((await alice.login('alice', 'alice-pw')).status).toBe(303);
    expect((await alice.post('/tenants/lincoln/run', {})).status).toBe(403);
    expect((await alice.post('/tenants/lincoln/run', { _csrf: viewerToken })).status).toBe(403);
    expect(world.query('SELECT * FROM triggers')).toEqual([]);
    const run = await alice.post('/tenants/lincoln/run', { _csrf: await alice.csrf('/tenants/lincoln/run') });
    expect(run.status).toBe(303);
    expect(run.headers.location).toMatch(/^\/tenants\/lincoln\/triggers\/\d+$/);
    expect(world.query('SELECT requested_by FROM triggers')).toEqual([{ requested_by: 'console:alice' }]);
    expect(world.query('SELECT actor, action, tenant, result FROM audit')).toEqual([{ actor: 'console:alice', action: 'run now', tenant: 'lincoln', result: 'requested' }]);

    // Signing out ends the session everywhere (it is in the store).
    const copy = new HttpClient(base);
    copy.cookies.set('prov_session', alice.cookies.get('prov_session')!);
    expect((await copy.get('/')).status).toBe(200);
    expect((await alice.post('/logout', { _csrf: await alice.csrf('/') })).status).toBe(303);
    expect((await copy.get('/')).status).toBe(303);
  });

  it("believes a proxy's user header only from a trusted address, with Secure cookies behind its TLS", async () => {
    await startDaemon();
    const stranger = new HttpClient(base, { localAddress: '127.0.0.2', headers: { 'x-forwarded-user': 'mallory' } });
    const denied = await stranger.get('/');
    expect(denied.status).toBe(303);
    expect(denied.headers.location).toContain('/login');

    const proxied = new HttpClient(base, { headers: { 'x-forwarded-user': 'pat@vendor.example', 'x-forwarded-proto': 'https' } });
    const page = await proxied.get('/');
    expect(page.status).toBe(200);
    expect(page.text).toContain('pat@vendor.example');
    expect(page.setCookies.find((c) => c.startsWith('prov_csrf='))).toMatch(/Secure/);
    // The proxy's users get proxyRole (viewer here).
    expect((await proxied.post('/tenants/lincoln/run', { _csrf: proxied.cookies.get('prov_csrf')! })).status).toBe(403);

    // Signing in with a password through the TLS proxy: the session cookie is Secure.
    const tls = new HttpClient(base, { headers: { 'x-forwarded-proto': 'https' } });
    const r = await tls.login('alice', 'alice-pw');
    expect(r.status).toBe(303);
    expect(r.setCookies.find((c) => c.startsWith('prov_session='))).toMatch(/Secure/);
    // The same header from a stranger does not make a cookie Secure (nor is believed).
    const plain = new HttpClient(base, { localAddress: '127.0.0.2', headers: { 'x-forwarded-proto': 'https' } });
    expect((await plain.login('alice', 'alice-pw')).setCookies.find((c) => c.startsWith('prov_session='))).not.toMatch(/Secure/);
  });

  it('works the same on every daemon of a cluster: a session made on one is good on the other, and their metrics agree', async () => {
    world.putEpoch('lincoln', '20240101-020000', { 'users.csv': csv(HEADER, 'u1,Ada,Lovelace,ada@lincoln.example,teacher,100,1') });
    expect((await world.cli(['run', '--tenant', 'lincoln', '--now'])).code).toBe(0);
    await startDaemon();
    // The second daemon reads the same configuration with another port (it is read once, at start).
    const other = await freePort();
    world.set('http', { ...settings, listen: `127.0.0.1:${other}` });
    const second = spawnDaemon(world);
    try {
      const otherBase = `http://127.0.0.1:${other}`;
      await waitFor('the second daemon', async () => (await new HttpClient(otherBase).get('/readyz').catch(() => null))?.status === 200, 20_000, 100);
      const alice = new HttpClient(base);
      expect((await alice.login('alice', 'alice-pw')).status).toBe(303);
      const elsewhere = new HttpClient(otherBase);
      elsewhere.cookies.set('prov_session', alice.cookies.get('prov_session')!);
      const page = await elsewhere.get('/tenants/lincoln');
      expect(page.status).toBe(200);
      expect(page.text).toContain('alice');
      // A form of one daemon's page is accepted by the other.
      const run = await elsewhere.post('/tenants/lincoln/run', { _csrf: await alice.csrf('/tenants/lincoln/run') });
      expect(run.status).toBe(303);
      const storeBacked = (text: string) =>
        parsePrometheus(text)
          .samples.filter((x) => /^provisioner_(runs|imports|rows)_total$|^provisioner_mail_queue_depth$|^provisioner_tenant_last_success/.test(x.name))
          .map((x) => `${x.name}${JSON.stringify(x.labels)} ${x.value}`)
          .sort();
      const [a, b] = await Promise.all([new HttpClient(base).get('/metrics'), new HttpClient(otherBase).get('/metrics')]);
      expect(storeBacked(a.text).length).toBeGreaterThan(10);
      expect(storeBacked(b.text)).toEqual(storeBacked(a.text));
    } finally {
      await second.stop('SIGKILL');
    }
  });

  it('resends a report as a copy, after confirmation, audited', async () => {
    world.putEpoch('lincoln', '20240101-020000', { 'users.csv': csv(HEADER, 'u1,Ada,Lovelace,not-an-email,teacher,100,1') });
    expect((await world.cli(['run', '--tenant', 'lincoln', '--now'])).code).toBe(1);
    await startDaemon();
    const [original] = world.query<{ id: number; subject: string }>('SELECT id, subject FROM mail_queue');
    const alice = new HttpClient(base);
    await alice.login('alice', 'alice-pw');
    const tenantPage = await alice.get('/tenants/lincoln');
    expect(tenantPage.text).toContain(`/tenants/lincoln/mail/${original.id}/resend`);
    const confirm = await alice.get(`/tenants/lincoln/mail/${original.id}/resend`);
    expect(confirm.status).toBe(200);
    expect(confirm.text).toContain('it@lincoln.example');
    const done = await alice.post(`/tenants/lincoln/mail/${original.id}/resend`, { _csrf: await alice.csrf(`/tenants/lincoln/mail/${original.id}/resend`) });
    expect(done.status).toBe(200);
    expect(done.text).toMatch(/was queued again as message \d+/);
    const queued = world.query<{ subject: string; dedupe_key: string }>('SELECT subject, dedupe_key FROM mail_queue ORDER BY id');
    expect(queued).toHaveLength(2);
    expect(queued[1].subject).toBe(original.subject);
    expect(world.query('SELECT actor, action, target, result FROM audit')).toEqual([{ actor: 'console:alice', action: 'resend', target: `mail ${original.id}`, result: 'queued' }]);
    // Another tenant's message is not this tenant's to resend.
    expect((await alice.get(`/tenants/nope/mail/${original.id}/resend`)).status).toBe(404);
  });

  it('stops at start-up, exit 2, when its port is taken', async () => {
    const taken = net.createServer();
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
    try {
      const port = (taken.address() as net.AddressInfo).port;
      world.set('http', { ...settings, listen: `127.0.0.1:${port}` });
      daemon = spawnDaemon(world);
      expect(await daemon.exited).toBe(2);
      expect(daemon.output()).toContain(`http.listen: cannot listen on 127.0.0.1:${port} (EADDRINUSE: something else listens there)`);
    } finally {
      await new Promise((r) => taken.close(r));
    }
  });

  it('escapes whatever the data holds', async () => {
    world.putEpoch('lincoln', '20240101-020000', { 'users.csv': csv(HEADER, 'u1,<script>alert(1)</script>,"<img src=x onerror=alert(2)>",x1@lincoln.example,teacher,100,1') });
    expect((await world.cli(['run', '--tenant', 'lincoln', '--now'])).code).toBe(0);
    await startDaemon();
    const alice = new HttpClient(base);
    await alice.login('alice', 'alice-pw');
    for (const path of ['/tenants/lincoln/users?q=script', '/tenants/lincoln/users/u1']) {
      const page = await alice.get(path);
      expect(page.status).toBe(200);
      expect(page.text).toContain('&lt;script&gt;alert(1)&lt;/script&gt;');
      expect(page.text).not.toContain('<script>');
      expect(page.text).not.toContain('<img src=x');
    }
    expect((await alice.get('/tenants/nope')).status).toBe(404);
    expect((await alice.get('/tenants/lincoln/imports/999999')).status).toBe(404);
  });
});

describe('readiness', () => {
  it('is 503 with the reason while the scheduler is not running or the store cannot be reached; health stays 200', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'provisioner-ready-'));
    try {
      const config = parseConfig(
        `database: ./p.db\nhttp: { listen: "127.0.0.1:0" }\ntenants:\n  a:\n    sftp: { host: h, username: u, password: p }\n    files: { users.csv: samegoal-users }\n    notify: { when: never }\n`,
        path.join(dir, 'config.yaml'),
        {},
      );
      const store = await openStore(config.database);
      let ready = false;
      const server = new HttpServer({
        config, store, log: silentLogger(),
        daemon: { get isReady() { return ready; }, exclusive: (_t, fn) => fn() },
        runDeps: () => { throw new Error('not used'); },
      });
      await server.start();
      await server.start();
      const client = new HttpClient(`http://127.0.0.1:${server.address!.port}`);
      const starting = await client.get('/readyz');
      expect(starting.status).toBe(503);
      expect(starting.text).toBe('not ready: the scheduler is not running (starting up or stopping)\n');
      ready = true;
      expect((await client.get('/readyz')).status).toBe(200);
      await store.close();
      const gone = await client.get('/readyz');
      expect(gone.status).toBe(503);
      expect(gone.text).toContain('the sqlite store is not reachable');
      expect((await client.get('/healthz')).status).toBe(200);
      expect((await client.get('/metrics')).status).toBe(503);
      await server.stop();
      await server.stop();
      await expect(client.get('/healthz')).rejects.toThrow();
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('hash-password', () => {
  it('reads the password on standard input and prints a hash an account signs in with', async () => {
    const r = spawnSync(process.execPath, [CLI, 'hash-password'], { input: 'correct horse battery\n', encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    const hash = r.stdout.trim();
    expect(hash).toMatch(/^\$scrypt\$ln=14,r=8,p=1\$[A-Za-z0-9+/]+\$[A-Za-z0-9+/]+$/);
    expect(await verifyPassword('correct horse battery', hash)).toBe(true);
    expect(await verifyPassword('correct horse', hash)).toBe(false);
    const empty = spawnSync(process.execPath, [CLI, 'hash-password'], { input: '', encoding: 'utf8' });
    expect(empty.status).toBe(2);
    expect(empty.stderr).toContain('no password on standard input');
  });
});
