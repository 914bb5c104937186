// The daemon's work queue: at most `limit` tenant runs at once across all tenants, never two
// runs of one tenant at once, and at most one waiting run per tenant (a second request for a
// tenant that is already waiting joins that one instead of queueing another run).
import type { TenantConfig } from '../config.js';

export interface Job {
  tenant: TenantConfig;
  reason: 'schedule' | 'trigger';
  /** Trigger ids this run answers. */
  triggers: number[];
}

export type AddResult = 'queued' | 'merged' | 'skipped' | 'closed';

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
   * A scheduled run of a tenant that is running already is skipped: the run in hand does the
   * same work. A trigger is queued behind it, since that run may have looked at the upload
   * folder before the upload the support engineer is asking about arrived.
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
    if (this.active.has(id) && job.reason === 'schedule') return 'skipped';
    this.waiting.push({ ...job, triggers: [...job.triggers] });
    this.pump();
    return 'queued';
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
