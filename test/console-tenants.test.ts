// The console's list of tenants with ten thousand of them configured, on both stores: 50 a page
// with a pager, a search across all of them (ids and names), the overdue ones counted across all
// and listed on their own, a user lookup by typed tenant id, and a page's work bounded: a fixed
// number of store calls, whatever the number of tenants (the list once asked ten per tenant).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { parseConfig } from '../src/config.js';
import { HttpServer } from '../src/http/server.js';
import { hashPassword } from '../src/import/passwords.js';
import { silentLogger } from '../src/log.js';
import { openStore } from '../src/store/open.js';
import { emptyCounts, type Store } from '../src/store/types.js';
import { HttpClient } from './harness/http.js';
import { availableStores, createPgDatabase } from './harness/stores.js';

const TENANTS = 10_000;
const id = (i: number) => `t${String(i).padStart(5, '0')}`;
/** Two tenants expect a delivery every 0.36 s: once they have run, they are overdue. */
const WATCHED = [3, 5000];

function configYaml(database: string, hash: string): string {
  const lines = [`database: ${JSON.stringify(database)}`, `http: { listen: "127.0.0.1:0", users: { alice: { passwordHash: ${JSON.stringify(hash)}, role: operator } } }`, 'tenants:'];
  for (let i = 0; i < TENANTS; i++) {
    const name = i === 7777 ? 'Springfield Unified' : `District ${i}`;
    const expect = WATCHED.includes(i) ? ', expectEveryHours: 0.0001' : '';
    lines.push(`  ${id(i)}: { name: "${name}", schedule: "0 2 * * *"${expect}, sftp: { host: h, username: u, password: p }, files: { users.csv: samegoal-users }, notify: { when: never } }`);
  }
  return lines.join('\n') + '\n';
}

/** The store, with every call to it counted. */
function counted(store: Store): { store: Store; calls: () => number; reset(): void } {
  let n = 0;
  const wrap = (target: object): object =>
    new Proxy(target, {
      get(t, prop) {
        const v = Reflect.get(t, prop, t) as unknown;
        if (typeof v === 'function') return (...args: unknown[]) => (n++, (v as (...a: unknown[]) => unknown).apply(t, args));
        return v && typeof v === 'object' && prop !== 'connection' ? wrap(v) : v;
      },
    });
  return { store: wrap(store) as Store, calls: () => n, reset: () => (n = 0) };
}

