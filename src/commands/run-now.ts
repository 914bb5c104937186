// `provisioner run --now`: process the named tenants (or all) once, in the foreground, then
// print what happened and exit with a code a script can act on.
import Table from 'cli-table3';
import { openApp, selectTenants } from '../app.js';
import { deliverMail, recoverLeftovers } from '../service/housekeeping.js';
import { collectYoung } from '../memory.js';
import { printable } from '../text.js';
import type { TenantRunResult } from '../worker/context.js';
import { exitCodeFor, runTenants } from '../worker/runner.js';
import { ProgressDisplay } from './progress.js';

export interface RunNowFlags {
  config?: string;
  tenant?: string[];
  force?: boolean;
  dryRun?: boolean;
  json?: boolean;
}

export async function runNow(flags: RunNowFlags): Promise<number> {
  const app = await openApp(flags.config);
  try {
    const tenants = selectTenants(app.config, flags.tenant);
    await recoverLeftovers(app);
    const progress = new ProgressDisplay(process.stderr, !flags.json);
    const deps = app.runDeps();
    const results = await runTenants(flags.dryRun ? { ...deps, hasher: null } : deps, tenants, {
      reason: 'now',
      force: flags.force === true,
      dryRun: flags.dryRun === true,
      waitForLockSeconds: 30 * 60,
      onProgress: (tenant, file, rows) => progress.update(`${tenant} ${printable(file)}`, rows),
    });
    progress.stop();
    if (!flags.dryRun) await deliverMail(app);
    if (flags.json) writeJsonList(process.stdout, results);
    else process.stdout.write(summarize(results, flags.dryRun === true));
    return exitCodeFor(results.map((r) => r.status));
  } finally {
    await app.close();
  }
}

/** Items written between two young-generation collections (see writeJsonList). */
const COLLECT_EVERY_ITEMS = 200;

/**
 * `JSON.stringify(items, null, 2)` and a line feed, written item by item: the results of 10,000
 * tenants were one string of some 20 MB, the run's peak of memory. Even item by item, the text
 * of 10,000 results is some 13 MiB of short-lived strings, made after the run's pacing of the
 * collector has stopped, into a young generation that the run grew to 64 MiB: it added 9-12 MiB
 * to the peak. A young collection every 200 items keeps it to a fraction of a MiB (measured on
 * 10,000 tenants), for some fifty collections of well under a millisecond each.
 */
export function writeJsonList(out: NodeJS.WritableStream, items: unknown[]): void {
  if (items.length === 0) return void out.write('[]\n');
  out.write('[\n');
  items.forEach((item, i) => {
    // A line feed inside a JSON value is always escaped: every one in the text starts a line.
    out.write(`  ${JSON.stringify(item, null, 2).replaceAll('\n', '\n  ')}${i < items.length - 1 ? ',' : ''}\n`);
    if (i % COLLECT_EVERY_ITEMS === COLLECT_EVERY_ITEMS - 1) collectYoung();
  });
  out.write(']\n');
}

const time = (iso: string) => iso.slice(11, 19) + 'Z';

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
        table.push([r.tenant, e.epoch, printable(f.file), f.status, c.rows, c.created, c.updated, c.unchanged, c.deactivated, c.archived, c.failed]);
      }
    }
  }
  out.push(dryRun ? 'Dry run: nothing was applied or moved. This is what a run would do:' : 'Summary:');
  out.push(table.toString());
  for (const r of results) {
    if (r.message) out.push(`${r.tenant}: ${printable(r.message)}`);
    for (const s of r.newlyStale) out.push(`${r.tenant}: upload ${s} never completed (no COMPLETE file); it is left alone`);
    for (const s of r.settling) out.push(`${r.tenant}: ${printable(s.file)} is still settling (${s.reason}); a run after ${time(s.takeAfter)} takes it`);
    for (const s of r.skipped) out.push(`${r.tenant}: ${printable(s.reason)}`);
    for (const e of r.epochs) {
      for (const f of e.files) {
        if (f.message) out.push(`${r.tenant} ${e.epoch} ${printable(f.file)}: ${printable(f.message)}`);
        for (const line of f.sampleErrors) out.push(`${r.tenant} ${e.epoch} ${printable(f.file)}: ${printable(line)}`);
        if (f.counts.failed > f.sampleErrors.length) out.push(`  … and ${f.counts.failed - f.sampleErrors.length} more row error(s); see errors.csv`);
      }
      for (const n of e.notes) out.push(`${r.tenant} ${e.epoch}: ${printable(n)}`);
      if (e.remotePath && !dryRun) out.push(`${r.tenant} ${e.epoch}: now at ${printable(e.remotePath)}`);
    }
  }
  return out.join('\n') + '\n';
}
