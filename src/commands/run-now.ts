// `provisioner run --now`: process the named tenants (or all) once, in the foreground, then
// print what happened and exit with a code a script can act on.
import Table from 'cli-table3';
import { openApp, selectTenants } from '../app.js';
import type { TenantRunResult } from '../worker/run-tenant.js';
import { exitCodeFor, runTenants } from '../worker/runner.js';
import { reporterFor, deliverMail } from '../worker/reporting.js';
import { ProgressDisplay } from './progress.js';

export interface RunNowFlags {
  config?: string;
  tenant?: string[];
  force?: boolean;
  dryRun?: boolean;
  json?: boolean;
}

export async function runNow(flags: RunNowFlags): Promise<number> {
  const app = openApp(flags.config);
  try {
    const tenants = selectTenants(app.config, flags.tenant);
    const progress = new ProgressDisplay(process.stderr, !flags.json);
    const results = await runTenants({ ...app, report: reporterFor(app.config) }, tenants, {
      reason: 'now',
      force: flags.force === true,
      dryRun: flags.dryRun === true,
      waitForLockSeconds: 30 * 60,
      onProgress: (tenant, file, rows) => progress.update(`${tenant} ${file}`, rows),
    });
    progress.stop();
    if (!flags.dryRun) await deliverMail(app);
    if (flags.json) process.stdout.write(JSON.stringify(results, null, 2) + '\n');
    else process.stdout.write(summarize(results, flags.dryRun === true));
    return exitCodeFor(results);
  } finally {
    app.close();
  }
}

export function summarize(results: TenantRunResult[], dryRun: boolean): string {
  const out: string[] = [];
  const table = new Table({
    head: ['tenant', 'epoch', 'file', 'status', 'rows', 'created', 'updated', 'unchanged', 'deactivated', 'archived', 'failed'],
    style: { head: [], border: [] },
  });
  for (const r of results) {
    if (r.epochs.length === 0) {
      table.push([r.tenant, '', '', r.status === 'nothing' ? 'nothing to do' : r.status, '', '', '', '', '', '', '']);
    }
    for (const e of r.epochs) {
      for (const f of e.files) {
        const c = f.counts;
        table.push([r.tenant, e.epoch, f.file, f.status, c.rows, c.created, c.updated, c.unchanged, c.deactivated, c.archived, c.failed]);
      }
    }
  }
  out.push(dryRun ? 'Dry run: nothing was applied or moved. This is what a run would do:' : 'Summary:');
  out.push(table.toString());
  for (const r of results) {
    if (r.message) out.push(`${r.tenant}: ${r.message}`);
    for (const s of r.newlyStale) out.push(`${r.tenant}: upload ${s} never completed (no COMPLETE file); it is left alone`);
    for (const s of r.settling) out.push(`${r.tenant}: ${s} is still settling (it must stay unchanged for the settle time); it will be taken on a later run`);
    for (const e of r.epochs) {
      for (const f of e.files) {
        if (f.message) out.push(`${r.tenant} ${e.epoch} ${f.file}: ${f.message}`);
        for (const line of f.sampleErrors) out.push(`${r.tenant} ${e.epoch} ${f.file}: ${line}`);
        if (f.counts.failed > f.sampleErrors.length) out.push(`  … and ${f.counts.failed - f.sampleErrors.length} more row error(s); see errors.csv`);
      }
      if (e.remotePath && !dryRun) out.push(`${r.tenant} ${e.epoch}: now at ${e.remotePath}`);
    }
  }
  return out.join('\n') + '\n';
}
