// The daemon's work queue: at most `limit` tenant runs at once across all tenants (each first
// looks for work; processing is limited further by the runs' shared semaphore), never two runs
// of one tenant at once, and at most one waiting run per tenant (a second request for a tenant
// that is already waiting joins that one instead of queueing another run).
import type { TenantConfig } from '../config.js';

export interface Job {
  tenant: TenantConfig;
  reason: 'schedule' | 'trigger';
  /** Trigger ids this run answers. */
  triggers: number[];
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
    if (this.closed) return 'closed';
    const id = job.tenant.id;
    const waiting = this.waiting.find((j) => j.tenant.id === id);
    if (waiting) {
      waiting.triggers.push(...job.triggers);
      if (job.reason === 'trigger') waiting.reason = 'trigger';
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

  get queued(): number {
    return this.waiting.length;
  }

  /** Stops taking and starting work; returns the jobs that never started. */
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
      const i = this.waiting.findIndex((j) => !this.active.has(j.tenant.id));
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
