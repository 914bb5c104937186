// The worker as a service: every tenant on its own cron schedule, tier-2 triggers picked up
// from SQLite within about a second, a bounded number of runs at once, queued mail retried
// until the mail server takes it, and a stop that finishes (or hands back) what it holds.
//
// Usable in-process (tests) as well as from `provisioner run`: start() and stop() are
// idempotent, and the daemon never closes the database it was given.
import type { ScheduledTask } from 'node-cron';
import type { Config, TenantConfig } from '../config.js';
import type { Db } from '../db/database.js';
import { errorMessage } from '../errors.js';
import type { KindRegistry } from '../import/kinds.js';
import type { Logger } from '../log.js';
import { ownerIsAlive, workerId } from '../worker/leases.js';
import { deliverMail, reporterFor } from '../worker/reporting.js';
import { runTenant, type TenantRunResult } from '../worker/run-tenant.js';
import { beat, HEARTBEAT_MS, liveDaemons, registerDaemon, unregisterDaemon } from './daemons.js';
import { RunQueue, type Job } from './run-queue.js';
import { RunThreads } from './run-thread.js';
import { nextRunOf, scheduleTask } from './schedule.js';
import { finishTriggers, pendingTriggers, pickUpTrigger, recoverOrphanedTriggers, releaseTriggers } from './triggers.js';

export interface DaemonDeps {
  config: Config;
  db: Db;
  kinds: KindRegistry;
  log: Logger;
}

export interface DaemonOptions {
  /** The tenants to serve (default: every enabled tenant). */
  tenants?: TenantConfig[];
  /** How often to look for triggers (default 1 s: "within seconds" for tier-2). */
  triggerPollMs?: number;
  heartbeatMs?: number;
  /** How often to retry queued mail (default: mail.retrySeconds, at most 60 s). */
  mailRetryMs?: number;
  /**
   * Run each tenant on a worker thread (`provisioner run` does). Off, runs share this thread:
   * fine for tests, but one large apply then stalls every other tenant's SFTP traffic.
   */
  threads?: boolean;
}

type State = 'new' | 'running' | 'stopping' | 'stopped';

export class Daemon {
  private state: State = 'new';
  private readonly served: Map<string, TenantConfig>;
  private readonly tasks = new Map<string, ScheduledTask>();
  private readonly timers: NodeJS.Timeout[] = [];
  private readonly abort = new AbortController();
  private readonly queue: RunQueue;
  private readonly threads: RunThreads | undefined;
  private readonly log: Logger;
  private starting: Promise<void> | undefined;
  private stopping: Promise<void> | undefined;
  private mailPass: Promise<void> | undefined;

  constructor(
    private readonly deps: DaemonDeps,
    private readonly opts: DaemonOptions = {},
  ) {
    const tenants = opts.tenants ?? deps.config.tenants.filter((t) => t.enabled);
    this.served = new Map(tenants.map((t) => [t.id, t]));
    this.log = deps.log.child({ component: 'daemon' });
    this.queue = new RunQueue(deps.config.concurrency, (job) => this.execute(job));
    const { config } = deps;
    this.threads = opts.threads
      ? new RunThreads(
          {
            config,
            logFormat: config.log.format === 'auto' ? (process.stderr.isTTY ? 'pretty' : 'json') : config.log.format,
            // Applying a large file holds SQLite's write lock for as long as it takes; the
            // other threads wait for it rather than fail. (Waiting past leaseSeconds lets the
            // tenant lock lapse; claims and the applied-once index still keep uploads safe.)
            busyTimeoutMs: 30 * 60_000,
          },
          this.log,
        )
      : undefined;
    // Mail bookkeeping waits for the lock too: "sent" must be recorded once the server took it.
    if (this.threads) deps.db.pragma('busy_timeout = 120000');
  }

  get isRunning(): boolean {
    return this.state === 'running';
  }

  /** Next scheduled run per served tenant. */
  nextRuns(): { tenant: string; nextRun: Date | null }[] {
    return [...this.served.values()].map((t) => ({ tenant: t.id, nextRun: nextRunOf(t, this.tasks.get(t.id)) }));
  }

  start(): Promise<void> {
    if (this.state === 'new') {
      this.state = 'running';
      this.starting = this.startUp();
    }
    return this.starting ?? Promise.resolve();
  }

