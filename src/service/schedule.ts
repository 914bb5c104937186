// Schedules: each tenant's cron expression in its time zone (node-cron v4, used for the
// arithmetic only). The daemon's own timer looks every second at which tenant is due, so a
// tick is never lost: node-cron skips a tick that comes more than about a second late (a busy
// process), while here a late tick runs as soon as it can and says so. With several daemons,
// the store decides which one runs a tick.
import cron, { type ScheduledTask } from 'node-cron';
import type { TenantConfig } from '../config.js';

function task(tenant: TenantConfig): ScheduledTask {
  return cron.createTask(tenant.schedule, () => {}, { timezone: tenant.timezone, name: `tenant:${tenant.id}` });
}

/** When the tenant's schedule next fires after `from` (null when the tenant is disabled). */
export function nextRunOf(tenant: TenantConfig, from: Date = new Date()): Date | null {
  if (!tenant.enabled) return null;
  const t = task(tenant);
  try {
    // getNextRuns counts from the clock; when `from` lies ahead of it, look further.
    for (let n = 2; n <= 4096; n *= 4) {
      const next = t.getNextRuns(n).find((d) => new Date(d).getTime() > from.getTime());
      if (next) return new Date(next);
    }
    return null;
  } finally {
    void t.destroy();
  }
}

export interface Due {
  tenant: TenantConfig;
  /** The tick's own time (its identity across daemons). */
  dueAt: Date;
  /** How late we noticed it. */
  lateMs: number;
}

/** Keeps each tenant's next tick and says which are due. */
export class Scheduler {
  private readonly next = new Map<string, Date | null>();

  constructor(private readonly tenants: TenantConfig[]) {
    for (const t of tenants) this.next.set(t.id, nextRunOf(t));
  }

  nextRun(tenant: string): Date | null {
    return this.next.get(tenant) ?? null;
  }

  /** A tick that could not be claimed is due again (once, however many ticks pass meanwhile). */
  retry(due: Due): void {
    const next = this.next.get(due.tenant.id);
    if (!next || next.getTime() > due.dueAt.getTime()) this.next.set(due.tenant.id, due.dueAt);
  }

  /** The ticks due at `now`, each once; the following tick is computed from `now`. */
  due(now: Date = new Date()): Due[] {
    const out: Due[] = [];
    for (const t of this.tenants) {
      const at = this.next.get(t.id);
      if (!at || at.getTime() > now.getTime()) continue;
      out.push({ tenant: t, dueAt: at, lateMs: now.getTime() - at.getTime() });
      this.next.set(t.id, nextRunOf(t, now));
    }
    return out;
  }
}
