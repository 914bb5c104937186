// Row 6: the same work as row 1 done by the daemon. `provisioner run` starts on row 1's config
// (a fresh database, the tenant's schedule far in the future, the epoch of N rows waiting);
// once its log says it started, `provisioner trigger --tenant bench --wait` is timed from spawn
// to exit. Compared with row 1's run --now time minus its start-up (spawn to the run's
// started_at), since the daemon has started up already. SIGTERM stops the daemon afterwards.
import fs from 'node:fs';
import path from 'node:path';
import type { TestSftpServer } from '../test/harness/sftp-server.js';
import { checkInterrupted, withCleanup } from './cleanup.js';
import { benchTenant, writeConfig } from './config.js';
import type { Flags } from './flags.js';
import { fmt, lastLines, mib, nextEpoch, putEpoch, queryValue, round, runCli, say, startDaemon, tempDir, waitUntil } from './provisioner.js';
import { addRecipe, type RowResult } from './report.js';
import { TENANT, type RunNowTiming } from './rows-users.js';

const TARGET = 1.1;
/** Jan 1st, 00:00: far enough away for any run of the benchmark but New Year's Eve. */
const FAR_AWAY = '0 0 1 1 *';
const START_SECONDS = 60;

interface DaemonRun {
  seconds: number;
  daemonPeakRssMiB: number;
  problem: string | null;
}

export async function daemonRow(server: TestSftpServer, flags: Flags, n: number, source: string, runNow: RunNowTiming | null): Promise<RowResult> {
  const runs: DaemonRun[] = [];
  for (let rep = 1; rep <= flags.repeat; rep++) {
    checkInterrupted();
    runs.push(await once(server, flags, n, source));
    const r = runs.at(-1)!;
    say(`  daemon: trigger --wait ${r.seconds} s, daemon peak RSS ${r.daemonPeakRssMiB} MiB${r.problem ? ` (${r.problem})` : ''}`);
  }
  addRecipe('6 daemon', 'none: provisioner run --now of row 1 (its time minus its start-up) against the daemon doing the same work on a trigger');
  const b = runs.reduce((x, r) => (!r.problem && (x.problem || r.seconds < x.seconds) ? r : x));
  const reference = runNow ? round(runNow.seconds - runNow.startupSeconds) : null;
  const ratio = reference ? round(b.seconds / reference) : null;
  const problems = [b.problem, !runNow && 'row 1 gave no run --now time to compare with'].filter((x): x is string => !!x);
  return {
    row: 'daemon',
    title: '6 daemon',
    size: `${fmt(n)} rows`,
    provisionerSeconds: b.seconds,
    baselineSeconds: reference,
    ratio,
    peakRssMiB: b.daemonPeakRssMiB,
    target: `<= ${TARGET} x run --now`,
    measured: ratio === null ? 'n/a' : `${ratio.toFixed(2)}x`,
    pass: ratio !== null && !b.problem && ratio <= TARGET,
    check: problems[0] ?? 'ok',
    problems,
    details: { runs, runNow },
  };
}

async function once(server: TestSftpServer, flags: Flags, n: number, source: string): Promise<DaemonRun> {
  const work = tempDir('provisioner-bench-daemon-');
  const tenantRoot = path.join(server.root, TENANT);
  const removeTenant = withCleanup(() => fs.rmSync(tenantRoot, { recursive: true, force: true }));
  try {
    const config = writeConfig(work.dir, { [TENANT]: benchTenant(server, TENANT, { schedule: FAR_AWAY }) });
    putEpoch(server.root, `/${TENANT}/upload`, nextEpoch(), { 'users.csv': source });
    const daemon = startDaemon(work.dir, config, 'daemon');
    try {
      const started = await waitUntil(() => {
        try {
          return fs.readFileSync(daemon.logFile, 'utf8').includes('"msg":"daemon started');
        } catch {
          return false;
        }
      }, START_SECONDS);
      checkInterrupted();
      if (!started) return { seconds: 0, daemonPeakRssMiB: 0, problem: `the daemon did not log "daemon started" within ${START_SECONDS} s: ${lastLines(daemon.logFile)}` };
      say(`  daemon started; trigger --tenant ${TENANT} --wait …`);
      const trigger = await runCli(work.dir, config, ['trigger', '--tenant', TENANT, '--wait', '--json'], { label: 'trigger', timeoutSeconds: flags.timeoutSeconds });
      checkInterrupted();
      let problem = trigger.problem ? `trigger ${trigger.problem}` : null;
      const users = queryValue<number>(path.join(work.dir, 'data', 'provisioner.db'), 'SELECT count(*) FROM users WHERE tenant = ?', TENANT) ?? 0;
      if (!problem && users !== n) problem = `users holds ${fmt(users)} rows of tenant ${TENANT}, expected ${fmt(n)}`;
      const stopped = await daemon.stop();
      if (!problem && stopped.code !== 0) problem = `the daemon exited with ${stopped.code ?? stopped.signal} on SIGTERM: ${lastLines(daemon.logFile)}`;
      return { seconds: round(trigger.m.seconds), daemonPeakRssMiB: mib(stopped.peakRssBytes), problem };
    } finally {
      await daemon.stop();
    }
  } finally {
    await removeTenant();
    await work.remove();
  }
}
