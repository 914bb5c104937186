// The worker as a service: every tenant on its own schedule, tier-2 triggers taken from the
// store at once (each only with a free processing slot: trigger-intake.ts), a bounded number of
// runs at once, queued mail retried until the mail server takes it, a heartbeat so that `status`
// and `trigger` on any machine know who is up, and a stop that finishes (or hands back) what it
// holds. Several daemons may share one PostgreSQL store: the store decides which one runs each
// tick and each trigger, and a daemon whose lanes are all busy leaves due ticks to the others.
//
// With `http` in the configuration it also serves health, metrics and the console (src/http),
// started and stopped with it. Console actions that touch a tenant's directory or uploads
// (release, discard, undo) run through exclusive(): never beside a run of that tenant here, and
// the tenant lease keeps them apart from every other process.
//
// Usable in-process (tests) as well as from `provisioner run`: start() and stop() are
// idempotent, and the daemon never closes the store it was given.
import type { Config, TenantConfig } from '../config.js';
import { errorMessage } from '../errors.js';
import type { Logger } from '../log.js';
import type { Store } from '../store/types.js';
import { printable } from '../text.js';
import type { RunDeps, TenantRunResult } from '../worker/context.js';
import { emptyResult } from '../worker/context.js';
import { hostName, ownerIsGone, processId } from '../worker/identity.js';
import { runTenant } from '../worker/run-tenant.js';
import { Semaphore } from '../worker/runner.js';
import { HttpServer } from '../http/server.js';
import { BusyRetries } from './busy-retry.js';
import { abandonedClaimsByTenant, deliverMail, pruneScheduleTicks, recoverLeftovers, recoverOrphanedTriggers } from './housekeeping.js';
import { noticeOverdue } from './overdue.js';
import { RunQueue, type Job } from './run-queue.js';
import { Scheduler } from './schedule.js';
import { TRIGGER_POLL_MS, TriggerIntake } from './trigger-intake.js';
import { HEARTBEAT_STALE_MS } from './status.js';
import { KeptSessions } from '../sftp/kept-sessions.js';

export interface DaemonDeps {
  config: Config;
  store: Store;
  log: Logger;
  runDeps(opts?: Pick<RunDeps, 'processing' | 'keptSessions'>): RunDeps;
}

export interface DaemonOptions {
  /** The tenants to serve (default: every enabled tenant). */
  tenants?: TenantConfig[];
  /** How often to look for triggers (default TRIGGER_POLL_MS). */
  triggerPollMs?: number;
  heartbeatMs?: number;
  /** How often to report outcomes and retry queued mail (default: mail.retrySeconds, at most 60 s). */
  mailRetryMs?: number;
}

export const HEARTBEAT_MS = 5_000;
const PRUNE_EVERY_MS = 3600_000;
/** A tick noticed later than this is logged at warn (the process was busy). */
const LATE_MS = 1500;

type State = 'new' | 'running' | 'stopping' | 'stopped';

export class Daemon {
  private state: State = 'new';
  private readonly served: Map<string, TenantConfig>;
  private readonly timers: NodeJS.Timeout[] = [];
  private readonly abort = new AbortController();
  private readonly queue: RunQueue;
  private readonly scheduler: Scheduler;
  private readonly processing: Semaphore;
  /** Connections tenants with `sftp.keepOpenSeconds` keep between their runs; closed on stop. */
  private readonly keptSessions = new KeptSessions();
  private readonly log: Logger;
  private starting: Promise<void> | undefined;
  private stopping: Promise<void> | undefined;
  private mailPass: Promise<void> | undefined;
  private readonly intake: TriggerIntake;
  /** Other daemons with a fresh heartbeat (read with each heartbeat). */
  private peers = 0;
  private prunedAt = 0;
  /** Tenants whose due tick this daemon left for a freer one (or for itself, a second later). */
  private readonly deferred = new Set<string>();
  private ready = false;
  private http: HttpServer | undefined;
  /** Per tenant, the tail of the runs and console actions that must not overlap. */
  private readonly tenantTurns = new Map<string, Promise<unknown>>();
  private readonly actions = new Set<Promise<unknown>>();
  /** Scheduled runs waiting for another process to let go of their tenant. */
  private readonly waiting: BusyRetries;

