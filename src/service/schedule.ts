// Cron schedules (node-cron v4) for the daemon and for `status`: the next run of a tenant
// from its expression and time zone, and node-cron's own messages routed into our logger
// (by default it writes to the console, outside the structured log).
import cron, { type Logger as CronLogger, type ScheduledTask } from 'node-cron';
import type { TenantConfig } from '../config.js';
import type { Logger } from '../log.js';

/** A task that is not started: it never fires, it only answers questions about the schedule. */
export function scheduleTask(tenant: TenantConfig, fn: () => void, log?: Logger): ScheduledTask {
  return cron.createTask(tenant.schedule, fn, {
    timezone: tenant.timezone,
    name: `tenant:${tenant.id}`,
    logger: log ? cronLogger(log.child({ tenant: tenant.id })) : undefined,
  });
}

/** When the tenant's schedule next fires (null when the tenant is disabled). */
export function nextRunOf(tenant: TenantConfig, from?: ScheduledTask): Date | null {
  if (!tenant.enabled) return null;
  if (from) return from.getNextRun() ?? from.getNextRuns(1)[0] ?? null;
  const task = scheduleTask(tenant, () => {});
  try {
    return task.getNextRuns(1)[0] ?? null;
  } finally {
    void task.destroy();
  }
}

function cronLogger(log: Logger): CronLogger {
  const text = (m: string | Error) => (m instanceof Error ? m.message : m);
  return {
    info: (m) => log.debug(`node-cron: ${m}`),
    // "missed execution": the event loop was busy applying a file (synchronous SQLite); the
    // next tick runs the tenant anyway, so this is not worth an operator's attention.
    warn: (m) => log.debug(`node-cron: ${m}`),
    error: (m, err) => log.error({ err: text(err ?? m) }, `node-cron: ${text(m)}`),
    debug: (m) => log.trace(`node-cron: ${text(m)}`),
  };
}
