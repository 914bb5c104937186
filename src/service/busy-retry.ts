// A scheduled run that found its tenant in another process's hands (a `run --now`, another
// daemon's run, a release) is not dropped: it runs as soon as the tenant is free, tried every
// second (one small write to the store each time), and the wait is said at warn once.
import type { Logger } from '../log.js';

/** How often a waiting run tries again. */
export const BUSY_RETRY_MS = 1000;

export class BusyRetries {
  private readonly timers = new Map<string, NodeJS.Timeout>();
  private readonly since = new Map<string, number>();

  /** `rerun` asks for the tenant's run again (the daemon's queue). */
  constructor(
    private readonly log: Logger,
    private readonly rerun: (tenant: string) => void,
  ) {}

  /** The run of `tenant` found it busy (`why`): try again shortly, unless a retry is already set. */
  busy(tenant: string, why: string | null): void {
    if (this.timers.has(tenant)) return;
    if (!this.since.has(tenant)) {
      this.since.set(tenant, Date.now());
      this.log.warn({ tenant }, `the scheduled run of ${tenant} is waiting: ${why ?? 'another process is running it'}; it runs as soon as that finishes`);
    }
    const timer = setTimeout(() => {
      this.timers.delete(tenant);
      this.rerun(tenant);
    }, BUSY_RETRY_MS);
    this.timers.set(tenant, timer);
  }

  /** A run of `tenant` got through: the wait, if any, is over. */
  ran(tenant: string): void {
    const since = this.since.get(tenant);
    if (since === undefined) return;
    this.since.delete(tenant);
    const waited = Date.now() - since;
    this.log.info({ tenant, waitedMs: waited }, `the scheduled run of ${tenant} ran after waiting ${Math.round(waited / 1000)} s for another process`);
  }

  /** A new run of `tenant` is on its way: a retry still waiting would only repeat it. */
  cancel(tenant: string): void {
    clearTimeout(this.timers.get(tenant));
    this.timers.delete(tenant);
  }

  stop(): void {
    for (const t of this.timers.values()) clearTimeout(t);
    this.timers.clear();
  }
}