  private async startUp(): Promise<void> {
    const { db, config } = this.deps;
    const others = liveDaemons(db).filter((d) => d.owner !== workerId);
    registerDaemon(db, [...this.served.keys()]);
    if (others.length) {
      this.log.warn(
        { others: others.map((d) => d.owner) },
        `another daemon is already running on this database (${others.map((d) => d.owner).join(', ')}); tenant locks keep runs apart, but one daemon is enough`,
      );
    }
    this.recoverFromCrashes();

    for (const tenant of this.served.values()) {
      const task = scheduleTask(tenant, () => this.enqueue(tenant, 'schedule', []), this.log);
      this.tasks.set(tenant.id, task);
      await task.start();
    }
    this.every(this.opts.triggerPollMs ?? 1000, () => this.pollTriggers());
    this.every(this.opts.heartbeatMs ?? HEARTBEAT_MS, () => this.unlessLocked(() => beat(db)));
    this.every(this.opts.mailRetryMs ?? Math.min(60, config.mail.retrySeconds ?? 30) * 1000, () => this.retryMail());

    const schedule = this.nextRuns().map(({ tenant, nextRun }) => {
      const t = this.served.get(tenant)!;
      return { tenant, schedule: t.schedule, timezone: t.timezone, nextRun: nextRun?.toISOString() ?? null };
    });
    this.log.info(
      { tenants: schedule, concurrency: config.concurrency },
      `daemon started: ${schedule.length} tenant(s), at most ${config.concurrency} run(s) at once; ` +
        schedule.map((s) => `${s.tenant} next at ${s.nextRun ?? 'never'} ("${s.schedule}" ${s.timezone})`).join('; '),
    );
    this.pollTriggers();
    this.retryMail();
  }

  /**
   * Stops taking work, lets the runs in hand finish (each file is one transaction; a run stops
   * between epochs) and hands untouched triggers back. Resolves when nothing is running.
   */
  stop(): Promise<void> {
    if (this.state === 'new') {
      this.state = 'stopped';
      return Promise.resolve();
    }
    this.stopping ??= this.shutDown();
    return this.stopping;
  }

  private async shutDown(): Promise<void> {
    this.state = 'stopping';
    await this.starting?.catch(() => {}); // a stop during start-up waits for it to finish
    const { db } = this.deps;
    for (const t of this.timers) clearTimeout(t);
    for (const task of this.tasks.values()) {
      await task.stop();
      await task.destroy();
    }
    this.tasks.clear();
    const unstarted = this.queue.close();
    this.safely('hand back triggers', () => releaseTriggers(db, unstarted.flatMap((j) => j.triggers)));
    if (this.queue.running) {
      this.log.info({ running: this.queue.running }, `stopping: waiting for ${this.queue.running} run(s) in hand to finish (a second signal exits at once)`);
    }
    this.abort.abort();
    this.threads?.abort();
    await this.queue.idle();
    await this.threads?.close();
    await this.mailPass;
    this.safely('unregister', () => unregisterDaemon(db));
    this.state = 'stopped';
    this.log.info('daemon stopped');
  }

  private enqueue(tenant: TenantConfig, reason: Job['reason'], triggers: number[]): void {
    const added = this.queue.add({ tenant, reason, triggers });
    if (added === 'skipped') this.log.debug({ tenant: tenant.id }, `${tenant.id} is still running; this scheduled run is skipped`);
    if (added === 'closed') this.safely('hand back triggers', () => releaseTriggers(this.deps.db, triggers));
  }

  private async execute(job: Job): Promise<void> {
    const { tenant } = job;
    const signal = this.abort.signal;
    // A trigger is an explicit request: wait for a `run --now` elsewhere rather than drop it.
    const opts = { reason: job.reason, waitForLockSeconds: job.reason === 'trigger' ? this.deps.config.leaseSeconds : 0 };
    let result: TenantRunResult;
    try {
      result = this.threads
        ? await this.threads.run(tenant.id, opts)
        : await runTenant({ ...this.deps, report: reporterFor(this.deps.config) }, tenant, { ...opts, force: false, dryRun: false, signal });
    } catch (err) {
      // runTenant records its own failures; this is the database itself failing.
      this.log.error({ tenant: tenant.id, err: errorMessage(err) }, `run of ${tenant.id} failed: ${errorMessage(err)}`);
      result = { tenant: tenant.id, runId: null, status: 'failed', message: errorMessage(err), epochs: [], settling: [], newlyStale: [] };
    }
    if (result.status === 'busy') this.log.info({ tenant: tenant.id }, result.message ?? `${tenant.id} is busy`);
    if (job.triggers.length) {
      const handBack = signal.aborted && (result.status === 'interrupted' || result.status === 'busy');
      await this.persist('record the triggers', () =>
        handBack ? releaseTriggers(this.deps.db, job.triggers) : finishTriggers(this.deps.db, job.triggers, result),
      );
    }
    // On the way down, mail stays queued for the next start rather than hold up the stop.
    if (!signal.aborted && result.runId !== null) await deliverMail(this.deps, tenant.id);
    if (result.settling.length) this.followUpWhenSettled(tenant, result.settling);
  }

