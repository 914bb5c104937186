// Running many tenants: sessions that look for work open up to discoveryConcurrency at once
// (most tenants, most nights, have nothing: the SSH handshake is the cost), while processing
// (downloading, staging, applying) is limited to `concurrency` by a semaphore the runs share.
// Used by `run --now` and by the daemon.
import type { TenantConfig } from '../config.js';
import { ExitCode } from '../errors.js';
import type { RunDeps, RunOptions, TenantRunResult } from './context.js';
import { emptyResult } from './context.js';
import { runTenant } from './run-tenant.js';

export class Semaphore {
  private active = 0;
  private readonly waiting: (() => void)[] = [];

  constructor(readonly limit: number) {}

  async acquire(): Promise<() => void> {
    if (this.active < this.limit) this.active++;
    else await new Promise<void>((r) => this.waiting.push(r)); // a release hands its slot over
    return this.releaser();
  }

  /**
   * A slot now, or null when every one is taken (it never waits). The daemon takes a trigger only
   * with a slot in hand, so that a busy daemon leaves the work to a free one.
   */
  tryAcquire(): (() => void) | null {
    if (this.active >= this.limit) return null;
    this.active++;
    return this.releaser();
  }

  /** Idempotent. The slot passes straight to the longest waiter: tryAcquire cannot take it in between. */
  private releaser(): () => void {
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = this.waiting.shift();
      if (next) next();
      else this.active--;
    };
  }

  get inUse(): number {
    return this.active;
  }
}

export async function runTenants(deps: RunDeps, tenants: TenantConfig[], opts: RunOptions): Promise<TenantRunResult[]> {
  const results: TenantRunResult[] = new Array(tenants.length);
  const withSlots = { ...deps, processing: deps.processing ?? new Semaphore(deps.config.concurrency) };
  let next = 0;
  const lane = async () => {
    while (next < tenants.length) {
      const i = next++;
      try {
        results[i] = await runTenant(withSlots, tenants[i], opts);
      } catch (err) {
        // runTenant records its own failures; this is the store itself failing.
        results[i] = { ...emptyResult(tenants[i].id), status: 'failed', message: `run failed: ${(err as Error).message}` };
      }
    }
  };
  const lanes = Math.min(Math.max(deps.config.discoveryConcurrency, deps.config.concurrency), tenants.length);
  await Promise.all(Array.from({ length: lanes }, lane));
  return results;
}

/** 0 clean or nothing to do; 1 held, rejected or row errors; 3 unreachable or failed. */
export function exitCodeFor(statuses: string[]): number {
  if (statuses.some((s) => s === 'failed' || s === 'busy' || s === 'interrupted')) return ExitCode.failed;
  if (statuses.some((s) => s === 'errors')) return ExitCode.problems;
  return ExitCode.ok;
}