  constructor(
    private readonly deps: DaemonDeps,
    private readonly opts: DaemonOptions = {},
  ) {
    const tenants = opts.tenants ?? deps.config.tenants.filter((t) => t.enabled);
    this.served = new Map(tenants.map((t) => [t.id, t]));
    this.log = deps.log.child({ component: 'daemon' });
    const { config } = deps;
    this.processing = new Semaphore(config.concurrency);
    this.queue = new RunQueue(Math.max(config.concurrency, config.discoveryConcurrency), (job) => this.execute(job));
    this.scheduler = new Scheduler(tenants);
    this.intake = new TriggerIntake({
      store: deps.store,
      log: this.log,
      slots: this.processing,
      tenants: [...this.served.keys()],
      open: () => this.state === 'running',
      pollMs: opts.triggerPollMs ?? TRIGGER_POLL_MS,
      run: (t, slot) => {
        const tenant = this.served.get(t.tenant)!;
        this.log.info({ tenant: tenant.id, trigger: t.id, requestedBy: t.requestedBy }, `trigger ${t.id} from ${t.requestedBy ?? 'unknown'}: running ${tenant.id} now`);
        this.enqueue(tenant, 'trigger', [t.id], slot);
      },
    });
    this.waiting = new BusyRetries(this.log, (id) => {
      const t = this.served.get(id);
      if (t && this.state === 'running') this.enqueue(t, 'schedule', []);
    });
  }

  get isRunning(): boolean {
    return this.state === 'running';
  }

  /** Started up and taking work: what /readyz reports (with the store's reachability). */
  get isReady(): boolean {
    return this.state === 'running' && this.ready;
  }

  /**
   * Runs `fn` when no run of `tenant` (and no other console action on it) is in hand in this
   * process, and keeps them from starting until it is done. Refused once the daemon stops.
   */
  exclusive<T>(tenant: string, fn: () => Promise<T>): Promise<T> {
    if (this.state !== 'running') return Promise.reject(new Error('the daemon is stopping; try again on another daemon or once it is back'));
    const p = this.inTurn(tenant, fn);
    this.actions.add(p);
    void p.catch(() => {}).finally(() => this.actions.delete(p));
    return p;
  }

  private inTurn<T>(tenant: string, fn: () => Promise<T>): Promise<T> {
    const before = this.tenantTurns.get(tenant) ?? Promise.resolve();
    const mine = before.catch(() => {}).then(fn);
    const tail = mine.catch(() => {});
    this.tenantTurns.set(tenant, tail);
    void tail.then(() => {
      if (this.tenantTurns.get(tenant) === tail) this.tenantTurns.delete(tenant);
    });
    return mine;
  }

  /** Next scheduled run per served tenant. */
  nextRuns(): { tenant: string; nextRun: Date | null }[] {
    return [...this.served.keys()].map((tenant) => ({ tenant, nextRun: this.scheduler.nextRun(tenant) }));
  }

  /** Tenants running now. */
  running(): string[] {
    return this.queue.runningTenants();
  }

  start(): Promise<void> {
    if (this.state === 'new') {
      this.state = 'running';
      this.starting = this.startUp();
    }
    return this.starting ?? Promise.resolve();
  }

