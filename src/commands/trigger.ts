// `provisioner trigger --tenant ID`: tier-2 support asks the running daemon (any daemon of a
// cluster) to process a tenant now. The request is a row in the store; a daemon takes it within
// seconds. With --wait the command follows it to the end and exits like `run --now`.
import { openApp, selectTenants, type App } from '../app.js';
import { ConfigError, ExitCode } from '../errors.js';
import { fromImport } from '../import/import-file.js';
import { liveDaemons, type LiveDaemon } from '../service/status.js';
import type { RunStatus, TriggerRow } from '../store/types.js';
import { emptyResult, worstStatus, type EpochOutcome, type TenantRunResult } from '../worker/context.js';
import { requester } from '../worker/identity.js';
import { exitCodeFor } from '../worker/runner.js';
import { summarize } from './run-now.js';

export interface TriggerFlags {
  config?: string;
  tenant: string[];
  wait?: boolean;
  json?: boolean;
}

/** How often --wait looks at the trigger: one indexed read; soon after the run ends is what tier-2 waits for. */
const POLL_MS = 100;

export async function triggerCommand(flags: TriggerFlags): Promise<number> {
  const app = await openApp(flags.config);
  try {
    const tenants = selectTenants(app.config, flags.tenant);
    const disabled = tenants.filter((t) => !t.enabled).map((t) => t.id);
    if (disabled.length) {
      throw new ConfigError(`tenant ${disabled.join(', ')} is disabled (enabled: false), so no daemon runs it; use \`provisioner run --now --tenant ${disabled[0]}\``);
    }
    const by = requester();
    const daemons = await liveDaemons(app.store);
    const requests: { tenant: string; id: number; daemon: LiveDaemon | undefined; serving: number; requestedAt: number }[] = [];
    for (const t of tenants) {
      const serving = daemons.filter((d) => d.tenants.includes(t.id));
      requests.push({ tenant: t.id, id: await app.store.triggers.request(t.id, by), daemon: serving[0], serving: serving.length, requestedAt: Date.now() });
    }
    const orphans = requests.filter((r) => !r.daemon);
    if (!flags.json) {
      for (const r of requests) {
        process.stdout.write(
          r.serving > 1
            ? `trigger ${r.id} queued for ${r.tenant} (by ${by}); ${r.serving} running daemons serve it: the first with a free slot picks it up, within 5 seconds unless all are busy.\n`
            : r.daemon
              ? `trigger ${r.id} queued for ${r.tenant} (by ${by}); a running daemon (${describe(r.daemon)}) will pick it up within 5 seconds.\n`
              : `trigger ${r.id} queued for ${r.tenant} (by ${by}).\n`,
        );
      }
    }
    for (const r of orphans) {
      process.stderr.write(
        `provisioner: no running daemon serves ${r.tenant} (no \`provisioner run\` has sent a heartbeat lately). ` +
          `The request stays queued and runs when a daemon starts; to process ${r.tenant} now, use \`provisioner run --now --tenant ${r.tenant}\`.\n`,
      );
    }
    if (orphans.length || !flags.wait) {
      if (flags.json) process.stdout.write(JSON.stringify(await Promise.all(requests.map(async (r) => requestJson((await app.store.triggers.get(r.id))!, r.daemon ?? null))), null, 2) + '\n');
      else if (!orphans.length) process.stdout.write(`Follow it with \`provisioner status${tenants.map((t) => ` --tenant ${t.id}`).join('')}\`, or use trigger --wait next time.\n`);
      return orphans.length ? ExitCode.failed : ExitCode.ok;
    }
    return await waitFor(app, requests, flags.json === true);
  } finally {
    await app.close();
  }
}