describe.each(availableStores())('the tenants page with 10,000 tenants, %s', (kind) => {
  let dir: string;
  let store: Store;
  let server: HttpServer;
  let drop: (() => Promise<void>) | undefined;
  let counter: ReturnType<typeof counted>;

  beforeEach(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'provisioner-tenants-'));
    let database = path.join(dir, 'p.db');
    if (kind === 'postgres') {
      const pg = await createPgDatabase();
      database = pg.url;
      drop = pg.drop;
    }
    const config = parseConfig(configYaml(database, await hashPassword('alice-pw')), path.join(dir, 'config.yaml'), {});
    store = await openStore(config.database);
    counter = counted(store);
    server = new HttpServer({
      config, store: counter.store, log: silentLogger(),
      daemon: { isReady: true, exclusive: (_t, fn) => fn() },
      runDeps: () => { throw new Error('not used'); },
    });
    await server.start();
  });
  afterEach(async () => {
    await server?.stop();
    await store?.close();
    await drop?.();
    drop = undefined;
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('shows 50 a page with a pager, searches all of them, counts the overdue ones across all, and asks the store a fixed number of times', async () => {
    // Something to show for the first page's tenants: a failed run, a held and a stale upload, mail.
    const run = await store.runs.start({ tenant: id(1), reason: 'schedule', owner: 'test', dryRun: false });
    await store.runs.finish(run, 'failed', 'cannot connect to sftp.example:22');
    await store.imports.recordUnapplied({
      runId: run, tenant: id(2), epoch: '20240101-020000', file: 'users.csv', kind: 'samegoal-users', status: 'held', message: 'held: would deactivate 9 of 10',
      contentSha1: null, counts: { ...emptyCounts(), rows: 1, deactivated: 9 }, actor: 'test', startedAt: new Date().toISOString(),
    });
    await store.outbox.recordStale(id(2), ['20240102-020000'], {
      tenant: id(2), kind: 'stale', dedupeKey: 'stale:t00002', epoch: null, filed: true,
      payload: { status: 'failed', files: [], location: null, notes: [], staleUploads: ['20240102-020000'], operators: false, finishedAt: new Date().toISOString() },
    });
    for (const n of [1, 2]) await store.mail.enqueue({ tenant: id(4), dedupeKey: `m${n}`, from: 'a@vendor.example', to: ['it@example.org'], subject: `report ${n}`, text: 'x', html: 'x', attachments: [] });
    for (const i of WATCHED) await store.runs.finish(await store.runs.start({ tenant: id(i), reason: 'schedule', owner: 'test', dryRun: false }), 'nothing', null);
    await new Promise((r) => setTimeout(r, 500)); // the watched feeds fall overdue

    const client = new HttpClient(`http://127.0.0.1:${server.address!.port}`);
    expect((await client.login('alice', 'alice-pw')).status).toBe(303);
    // Pages with their entities read as a browser reads them (handlebars writes = as &#x3D;).
    const alice = {
      get: async (p: string) => {
        const r = await client.get(p);
        return { ...r, text: r.text.replace(/&#x3D;/g, '=').replace(/&quot;/g, '"').replace(/&amp;/g, '&') };
      },
    };
    counter.reset();
    const home = await alice.get('/');
    expect(home.status).toBe(200);
    // A fixed number of store calls for the page (sessions included), not ten per tenant.
    expect(counter.calls()).toBeLessThanOrEqual(10);
    const rowsOf = (html: string) => [...html.matchAll(/<a href="\/tenants\/(t\d{5})"><strong>/g)].map((m) => m[1]);
    expect(rowsOf(home.text)).toEqual(Array.from({ length: 50 }, (_, i) => id(i)));
    expect(home.text).toContain('10000 configured');
    expect(home.text).toContain('1–50 of 10000 · page 1 of 200');
    expect(home.text).toContain('href="/?page=2" rel="next"');
    expect(home.text).not.toContain('rel="prev"');
    // The lookup offers the page's tenants, not ten thousand options.
    expect([...home.text.matchAll(/<option /g)]).toHaveLength(50);
    expect(home.text.length).toBeLessThan(100_000);
    // What the store said of the page's tenants.
    const row = (t: string) => home.text.slice(home.text.indexOf(`/tenants/${t}"`), home.text.indexOf('</tr>', home.text.indexOf(`/tenants/${t}"`)));
    expect(row(id(1))).toContain('<span class="badge bad">failed</span>');
    expect(row(id(1))).toContain('scheduled');
    expect(row(id(2))).toMatch(/<td><span class="badge warn">1<\/span><\/td>\s*<td><span class="badge warn">1<\/span><\/td>/); // held, stale
    expect(row(id(4))).toContain('<span class="badge warn">2</span>'); // mail queued
    expect(row(id(3))).toContain('overdue');
    expect(row(id(0))).toContain('never');

    // Overdue: counted across all ten thousand, and listed on their own.
    expect(home.text).toContain('<a class="badge warn" href="/?overdue=1">2 overdue</a>');
    const late = await alice.get('/?overdue=1');
    expect(rowsOf(late.text)).toEqual([id(3), id(5000)]);
    expect(late.text).toContain('Overdue feeds only: 2 of 10000.');

    // Other pages; past the last one shows the last one.
    counter.reset();
    const second = await alice.get('/?page=2');
    expect(counter.calls()).toBeLessThanOrEqual(10);
    expect(rowsOf(second.text)).toEqual(Array.from({ length: 50 }, (_, i) => id(50 + i)));
    expect(second.text).toContain('href="/" rel="prev"');
    expect(second.text).toContain('href="/?page=3" rel="next"');
    const beyond = await alice.get('/?page=999');
    expect(rowsOf(beyond.text)).toEqual(Array.from({ length: 50 }, (_, i) => id(9950 + i)));
    expect(beyond.text).toContain('page 200 of 200');
    expect(beyond.text).not.toContain('rel="next"');

    // Search: ids and names, case-insensitively, across every tenant, paged the same way.
    expect(rowsOf((await alice.get('/?q=SPRINGFIELD')).text)).toEqual([id(7777)]);
    const found = await alice.get('/?q=t0999');
    expect(rowsOf(found.text)).toEqual(Array.from({ length: 10 }, (_, i) => id(9990 + i)));
    expect(found.text).toContain('Matching “t0999”: 10 of 10000.');
    const many = await alice.get('/?q=district+1');
    expect(many.text).toContain('1–50 of 1111 · page 1 of 23');
    expect(many.text).toContain('href="/?q=district+1&page=2" rel="next"');
    expect((await alice.get('/?q=nowhere')).text).toContain('No tenant matches “nowhere”.');

    // The user lookup takes a typed tenant: its id, or the one tenant whose name holds the text.
    const byId = await alice.get('/users?tenant=t00042&q=ada');
    expect(byId.status).toBe(303);
    expect(byId.headers.location).toBe('/tenants/t00042/users?q=ada');
    expect((await alice.get('/users?tenant=springfield&q=ada')).headers.location).toBe('/tenants/t07777/users?q=ada');
    const vague = await alice.get('/users?tenant=t0999&q=ada');
    expect(vague.status).toBe(404);
    expect(vague.text).toContain('10 tenants match "t0999"');
  });
});