  /**
   * A loose file seen for the first time is taken only once it has stayed unchanged for
   * settleSeconds. Look again then, rather than at the next tick of a daily schedule.
   */
  private followUpWhenSettled(tenant: TenantConfig, files: string[]): void {
    if (this.state !== 'running') return;
    const delayMs = (tenant.settleSeconds + 1) * 1000;
    this.log.info({ tenant: tenant.id, files }, `${files.join(', ')} still settling; looking again in ${tenant.settleSeconds + 1} s`);
    const timer = setTimeout(() => {
      this.timers.splice(this.timers.indexOf(timer), 1);
      if (this.state === 'running') this.enqueue(tenant, 'schedule', []);
    }, delayMs);
    this.timers.push(timer);
  }

  private pollTriggers(): void {
    if (this.state !== 'running') return;
    this.safely('poll triggers', () => {
      for (const t of pendingTriggers(this.deps.db)) {
        const tenant = this.served.get(t.tenant);
        if (!tenant || !this.unlessLocked(() => pickUpTrigger(this.deps.db, t.id))) continue;
        this.log.info({ tenant: tenant.id, trigger: t.id, requestedBy: t.requested_by }, `trigger ${t.id} from ${t.requested_by ?? 'unknown'}: running ${tenant.id} now`);
        this.enqueue(tenant, 'trigger', [t.id]);
      }
    });
  }

  /** Sends mail that is due: an SMTP outage heals without waiting for a new upload. */
  private retryMail(): void {
    if (this.state !== 'running' || this.mailPass) return;
    this.mailPass = deliverMail(this.deps).finally(() => {
      this.mailPass = undefined;
    });
  }

  /**
   * What a killed worker left behind: runs still marked running, triggers it took, and
   * claimed epochs. Those tenants run at once rather than wait for their schedule (a daily
   * tenant would otherwise keep a half-done upload until midnight).
   */
  private recoverFromCrashes(): void {
    const { db } = this.deps;
    this.safely('recover', () => {
      const now = new Date().toISOString();
      const dead = (db.prepare(`SELECT id, owner FROM runs WHERE status = 'running'`).all() as { id: number; owner: string }[]).filter((r) => !ownerIsAlive(r.owner));
      const mark = db.prepare(`UPDATE runs SET status = 'interrupted', finished_at = ?, message = ? WHERE id = ? AND status = 'running'`);
      for (const r of dead) mark.run(now, `the worker ${r.owner} stopped before the run finished`, r.id);
      const retaken = recoverOrphanedTriggers(db);
      if (retaken) this.log.info({ triggers: retaken }, `${retaken} trigger(s) taken by a daemon that stopped are pending again`);
      const claims = db.prepare('SELECT tenant, epoch, owner, expires_at FROM claims').all() as { tenant: string; epoch: string; owner: string; expires_at: string }[];
      const abandoned = claims.filter((c) => this.served.has(c.tenant) && (c.expires_at < now || !ownerIsAlive(c.owner)));
      for (const tenant of new Set(abandoned.map((c) => c.tenant))) {
        this.log.info({ tenant, epochs: abandoned.filter((c) => c.tenant === tenant).map((c) => c.epoch) }, `${tenant} has an upload claimed by a worker that stopped; running it now to finish it`);
        this.enqueue(this.served.get(tenant)!, 'schedule', []);
      }
    });
  }

  private every(ms: number, fn: () => void): void {
    const timer = setInterval(() => this.safely('timer', fn), ms);
    this.timers.push(timer);
  }

  /**
   * Runs a housekeeping write unless another thread holds the write lock (a large apply can
   * hold it for minutes); then returns undefined at once instead of freezing this thread.
   */
  private unlessLocked<T>(fn: () => T): T | undefined {
    const { db } = this.deps;
    const wait = db.pragma('busy_timeout', { simple: true }) as number;
    db.pragma('busy_timeout = 0');
    try {
      return fn();
    } catch (err) {
      if ((err as { code?: string }).code === 'SQLITE_BUSY') return undefined;
      throw err;
    } finally {
      db.pragma(`busy_timeout = ${wait}`);
    }
  }

  /** A write someone waits for (`trigger --wait`): retried every second while the database is locked. */
  private async persist(what: string, fn: () => void): Promise<void> {
    const giveUp = Date.now() + 60 * 60_000;
    for (;;) {
      try {
        if (this.unlessLocked(() => (fn(), true))) return;
      } catch (err) {
        this.log.error({ err: errorMessage(err) }, `${what}: ${errorMessage(err)}`);
        return;
      }
      if (Date.now() > giveUp) {
        this.log.error(`${what}: the database stayed locked for an hour; giving up`);
        return;
      }
      await new Promise((r) => setTimeout(r, 1000));
    }
  }

  /** Housekeeping must never bring the daemon down (e.g. SQLITE_BUSY while another process writes). */
  private safely(what: string, fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.log.warn({ err: errorMessage(err) }, `${what}: ${errorMessage(err)}`);
    }
  }
}