/** Follows the triggers until their runs finish; gives up when no daemon serves the tenant any more. */
async function waitFor(app: App, requests: { tenant: string; id: number; requestedAt: number }[], json: boolean): Promise<number> {
  const done = new Map<number, TriggerRow>();
  const pickedUp = new Set<number>();
  while (done.size < requests.length) {
    await new Promise((r) => setTimeout(r, POLL_MS));
    for (const r of requests) {
      if (done.has(r.id)) continue;
      const row = (await app.store.triggers.get(r.id))!;
      if (row.pickedUpAt && !pickedUp.has(r.id)) {
        pickedUp.add(r.id);
        if (!json) process.stderr.write(`${r.tenant}: picked up by ${row.pickedUpBy} after ${seconds(Date.parse(row.pickedUpAt) - r.requestedAt)} s; running\n`);
      }
      if (row.finishedAt) {
        done.set(r.id, row);
        continue;
      }
      if (!(await liveDaemons(app.store)).some((d) => d.tenants.includes(r.tenant))) {
        process.stderr.write(
          `provisioner: the daemon stopped before trigger ${r.id} (${r.tenant}) finished; it stays queued and runs when a daemon starts again. ` +
            `To process ${r.tenant} now, use \`provisioner run --now --tenant ${r.tenant}\`.\n`,
        );
        return ExitCode.failed;
      }
    }
  }
  const rows = requests.map((r) => done.get(r.id)!);
  const results = await Promise.all(rows.map((row) => resultFromStore(app, row)));
  if (json) {
    process.stdout.write(JSON.stringify(rows.map((row, i) => ({ ...requestJson(row), result: results[i] })), null, 2) + '\n');
  } else {
    process.stdout.write(summarize(results, false));
    for (const row of rows) {
      process.stdout.write(`${row.tenant}: ${row.status} (requested ${row.requestedAt}, finished after ${seconds(Date.parse(row.finishedAt!) - Date.parse(row.requestedAt))} s)\n`);
    }
  }
  return exitCodeFor(rows.map((r) => (r.status ?? 'failed') as RunStatus));
}

/** What the daemon's run did, rebuilt from the runs, imports and outcomes it recorded. */
async function resultFromStore(app: App, row: TriggerRow): Promise<TenantRunResult> {
  const base: TenantRunResult = { ...emptyResult(row.tenant, row.runId), status: (row.status ?? 'failed') as RunStatus, message: row.message };
  if (row.runId === null) return base;
  const [run, imports] = await Promise.all([app.store.runs.recent(row.tenant, 20), app.store.imports.byRun(row.runId)]);
  const epochs = new Map<string, EpochOutcome>();
  for (const i of imports) {
    const file = fromImport(i);
    if (i.counts.failed > 0) {
      file.sampleErrors = (await app.store.imports.errors(i.id, 10)).map((e) => `line ${e.line}: ${e.column ? `${e.column}${e.value ? ` "${e.value}"` : ''}: ` : ''}${e.reason}`);
    }
    const outcome = epochs.get(i.epoch) ?? { epoch: i.epoch, status: 'applied' as const, files: [], remotePath: null, notes: [] };
    outcome.files.push(file);
    outcome.status = worstStatus(outcome.files.map((f) => f.status));
    epochs.set(i.epoch, outcome);
  }
  const settling = run.find((r) => r.id === row.runId)?.settling ?? [];
  return { ...base, epochs: [...epochs.values()], settling };
}

function requestJson(row: TriggerRow, daemon?: LiveDaemon | null) {
  return {
    trigger: row.id,
    tenant: row.tenant,
    requestedAt: row.requestedAt,
    requestedBy: row.requestedBy,
    pickedUpAt: row.pickedUpAt,
    pickedUpBy: row.pickedUpBy,
    finishedAt: row.finishedAt,
    runId: row.runId,
    status: row.status,
    message: row.message,
    ...(daemon !== undefined ? { daemon: daemon ? { owner: daemon.owner, host: daemon.host, since: daemon.startedAt } : null } : {}),
  };
}

const describe = (d: LiveDaemon) => `${d.owner}, up since ${d.startedAt}`;
const seconds = (ms: number) => (Math.max(0, ms) / 1000).toFixed(1);