  private async startUp(): Promise<void> {
    const { store, config } = this.deps;
    if (config.http) {
      // First: a port already taken stops the start-up before anything is registered.
      this.http = new HttpServer({ config, store, log: this.deps.log, daemon: this, runDeps: () => this.deps.runDeps({ processing: this.processing }) });
      await this.http.start();
    }
    await store.daemons.register({ owner: processId, host: hostName, pid: process.pid, tenants: [...this.served.keys()] });
    await recoverLeftovers(this.deps);
    await this.recoverTriggers();
    await this.resumeAbandonedClaims();

    this.every(1000, () => this.tick());
    this.every(this.opts.triggerPollMs ?? TRIGGER_POLL_MS, () => this.intake.poll());
    this.every(this.opts.heartbeatMs ?? HEARTBEAT_MS, () => this.heartbeat());
    this.every(this.opts.mailRetryMs ?? Math.min(60, config.mail.retrySeconds ?? 30) * 1000, () => this.retryMail());
    // Another daemon's work, when it died: its triggers are taken again once its heartbeat has
    // stopped, its claimed uploads finished here once their lease runs out.
    this.every(Math.max(5000, (config.leaseSeconds * 1000) / 4), async () => {
      await this.recoverTriggers();
      await this.resumeAbandonedClaims();
      await this.intake.listen();
    });
    await this.intake.listen();
    await this.heartbeat();

    const schedule = this.nextRuns().map(({ tenant, nextRun }) => {
      const t = this.served.get(tenant)!;
      return { tenant, schedule: t.schedule, timezone: t.timezone, nextRun: nextRun?.toISOString() ?? null };
    });
    this.log.info(
      { tenants: schedule.slice(0, 50), concurrency: config.concurrency, discoveryConcurrency: config.discoveryConcurrency, owner: processId },
      `daemon started as ${processId}: ${schedule.length} tenant(s), at most ${config.concurrency} processing at once; ` +
        schedule.slice(0, 10).map((s) => `${s.tenant} next at ${s.nextRun ?? 'never'} ("${s.schedule}" ${s.timezone})`).join('; ') +
        (schedule.length > 10 ? `; … ${schedule.length - 10} more` : ''),
    );
    this.ready = true;
    await this.intake.poll();
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
    const { store } = this.deps;
    for (const t of this.timers) clearTimeout(t);
    this.waiting.stop();
    await this.safely('stop listening', () => this.intake.close());
    const unstarted = this.queue.close();
    for (const j of unstarted) j.slot?.();
    await this.safely('hand back triggers', () => store.triggers.release(unstarted.flatMap((j) => j.triggers)));
    if (this.queue.running) {
      this.log.info({ running: this.queue.running }, `stopping: waiting for ${this.queue.running} run(s) in hand to finish (a second signal exits at once)`);
    }
    this.abort.abort();
    await this.queue.idle();
    await this.safely('close the kept SFTP connections', () => this.keptSessions.close());
    await Promise.allSettled([...this.actions]);
    await this.mailPass;
    await this.safely('stop the HTTP server', async () => this.http?.stop());
    await this.safely('unregister', () => store.daemons.unregister(processId));
    this.state = 'stopped';
    this.log.info('daemon stopped');
  }

  /** `slot`: a processing slot already taken for this run (a trigger's). */
  private enqueue(tenant: TenantConfig, reason: Job['reason'], triggers: number[], slot?: () => void): void {
    const added = this.queue.add({ tenant, reason, triggers, slot });
    if (added === 'behind') this.log.warn({ tenant: tenant.id, reason }, `${tenant.id} is still running; this ${reason} run follows when it finishes`);
    if (added === 'closed') void this.safely('hand back triggers', () => this.deps.store.triggers.release(triggers));
  }

