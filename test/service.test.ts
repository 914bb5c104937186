// The daemon's parts in-process: the run queue's rules, and the Daemon class started and
// stopped from a test (idempotent), against a real SFTP server and real SQLite.
import { afterEach, describe, expect, it } from 'vitest';
import { openApp } from '../src/app.js';
import type { TenantConfig } from '../src/config.js';
import { Daemon } from '../src/service/daemon.js';
import { RunQueue, type Job } from '../src/service/run-queue.js';
import { Semaphore } from '../src/worker/runner.js';
import { availableStores } from './harness/stores.js';
import { nextRunOf, Scheduler } from '../src/service/schedule.js';
import { liveDaemons } from '../src/service/status.js';
import { waitFor } from './harness/daemon.js';
import { csv, World } from './harness/world.js';

const tenant = (id: string, over: Partial<TenantConfig> = {}) => ({ id, enabled: true, schedule: '0 2 * * *', timezone: 'UTC', ...over }) as TenantConfig;

describe('run queue', () => {
  it('runs at most `limit` tenants at once, never one tenant twice, and merges waiting requests', async () => {
    const started: string[] = [];
    const release = new Map<string, () => void>();
    let peak = 0;
    let active = 0;
    const q = new RunQueue(2, (job: Job) => {
      started.push(`${job.tenant.id}:${job.reason}:${job.triggers.join(',')}`);
      peak = Math.max(peak, ++active);
      return new Promise<void>((resolve) => release.set(job.tenant.id, () => { active--; resolve(); }));
    });
    expect(q.add({ tenant: tenant('a'), reason: 'schedule', triggers: [] })).toBe('queued');
    expect(q.add({ tenant: tenant('b'), reason: 'schedule', triggers: [] })).toBe('queued');
    expect(q.add({ tenant: tenant('c'), reason: 'schedule', triggers: [] })).toBe('queued');
    expect(q.add({ tenant: tenant('a'), reason: 'schedule', triggers: [] })).toBe('behind'); // a runs already: a follow-up run, never lost
    expect(q.add({ tenant: tenant('a'), reason: 'trigger', triggers: [7] })).toBe('merged');
    expect(q.add({ tenant: tenant('a'), reason: 'trigger', triggers: [8] })).toBe('merged');
    expect(q.add({ tenant: tenant('c'), reason: 'trigger', triggers: [9] })).toBe('merged'); // joins c's waiting run
    expect(started).toEqual(['a:schedule:', 'b:schedule:']);
    release.get('a')!();
    await waitFor('c to start', () => started.length === 3);
    // c has waited longest, so it takes a's place; a's follow-up waits for the next free lane (limit 2).
    expect(started[2]).toBe('c:trigger:9');
    release.get('b')!();
    await waitFor('a again', () => started.length === 4);
    expect(started[3]).toBe('a:trigger:7,8');
    expect(peak).toBe(2);
    expect(q.close()).toEqual([]);
    expect(q.add({ tenant: tenant('d'), reason: 'schedule', triggers: [] })).toBe('closed');
    release.get('c')!();
    release.get('a')!();
    await q.idle();
  });

  it('starts a run that holds a processing slot first, and a merged request hands its slot over or back', async () => {
    const started: string[] = [];
    const done = new Map<string, () => void>();
    const q = new RunQueue(1, (job: Job) => {
      started.push(`${job.tenant.id}:${job.slot ? 'slot' : 'none'}`);
      return new Promise<void>((resolve) => done.set(job.tenant.id, resolve));
    });
    const slots = new Semaphore(2);
    q.add({ tenant: tenant('a'), reason: 'schedule', triggers: [] });
    q.add({ tenant: tenant('b'), reason: 'schedule', triggers: [] });
    q.add({ tenant: tenant('c'), reason: 'trigger', triggers: [1], slot: slots.tryAcquire()! });
    expect(q.add({ tenant: tenant('b'), reason: 'trigger', triggers: [2], slot: slots.tryAcquire()! })).toBe('merged'); // b waited without one: takes it
    expect(slots.tryAcquire()).toBeNull(); // both slots promised
    let handedBack = false;
    expect(q.add({ tenant: tenant('c'), reason: 'trigger', triggers: [3], slot: () => (handedBack = true) })).toBe('merged'); // c has one already
    expect(handedBack).toBe(true);
    done.get('a')!();
    await waitFor('the next run', () => started.length === 2);
    expect(started).toEqual(['a:none', 'b:slot']); // b and c hold slots; b asked first
    q.close().forEach((j) => j.slot?.());
    done.get('b')!();
    await q.idle();
  });

  it('hands a released slot to the one waiting for it, never to tryAcquire in between', async () => {
    const s = new Semaphore(1);
    const first = s.tryAcquire()!;
    const waiting = s.acquire();
    first();
    expect(s.tryAcquire()).toBeNull();
    (await waiting)();
    expect(s.tryAcquire()).not.toBeNull();
  });

  it('computes the next run in the tenant time zone', () => {
    const next = nextRunOf(tenant('a', { schedule: '30 6 * * *', timezone: 'Asia/Kolkata' }))!;
    expect(next.toISOString()).toMatch(/T01:00:00\.000Z$/); // 06:30 IST is 01:00 UTC
    expect(nextRunOf(tenant('a', { enabled: false }))).toBeNull();
  });

  it('never loses a tick that is noticed late: it is due once, with how late it is', () => {
    const s = new Scheduler([tenant('a', { schedule: '* * * * *' })]);
    const first = s.nextRun('a')!;
    expect(s.due(new Date(first.getTime() - 1))).toEqual([]);
    // The process was busy for three minutes: the tick runs once, late, and the next is after now.
    const late = new Date(first.getTime() + 3 * 60_000 + 500);
    const due = s.due(late);
    expect(due.map((d) => [d.tenant.id, d.dueAt.toISOString(), d.lateMs])).toEqual([['a', first.toISOString(), 3 * 60_000 + 500]]);
    expect(s.due(late)).toEqual([]);
    expect(s.nextRun('a')!.getTime()).toBeGreaterThan(late.getTime());
  });
});

