// Runs a set of tenants with bounded concurrency and turns the results into one exit code.
// Used by `run --now` and by the daemon.
import type { Config, TenantConfig } from '../config.js';
import type { Db } from '../db/database.js';
import { ExitCode } from '../errors.js';
import type { KindRegistry } from '../import/kinds.js';
import type { Logger } from '../log.js';
import { runTenant, type EpochReporter, type RunOptions, type TenantRunResult } from './run-tenant.js';

export interface Worker {
  config: Config;
  db: Db;
  kinds: KindRegistry;
  log: Logger;
  report?: EpochReporter;
}

export async function runTenants(worker: Worker, tenants: TenantConfig[], opts: RunOptions): Promise<TenantRunResult[]> {
  const results: TenantRunResult[] = new Array(tenants.length);
  let next = 0;
  const lane = async () => {
    while (next < tenants.length) {
      const i = next++;
      results[i] = await runTenant(worker, tenants[i], opts);
    }
  };
  await Promise.all(Array.from({ length: Math.min(worker.config.concurrency, tenants.length) }, lane));
  return results;
}

/** 0 clean or nothing to do; 1 held, rejected or row errors; 3 unreachable or failed. */
export function exitCodeFor(results: TenantRunResult[]): number {
  if (results.some((r) => r.status === 'failed' || r.status === 'busy' || r.status === 'interrupted')) return ExitCode.failed;
  if (results.some((r) => r.status === 'errors')) return ExitCode.problems;
  return ExitCode.ok;
}
