// /metrics in Prometheus' text format (prom-client). What must agree across a cluster (runs,
// imports and rows by outcome, the mail queue, each tenant's last success and overdue feeds) is
// read from the store at scrape time, so every daemon answers the same; the run-duration
// histogram is this process's own runs. Tenant ids are the only labels: no personal data.
import client from 'prom-client';
import type { Config } from '../config.js';
import { feedOf, feedTimes } from '../service/overdue.js';
import type { Store } from '../store/types.js';

const RUN_RESULTS = ['ok', 'errors', 'failed', 'nothing', 'busy', 'interrupted'];
const IMPORT_STATUSES = ['applied', 'applied with errors', 'rejected', 'held', 'failed', 'discarded', 'superseded'];
const ROW_ACTIONS = ['created', 'updated', 'unchanged', 'deactivated', 'archived', 'failed'];

export class Metrics {
  readonly registry = new client.Registry();
  private readonly runs: client.Counter<'result'>;
  private readonly imports: client.Counter<'status'>;
  private readonly rows: client.Counter<'action'>;
  private readonly duration: client.Histogram<'result'>;
  private readonly queueDepth: client.Gauge;
  private readonly oldestQueued: client.Gauge;
  private readonly mailFailed: client.Gauge;
  private readonly lastSuccess: client.Gauge<'tenant'>;
  private readonly overdue: client.Gauge<'tenant'>;
  private readonly overdueCount: client.Gauge;
  /** One scrape at a time: each resets and refills the store-backed values. */
  private turn: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly store: Store,
    private readonly config: Config,
  ) {
    const registers = [this.registry];
    client.collectDefaultMetrics({ register: this.registry });
    this.runs = new client.Counter({ name: 'provisioner_runs_total', help: 'Finished tenant runs by result (all daemons: from the store).', labelNames: ['result'], registers });
    this.imports = new client.Counter({ name: 'provisioner_imports_total', help: 'Processed files by status (all daemons: from the store).', labelNames: ['status'], registers });
    this.rows = new client.Counter({ name: 'provisioner_rows_total', help: 'Rows of applied files by what became of them (all daemons: from the store; a held file counts once released).', labelNames: ['action'], registers });
    this.duration = new client.Histogram({
      name: 'provisioner_run_duration_seconds',
      help: "Duration of this daemon's tenant runs, by result.",
      labelNames: ['result'],
      buckets: [0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600],
      registers,
    });
    this.queueDepth = new client.Gauge({ name: 'provisioner_mail_queue_depth', help: 'Reports queued and not yet accepted by the mail server.', registers });
    this.oldestQueued = new client.Gauge({ name: 'provisioner_mail_oldest_queued_seconds', help: 'Age of the oldest queued report (0 when none is queued).', registers });
    this.mailFailed = new client.Gauge({ name: 'provisioner_mail_failed', help: 'Reports the mail server refused for good.', registers });
    this.lastSuccess = new client.Gauge({
      name: 'provisioner_tenant_last_success_timestamp_seconds',
      help: "When the tenant's last successful import finished (Unix time); absent when it never had one.",
      labelNames: ['tenant'],
      registers,
    });
    this.overdue = new client.Gauge({ name: 'provisioner_tenant_overdue', help: '1 when the tenant has had no successful import for longer than its expectEveryHours.', labelNames: ['tenant'], registers });
    this.overdueCount = new client.Gauge({ name: 'provisioner_tenants_overdue', help: 'Tenants whose feed is overdue (no successful import for longer than expectEveryHours).', registers });
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  /** A run of this daemon finished. */
  observeRun(result: string, seconds: number): void {
    this.duration.observe({ result }, seconds);
  }

  scrape(): Promise<string> {
    const next = this.turn.catch(() => {}).then(() => this.refreshAndRender());
    this.turn = next;
    return next;
  }

  private async refreshAndRender(): Promise<string> {
    const { store } = this;
    const [runs, totals, mail, times] = await Promise.all([store.runs.countsByStatus(), store.imports.totals(), store.mail.summary(), feedTimes(store)]);
    setCounter(this.runs, 'result', RUN_RESULTS, runs, ['running']);
    setCounter(this.imports, 'status', IMPORT_STATUSES, totals.byStatus);
    setCounter(this.rows, 'action', ROW_ACTIONS, totals.rows);
    this.queueDepth.set(mail.queued);
    this.oldestQueued.set(mail.oldestQueuedAt ? Math.max(0, (times.now.getTime() - Date.parse(mail.oldestQueuedAt)) / 1000) : 0);
    this.mailFailed.set(mail.failed);
    this.lastSuccess.reset();
    this.overdue.reset();
    let overdue = 0;
    for (const t of this.config.tenants) {
      const feed = feedOf(t, times);
      if (feed.lastSuccess) this.lastSuccess.set({ tenant: t.id }, Date.parse(feed.lastSuccess) / 1000);
      if (feed.expectEveryHours !== null) this.overdue.set({ tenant: t.id }, feed.overdue ? 1 : 0);
      if (feed.overdue) overdue++;
    }
    this.overdueCount.set(overdue);
    return this.registry.metrics();
  }
}

/** A counter set to the store's totals: every known label shown (0 too), unknown ones as found. */
function setCounter<L extends string>(counter: client.Counter<L>, label: L, known: string[], values: Record<string, number>, skip: string[] = []): void {
  counter.reset();
  for (const k of new Set([...known, ...Object.keys(values)])) {
    if (skip.includes(k)) continue;
    counter.inc({ [label]: k } as Partial<Record<L, string>>, values[k] ?? 0);
  }
}