  /**
   * Every second: the tenants whose tick is due, each claimed once across every daemon. A tick
   * whose claim fails (the store briefly unreachable) is due again on the next second, late,
   * rather than lost.
   */
  private async tick(): Promise<void> {
    if (this.state !== 'running') return;
    for (const due of this.scheduler.due()) {
      const id = due.tenant.id;
      // Every lane busy and another daemon up: the tick stays due, for whichever daemon has a
      // free lane first (this one included, a second later), rather than queue here.
      if (this.peers > 0 && this.queue.free <= 0 && !this.queue.isRunning(id)) {
        this.scheduler.retry(due);
        if (!this.deferred.has(id)) this.log.info({ tenant: id, dueAt: due.dueAt.toISOString() }, `every lane here is busy; the ${due.dueAt.toISOString()} run of ${id} is left to the first free daemon`);
        this.deferred.add(id);
        continue;
      }
      const waited = this.deferred.delete(id);
      let won: boolean;
      try {
        won = await this.deps.store.schedule.claimTick(due.tenant.id, due.dueAt.toISOString(), processId);
      } catch (err) {
        this.scheduler.retry(due);
        this.log.warn({ tenant: due.tenant.id, dueAt: due.dueAt.toISOString(), err: errorMessage(err) }, `could not claim the ${due.dueAt.toISOString()} run of ${due.tenant.id} (${errorMessage(err)}); trying again`);
        continue;
      }
      if (!won) continue; // another daemon runs this tick
      this.waiting.cancel(due.tenant.id); // this run supersedes a retry still waiting
      if (due.lateMs > LATE_MS && !waited) {
        this.log.warn({ tenant: due.tenant.id, dueAt: due.dueAt.toISOString(), lateMs: due.lateMs }, `the ${due.dueAt.toISOString()} run of ${due.tenant.id} starts ${Math.round(due.lateMs / 1000)} s late (this process was busy)`);
      }
      this.enqueue(due.tenant, 'schedule', []);
    }
  }

  private async execute(job: Job): Promise<void> {
    const { tenant } = job;
    const signal = this.abort.signal;
    // A trigger is an explicit request: wait for a `run --now` elsewhere rather than drop it.
    const opts = { reason: job.reason, force: false, dryRun: false, signal, waitForLockSeconds: job.reason === 'trigger' ? this.deps.config.leaseSeconds : 0 };
    let result: TenantRunResult;
    const started = performance.now();
    // A trigger's run brings the slot it was taken with: it processes at once, never waits for one.
    const slot = job.slot;
    const processing = slot ? { acquire: async () => slot } : this.processing;
    try {
      result = await this.inTurn(tenant.id, () => runTenant(this.deps.runDeps({ processing, keptSessions: this.keptSessions }), tenant, opts));
    } catch (err) {
      // runTenant records its own failures; this is the store itself failing.
      this.log.error({ tenant: tenant.id, err: errorMessage(err) }, `run of ${tenant.id} failed: ${errorMessage(err)}`);
      result = { ...emptyResult(tenant.id), status: 'failed', message: errorMessage(err) };
    } finally {
      slot?.(); // a run that found nothing to process never used it
      void this.safely('poll triggers', () => this.intake.poll()); // a slot is free: a pending trigger is taken now
    }
    if (result.status !== 'busy') this.http?.metrics.observeRun(result.status, (performance.now() - started) / 1000);
    // A scheduled run never gives up on a busy tenant; a trigger already waited (tier-2 sees "busy").
    if (result.status === 'busy' && job.reason === 'schedule' && !signal.aborted) this.waiting.busy(tenant.id, result.message);
    else if (result.status === 'busy') this.log.warn({ tenant: tenant.id, reason: job.reason }, result.message ?? `${tenant.id} is busy`);
    else this.waiting.ran(tenant.id);
    if (job.triggers.length) {
      const handBack = signal.aborted && (result.status === 'interrupted' || result.status === 'busy');
      await this.safely('record the triggers', () =>
        handBack ? this.deps.store.triggers.release(job.triggers) : this.deps.store.triggers.finish(job.triggers, result),
      );
    }
    // On the way down, mail stays queued for the next start rather than hold up the stop.
    if (!signal.aborted && result.runId !== null) await deliverMail(this.deps, tenant.id);
    if (result.settling.length) await this.safely('follow up', () => this.followUpWhenSettled(tenant, result));
  }

