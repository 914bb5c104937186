// The daemon's work queue: at most `limit` tenant runs at once across all tenants (each first
// looks for work; processing is limited further by the runs' shared semaphore), never two runs
// of one tenant at once, and at most one waiting run per tenant (a second request for a tenant
// that is already waiting joins that one instead of queueing another run). A job that holds a
// processing slot already (a trigger: the daemon takes one only with a slot in hand) starts
// before those that only look for work.
import type { TenantConfig } from '../config.js';

export interface Job {
  tenant: TenantConfig;
  reason: 'schedule' | 'trigger';
  /** Trigger ids this run answers. */
  triggers: number[];
  /** A processing slot taken for this run before it was queued (released by whoever ends the job). */
  slot?: () => void;
}

export type AddResult = 'queued' | 'merged' | 'behind' | 'closed';

export class RunQueue {
  private readonly waiting: Job[] = [];
  private readonly active = new Map<string, Promise<void>>();
  private closed = false;

  /** `execute` must not throw: a failing tenant is that tenant's business only. */
  constructor(
    private readonly limit: number,
    private readonly execute: (job: Job) => Promise<void>,
  ) {}

  /**
   * A run asked for while the tenant is running waits behind it (never lost: that run may have
   * looked at the upload folder before the upload in question arrived).
   */
  add(job: Job): AddResult {
    if (this.closed) {
      job.slot?.();
      return 'closed';
    }
    const id = job.tenant.id;
    const waiting = this.waiting.find((j) => j.tenant.id === id);
    if (waiting) {
      waiting.triggers.push(...job.triggers);
      if (job.reason === 'trigger') waiting.reason = 'trigger';
      // One run needs one slot: the waiting run takes this one if it has none.
      if (job.slot && !waiting.slot) waiting.slot = job.slot;
      else job.slot?.();
      return 'merged';
    }
    this.waiting.push({ ...job, triggers: [...job.triggers] });
    const behind = this.active.has(id);
    this.pump();
    return behind ? 'behind' : 'queued';
  }

  runningTenants(): string[] {
    return [...this.active.keys()];
  }

  isRunning(tenant: string): boolean {
    return this.active.has(tenant);
  }

  get running(): number {
    return this.active.size;
  }

  /** Lanes neither running nor promised to a waiting run. */
  get free(): number {
    return this.limit - this.active.size - this.waiting.length;
  }

  get queued(): number {
    return this.waiting.length;
  }

  /** Stops taking and starting work; returns the jobs that never started (their slots still held). */
  close(): Job[] {
    this.closed = true;
    return this.waiting.splice(0);
  }

  /** Resolves once every run in hand has finished. */
  async idle(): Promise<void> {
    while (this.active.size) await Promise.all([...this.active.values()]);
  }

  private pump(): void {
    while (!this.closed && this.active.size < this.limit) {
      const startable = (j: Job) => !this.active.has(j.tenant.id);
      let i = this.waiting.findIndex((j) => j.slot && startable(j));
      if (i < 0) i = this.waiting.findIndex(startable);
      if (i < 0) return;
      const [job] = this.waiting.splice(i, 1);
      const id = job.tenant.id;
      const run = this.execute(job)
        .catch(() => {}) // execute reports its own failures; the queue must keep going
        .finally(() => {
          this.active.delete(id);
          this.pump();
        });
      this.active.set(id, run);
    }
  }
}