it('gives a tick whose claim failed back: due again at once, once, however late', () => {
  const s = new Scheduler([tenant('a', { schedule: '* * * * *' })]);
  const first = s.nextRun('a')!;
  const [due] = s.due(new Date(first.getTime() + 10));
  s.retry(due);
  expect(s.nextRun('a')!.getTime()).toBe(first.getTime());
  const again = s.due(new Date(first.getTime() + 2 * 60_000 + 10)); // two more ticks passed meanwhile: still one run
  expect(again.map((d) => [d.dueAt.toISOString(), d.lateMs])).toEqual([[first.toISOString(), 2 * 60_000 + 10]]);
  expect(s.due(new Date(first.getTime() + 2 * 60_000 + 20))).toEqual([]);
});

describe('Daemon in-process', () => {
  let world: World | undefined;
  afterEach(async () => {
    await world?.stop(false);
    world = undefined;
  });

  it('starts and stops idempotently, and answers a trigger', async () => {
    world = await World.start('embedded', 'daemon-in-process');
    world.addTenant('lincoln', { schedule: '0 0 1 1 *' });
    world.putEpoch('lincoln', '20240101-020000', { 'users.csv': csv('user_id,first_name,last_name,email', 'u1,Ada,Lovelace,ada@lincoln.example') });
    const app = await openApp(world.configPath, { logLevel: 'silent' });
    try {
      const daemon = new Daemon(app, { triggerPollMs: 100 });
      await Promise.all([daemon.start(), daemon.start()]);
      expect(daemon.isRunning).toBe(true);
      expect((await liveDaemons(app.store)).map((d) => d.tenants)).toEqual([['lincoln']]);
      expect(daemon.nextRuns()[0].nextRun?.toISOString()).toMatch(/-01-01T00:00:00\.000Z$/);
      const id = await app.store.triggers.request('lincoln', 'test@here');
      await waitFor('the trigger to finish', async () => (await app.store.triggers.get(id))?.finishedAt, 15_000);
      expect(await app.store.triggers.get(id)).toMatchObject({ status: 'ok', requestedBy: 'test@here' });
      expect(world.exists('/lincoln/upload/bak/20240101-020000/result.json')).toBe(true);
      await Promise.all([daemon.stop(), daemon.stop()]);
      await daemon.stop();
      expect(daemon.isRunning).toBe(false);
      expect(await liveDaemons(app.store)).toEqual([]);
      await daemon.start(); // a stopped daemon stays stopped
      expect(daemon.isRunning).toBe(false);
    } finally {
      await app.close();
    }
  });

  it.skipIf(!availableStores().includes('postgres'))('hears of a trigger at once on PostgreSQL (LISTEN), without waiting for the poll', async () => {
    world = await World.start('embedded', 'daemon-listen', { store: 'postgres' });
    world.addTenant('lincoln', { schedule: '0 0 1 1 *' });
    const app = await openApp(world.configPath, { logLevel: 'silent' });
    try {
      const daemon = new Daemon(app, { triggerPollMs: 600_000 }); // the poll never comes in this test
      await daemon.start();
      try {
        const id = await app.store.triggers.request('lincoln', 'test@here');
        const t0 = Date.now();
        await waitFor('the trigger to be taken', async () => (await app.store.triggers.get(id))?.pickedUpAt, 5000, 20);
        expect(Date.now() - t0).toBeLessThan(2000);
      } finally {
        await daemon.stop();
      }
    } finally {
      await app.close();
    }
  });

  it.each(availableStores())('forgets schedule ticks older than a day when it starts (%s)', async (store) => {
    world = await World.start('embedded', `daemon-prune-${store}`, { store });
    world.addTenant('lincoln', { schedule: '0 0 1 1 *' });
    const app = await openApp(world.configPath, { logLevel: 'silent' });
    try {
      const now = await app.store.now();
      const old = new Date(now.getTime() - 25 * 3600_000).toISOString();
      const recent = new Date(now.getTime() - 3600_000).toISOString();
      await app.store.schedule.claimTick('lincoln', old, 'someone');
      await app.store.schedule.claimTick('lincoln', recent, 'someone');
      const daemon = new Daemon(app, { triggerPollMs: 100 });
      await daemon.start();
      try {
        await waitFor('the old tick to go', () => world!.query('SELECT * FROM schedule_ticks').length === 1, 10_000);
        expect(world.query<{ due_at: string }>('SELECT due_at FROM schedule_ticks').map((r) => new Date(r.due_at).toISOString())).toEqual([recent]);
      } finally {
        await daemon.stop();
      }
    } finally {
      await app.close();
    }
  });

  it('runs a tick whose claim failed (the store briefly unreachable) a moment later instead of a minute later', async () => {
    world = await World.start('embedded', 'daemon-claim-fails');
    // Once a minute, a few seconds from now: without a retry the next chance would be a minute away.
    const second = new Date(Date.now() + 4000).getUTCSeconds();
    world.addTenant('lincoln', { schedule: `${second} * * * * *` });
    world.putEpoch('lincoln', '20240101-020000', { 'users.csv': csv('user_id,first_name,last_name,email', 'u1,Ada,Lovelace,ada@lincoln.example') });
    const app = await openApp(world.configPath, { logLevel: 'silent' });
    try {
      // Claims work (the store's tables are there), then the first one of the tick fails.
      expect(await app.store.schedule.claimTick('x', '2000-01-01T00:00:00.000Z', 'me')).toBe(true);
      expect(await app.store.schedule.claimTick('x', '2000-01-01T00:00:00.000Z', 'me')).toBe(true); // asked again: still ours
      expect(await app.store.schedule.claimTick('x', '2000-01-01T00:00:00.000Z', 'other')).toBe(false);
      const claim = app.store.schedule.claimTick.bind(app.store.schedule);
      const calls: string[] = [];
      app.store.schedule.claimTick = async (tenantId, dueAt, owner) => {
        calls.push(dueAt);
        if (calls.length === 1) throw new Error('connection terminated unexpectedly');
        return claim(tenantId, dueAt, owner);
      };
      const daemon = new Daemon(app, { triggerPollMs: 100 });
      await daemon.start();
      try {
        await waitFor('the tick to run', () => world!.exists('/lincoln/upload/bak/20240101-020000/result.json'), 15_000);
        expect(calls.length).toBeGreaterThanOrEqual(2);
        expect(new Set(calls).size).toBe(1); // the same tick, claimed again
      } finally {
        await daemon.stop();
      }
    } finally {
      await app.close();
    }
  });
});