  /** A loose file not taken yet is looked at again when it will be, not at the next tick of a daily schedule. */
  private async followUpWhenSettled(tenant: TenantConfig, result: TenantRunResult): Promise<void> {
    if (this.state !== 'running') return;
    const at = Math.max(...result.settling.map((s) => Date.parse(s.takeAfter)));
    const delayMs = Math.max(1000, at - (await this.deps.store.now()).getTime() + 1000); // takeAfter is by the store's clock
    if (this.state !== 'running') return;
    const files = result.settling.map((s) => printable(s.file));
    this.log.info({ tenant: tenant.id, files }, `${files.join(', ')} not taken yet; looking again in ${Math.round(delayMs / 1000)} s`);
    const timer = setTimeout(() => {
      this.timers.splice(this.timers.indexOf(timer), 1);
      if (this.state === 'running') this.enqueue(tenant, 'schedule', []);
    }, delayMs);
    this.timers.push(timer);
  }

  /** Beats, and notes how many other daemons are up (a busy daemon leaves due ticks to them). */
  private async heartbeat(): Promise<void> {
    const { store } = this.deps;
    await store.daemons.beat(processId, this.running());
    const daemons = await store.daemons.list();
    this.peers = daemons.filter((d) => d.owner !== processId && d.heartbeatAgeMs < HEARTBEAT_STALE_MS && !ownerIsGone(d.owner)).length;
  }

  /**
   * Notices feeds that stopped, reports a crash left unreported, then sends mail that is due: an
   * SMTP outage heals by itself.
   */
  private retryMail(): void {
    if (this.state !== 'running' || this.mailPass) return;
    this.mailPass = noticeOverdue(this.deps.store, [...this.served.values()])
      .then((noticed) => {
        if (noticed.length) this.log.warn({ tenants: noticed }, `feed overdue: ${noticed.join(', ')}; the operators are told`);
      })
      .catch((err) => this.log.warn({ err: errorMessage(err) }, `overdue check: ${errorMessage(err)}`))
      .then(() => recoverLeftovers(this.deps))
      .then(() => this.pruneTicks())
      .then(() => deliverMail(this.deps))
      .catch((err) => this.log.warn({ err: errorMessage(err) }, `mail pass: ${errorMessage(err)}`))
      .finally(() => {
        this.mailPass = undefined;
      });
  }

  /** Triggers taken by daemons that are gone: pending again, for a daemon with a free slot. */
  private async recoverTriggers(): Promise<void> {
    if (this.state === 'running') await recoverOrphanedTriggers(this.deps);
  }

  /**
   * Uploads claimed by a worker that stopped: those tenants run at once rather than wait for
   * their schedule (a daily tenant would otherwise keep a half-done upload until midnight).
   */
  private async resumeAbandonedClaims(): Promise<void> {
    if (this.state !== 'running') return;
    const abandoned = await abandonedClaimsByTenant(this.deps.store, (t) => this.served.has(t) && !this.queue.isRunning(t));
    for (const [tenant, epochs] of abandoned) {
      this.log.info({ tenant, epochs }, `${tenant} has an upload claimed by a worker that stopped; running it now to finish it`);
      this.enqueue(this.served.get(tenant)!, 'schedule', []);
    }
  }

  /** Once an hour (the first time at start-up): schedule ticks older than a day are forgotten. */
  private async pruneTicks(): Promise<void> {
    if (Date.now() - this.prunedAt < PRUNE_EVERY_MS) return;
    this.prunedAt = Date.now();
    await pruneScheduleTicks(this.deps.store);
  }

  private every(ms: number, fn: () => unknown): void {
    const timer = setInterval(() => void this.safely('timer', async () => fn()), ms);
    this.timers.push(timer);
  }

  /** Housekeeping must never bring the daemon down (the store briefly unreachable, say). */
  private async safely(what: string, fn: () => Promise<unknown> | unknown): Promise<void> {
    try {
      await fn();
    } catch (err) {
      this.log.warn({ err: errorMessage(err) }, `${what}: ${errorMessage(err)}`);
    }
  }
}
