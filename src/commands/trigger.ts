// `provisioner trigger --tenant ID`: tier-2 support asks the running daemon to process a
// tenant now. The request is a row in SQLite; the daemon takes it within about a second.
// With --wait the command follows it to the end and exits like `run --now`.
import { openApp, selectTenants, type App } from '../app.js';
import { ConfigError, ExitCode } from '../errors.js';
import type { ImportStatus } from '../import/apply.js';
import type { FileImportResult } from '../import/import-file.js';
import { daemonFor, type DaemonInfo } from '../service/daemons.js';
import { readTrigger, requester, requestTrigger, type TriggerRow } from '../service/triggers.js';
import type { EpochOutcome, RunStatus, TenantRunResult } from '../worker/run-tenant.js';
import { importRowToResult, worstStatus } from '../worker/run-tenant.js';
import { summarize } from './run-now.js';

export interface TriggerFlags {
  config?: string;
  tenant: string[];
  wait?: boolean;
  json?: boolean;
}

const POLL_MS = 200;

export async function triggerCommand(flags: TriggerFlags): Promise<number> {
  const app = openApp(flags.config);
  try {
    const tenants = selectTenants(app.config, flags.tenant);
    const disabled = tenants.filter((t) => !t.enabled).map((t) => t.id);
    if (disabled.length) {
      throw new ConfigError(`tenant ${disabled.join(', ')} is disabled (enabled: false), so no daemon runs it; use \`provisioner run --now --tenant ${disabled[0]}\``);
    }
    const by = requester();
    const requests = tenants.map((t) => ({ tenant: t.id, id: requestTrigger(app.db, t.id, by), daemon: daemonFor(app.db, t.id), requestedAt: Date.now() }));
    const orphans = requests.filter((r) => !r.daemon);
    if (!flags.json) {
      for (const r of requests) {
        process.stdout.write(
          r.daemon
            ? `trigger ${r.id} queued for ${r.tenant} (by ${by}); the running daemon ${describe(r.daemon)} will pick it up within 5 seconds.\n`
            : `trigger ${r.id} queued for ${r.tenant} (by ${by}).\n`,
        );
      }
    }
    for (const r of orphans) {
      process.stderr.write(
        `provisioner: no running daemon serves ${r.tenant} (no \`provisioner run\` has sent a heartbeat lately). ` +
          `The request stays queued and runs when the daemon starts; to process ${r.tenant} now, use \`provisioner run --now --tenant ${r.tenant}\`.\n`,
      );
    }
    if (orphans.length) {
      if (flags.json) process.stdout.write(JSON.stringify(requests.map((r) => requestJson(readTrigger(app.db, r.id)!, r.daemon ?? null)), null, 2) + '\n');
      return ExitCode.failed;
    }
    if (!flags.wait) {
      if (flags.json) process.stdout.write(JSON.stringify(requests.map((r) => requestJson(readTrigger(app.db, r.id)!, r.daemon ?? null)), null, 2) + '\n');
      else process.stdout.write(`Follow it with \`provisioner status${tenants.map((t) => ` --tenant ${t.id}`).join('')}\`, or use trigger --wait next time.\n`);
      return ExitCode.ok;
    }
    return await waitFor(app, requests, flags.json === true);
  } finally {
    app.close();
  }
}

