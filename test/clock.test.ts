// Every lease and timestamp by the database's clock, whatever the worker's clock says: a worker
// whose clock is two hours off (here: this process's Date, moved; PostgreSQL keeps the real time)
// still sends due mail at once and retries it on time, writes a claim file whose lease others can
// trust, keeps a live worker's claim file, waits for a loose file that is still being written,
// and records when an import started on the same clock as when it finished. (SQLite is the
// worker's own clock: there is nothing to disagree with.)
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { Config, TenantConfig } from '../src/config.js';
import { createLogger } from '../src/log.js';
import { deliverQueuedMail } from '../src/mail/delivery.js';
import type { RemoteEntry } from '../src/sftp/client.js';
import { openStore } from '../src/store/open.js';
import { emptyCounts, type Store } from '../src/store/types.js';
import { abandonedClaims, writeClaimFile } from '../src/worker/claims.js';
import type { RunContext } from '../src/worker/context.js';
import { checkSettled } from '../src/worker/settle.js';
import { availableStores, createPgDatabase } from './harness/stores.js';
import { startTestSmtpServer, type TestSmtpServer } from './harness/smtp-server.js';

const HOURS_2 = 2 * 3600_000;

describe.skipIf(!availableStores().includes('postgres'))('a worker whose clock is off, on PostgreSQL', () => {
  let db: { url: string; drop(): Promise<void> };
  let store: Store;
  let dir: string;
  let smtp: TestSmtpServer | undefined;

  beforeEach(async () => {
    db = await createPgDatabase();
    store = await openStore(db.url);
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'provisioner-clock-'));
  });
  afterEach(async () => {
    vi.useRealTimers();
    await smtp?.stop();
    smtp = undefined;
    await store.close();
    await db.drop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  /** From here on this process's Date is `ms` off (and stands still); timers and the database are not. */
  const skew = (ms: number) => {
    const real = Date.now();
    vi.useFakeTimers({ toFake: ['Date'] });
    vi.setSystemTime(real + ms);
  };
  /** The database's time (read before the skew). */
  const dbNow = async () => (await store.now()).getTime();
  const near = (at: string | number, expected: number, slackMs = 10_000) => {
    const t = typeof at === 'number' ? at : Date.parse(at);
    expect(Math.abs(t - expected), `${new Date(t).toISOString()} vs ${new Date(expected).toISOString()}`).toBeLessThan(slackMs);
  };

  const config = (smtpUrl?: string): Config =>
    ({
      source: '<test>', database: db.url, workDir: path.join(dir, 'work'), concurrency: 1, discoveryConcurrency: 1, leaseSeconds: 60, settleRecheckSeconds: 0,
      limits: { maxRecordBytes: 1 << 20, parseThreads: null }, passwordDigest: {}, log: { level: 'silent', format: 'json' },
      mail: { from: 'Provisioning <provisioning@vendor.example>', smtp: smtpUrl, outbox: path.join(dir, 'outbox'), operators: [], timeoutSeconds: 5, retrySeconds: 30 },
      tenants: [],
    }) as Config;
  const mail = (key: string) => ({ tenant: 'lincoln', dedupeKey: key, from: 'p@vendor.example', to: ['it@lincoln.example'], subject: 's', text: 't', html: 'h', attachments: [] });

  it('sends due mail at once though the worker runs two hours late, and retries it 30 s later by the database', async () => {
    smtp = await startTestSmtpServer();
    const refused = await store.mail.enqueue(mail('a'));
    const sent = await store.mail.enqueue(mail('b'));
    smtp.rejectNext(1); // the first message tried (the oldest) is refused for now
    const t0 = await dbNow();
    skew(-HOURS_2);
    // By its own clock nothing would be due for two hours.
    expect(await deliverQueuedMail(store, config(smtp.url))).toEqual({ sent: 1, failed: 1, pending: 1 });
    expect(await store.mail.get(sent)).toMatchObject({ status: 'sent' });
    const row = (await store.mail.get(refused))!;
    expect(row).toMatchObject({ status: 'queued', attempts: 1 });
    near(row.nextAttemptAt, t0 + 30_000);
  });

  it('claims a message for sending with a lease from the database, not two hours ahead', async () => {
    const id = await store.mail.enqueue(mail('a'));
    const t0 = await dbNow();
    skew(HOURS_2);
    expect(await deliverQueuedMail(store, config())).toEqual({ sent: 1, failed: 0, pending: 0 });
    // The lease taken for the send (what keeps other workers off it) stays on the sent row.
    near((await store.mail.get(id))!.nextAttemptAt, t0 + 600_000);
  });

  it('writes the claim file with the lease by the database, and leaves a live claim file alone though the worker runs two hours early', async () => {
    const t0 = await dbNow();
    skew(HOURS_2);
    const written = new Map<string, string>();
    const ctx = fakeRun(store, config(), {
      list: async (p: string) => (p.endsWith('.processing') ? [{ name: '20240101-020000', type: 'dir', size: 0, mtime: 0 }] : []),
      readText: async (p: string) => {
        if (!p.endsWith('.provisioner-claim.json')) throw new Error('no such file');
        // Another machine's worker, its lease valid for 40 s more by the database.
        return JSON.stringify({ owner: 'elsewhere.example:4242:0badcafe', claimedAt: new Date(t0 - 20_000).toISOString(), expiresAt: new Date(t0 + 40_000).toISOString() });
      },
      write: async (p: string, data: string) => void written.set(p, data),
      rmdir: async () => {},
    });
    await writeClaimFile(ctx, '20240102-020000', '/upload/.processing/20240102-020000');
    const mine = JSON.parse(written.get('/upload/.processing/20240102-020000/.provisioner-claim.json')!) as { claimedAt: string; expiresAt: string };
    near(mine.claimedAt, t0);
    near(mine.expiresAt, t0 + 60_000);
    expect(await abandonedClaims(ctx)).toEqual([]);
  });

  it('lets a loose file settle though the worker runs two hours early', async () => {
    const t0 = await dbNow();
    skew(HOURS_2);
    const tenant = { id: 'lincoln', settleSeconds: 60 } as TenantConfig;
    const justWritten: RemoteEntry = { name: 'users_auto.csv', type: 'file', size: 10, mtime: t0 };
    const r = await checkSettled({ session: {} as never, store, tenant, recheckSeconds: 0 }, '/upload', [justWritten]);
    expect(r.ready).toEqual([]);
    expect(r.settling.map((s) => s.file)).toEqual(['users_auto.csv']);
    near(r.settling[0].takeAfter, t0 + 60_000);
  });

  it("dates a report by the database's clock", async () => {
    const t0 = await dbNow();
    skew(HOURS_2);
    const { id } = await store.outbox.record({
      tenant: 'lincoln', kind: 'epoch', dedupeKey: 'x', epoch: '20240101-020000', filed: true,
      payload: { status: 'applied', files: [], location: null, notes: [], staleUploads: [], operators: false, finishedAt: new Date().toISOString() },
    });
    near((await store.outbox.get(id))!.payload.finishedAt, t0);
  });

  it('records an import as started by the database clock, before it finished', async () => {
    const t0 = await dbNow();
    skew(HOURS_2);
    const id = await store.imports.recordUnapplied({
      runId: null, tenant: 'lincoln', epoch: '20240101-020000', file: 'users.csv', kind: null, status: 'rejected', message: 'x',
      contentSha1: null, counts: emptyCounts(), actor: null, startedAt: new Date(Date.now() - 5000).toISOString(),
    });
    const row = (await store.imports.get(id))!;
    near(row.startedAt, t0 - 5000, 2000);
    expect(Date.parse(row.startedAt)).toBeLessThanOrEqual(Date.parse(row.finishedAt));
  });
});

function fakeRun(store: Store, config: Config, session: Record<string, unknown>): RunContext {
  const tenant = { id: 'lincoln', paths: { upload: '/upload' } } as TenantConfig;
  return {
    deps: { store, config, kinds: null as never, log: createLogger(config.log), hasher: null, digestKey: null },
    tenant, opts: { reason: 'now', force: false, dryRun: false }, session: session as never, runId: 1, workDir: '', log: createLogger(config.log),
    result: { tenant: 'lincoln', runId: 1, status: 'nothing', message: null, epochs: [], settling: [], newlyStale: [], skipped: [] }, claimed: new Map(),
  };
}