/** Follows the triggers until their runs finish; gives up when the daemon goes away. */
async function waitFor(app: App, requests: { tenant: string; id: number; requestedAt: number }[], json: boolean): Promise<number> {
  const done = new Map<number, TriggerRow>();
  const pickedUp = new Set<number>();
  while (done.size < requests.length) {
    await new Promise((r) => setTimeout(r, POLL_MS));
    for (const r of requests) {
      if (done.has(r.id)) continue;
      const row = readTrigger(app.db, r.id)!;
      if (row.picked_up_at && !pickedUp.has(r.id)) {
        pickedUp.add(r.id);
        if (!json) process.stderr.write(`${r.tenant}: picked up by ${row.picked_up_by} after ${seconds(Date.parse(row.picked_up_at) - r.requestedAt)} s; running\n`);
      }
      if (row.finished_at) {
        done.set(r.id, row);
        continue;
      }
      if (!daemonFor(app.db, r.tenant)) {
        process.stderr.write(
          `provisioner: the daemon stopped before trigger ${r.id} (${r.tenant}) finished; it stays queued and runs when the daemon starts again. ` +
            `To process ${r.tenant} now, use \`provisioner run --now --tenant ${r.tenant}\`.\n`,
        );
        return ExitCode.failed;
      }
    }
  }
  const rows = requests.map((r) => done.get(r.id)!);
  const results = rows.map((row) => resultFromDb(app, row));
  if (json) {
    process.stdout.write(JSON.stringify(rows.map((row, i) => ({ ...requestJson(row), result: results[i] })), null, 2) + '\n');
  } else {
    process.stdout.write(summarize(results, false));
    for (const row of rows) {
      process.stdout.write(`${row.tenant}: ${row.status} (requested ${row.requested_at}, finished after ${seconds(Date.parse(row.finished_at!) - Date.parse(row.requested_at))} s)\n`);
    }
  }
  return exitCodeForStatuses(rows.map((r) => (r.status ?? 'failed') as RunStatus));
}

/** The exit codes of `run --now`, from the statuses the daemon recorded. */
export function exitCodeForStatuses(statuses: RunStatus[]): number {
  if (statuses.some((s) => s === 'failed' || s === 'busy' || s === 'interrupted')) return ExitCode.failed;
  if (statuses.some((s) => s === 'errors')) return ExitCode.problems;
  return ExitCode.ok;
}

/** What the daemon's run did, rebuilt from the runs and imports tables. */
function resultFromDb(app: App, row: TriggerRow): TenantRunResult {
  const base: TenantRunResult = { tenant: row.tenant, runId: row.run_id, status: (row.status ?? 'failed') as RunStatus, message: row.message, epochs: [], settling: [], newlyStale: [] };
  if (row.run_id === null) return base;
  const imports = app.db.prepare('SELECT * FROM imports WHERE run_id = ? ORDER BY id').all(row.run_id) as Record<string, unknown>[];
  const sample = app.db.prepare('SELECT line, column, value, reason FROM import_errors WHERE import_id = ? ORDER BY line LIMIT 10');
  const epochs = new Map<string, EpochOutcome>();
  for (const i of imports) {
    const epoch = String(i.epoch);
    const file: FileImportResult = {
      ...importRowToResult(i),
      sampleErrors: (sample.all(Number(i.id)) as { line: number; column: string | null; value: string | null; reason: string }[]).map(
        (e) => `line ${e.line}: ${e.column ? `${e.column}${e.value ? ` "${e.value}"` : ''}: ` : ''}${e.reason}`,
      ),
    };
    const outcome = epochs.get(epoch) ?? { epoch, status: 'applied' as ImportStatus, files: [], remotePath: null };
    outcome.files.push(file);
    outcome.status = worstStatus(outcome.files.map((f) => f.status));
    epochs.set(epoch, outcome);
  }
  return { ...base, epochs: [...epochs.values()] };
}

function requestJson(row: TriggerRow, daemon?: DaemonInfo | null) {
  return {
    trigger: row.id,
    tenant: row.tenant,
    requestedAt: row.requested_at,
    requestedBy: row.requested_by,
    pickedUpAt: row.picked_up_at,
    pickedUpBy: row.picked_up_by,
    finishedAt: row.finished_at,
    runId: row.run_id,
    status: row.status,
    message: row.message,
    ...(daemon !== undefined ? { daemon: daemon ? { owner: daemon.owner, since: daemon.startedAt } : null } : {}),
  };
}

const describe = (d: DaemonInfo) => `${d.owner} (up since ${d.startedAt})`;
const seconds = (ms: number) => (Math.max(0, ms) / 1000).toFixed(1);
