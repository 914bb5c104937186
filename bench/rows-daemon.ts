// Row 6: the same work as row 1 done by the daemon. `provisioner run` starts on row 1's config
// (a fresh database, the tenant's schedule far in the future, the epoch of N rows waiting);
// once its log says it started, `provisioner trigger --tenant bench --wait` asks it to run the
// tenant. Compared: the daemon's run as the database records it (started_at to finished_at)
// with row 1's run --now run, recorded the same way: the same work, in the daemon's process
// or in a process of its own. Also shown: trigger --wait from spawn to exit, and how long the
// daemon took to start the run after the trigger was asked for. SIGTERM stops the daemon.
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
  /** The daemon's run, started_at to finished_at. */
  seconds: number;
  /** trigger --wait, spawn to exit. */
  triggerSeconds: number;
  /** From the trigger's spawn to the run's started_at. */
  pickupSeconds: number;
  daemonPeakRssMiB: number;
  problem: string | null;
}

export async function daemonRow(server: TestSftpServer, flags: Flags, n: number, source: string, runNow: RunNowTiming | null): Promise<RowResult> {
  const runs: DaemonRun[] = [];
  for (let rep = 1; rep <= flags.repeat; rep++) {
    checkInterrupted();
    runs.push(await once(server, flags, n, source));
    const r = runs.at(-1)!;
    say(`  daemon: run ${r.seconds} s (trigger --wait ${r.triggerSeconds} s, started ${r.pickupSeconds} s after the trigger was spawned), daemon peak RSS ${r.daemonPeakRssMiB} MiB${r.problem ? ` (${r.problem})` : ''}`);
  }
  addRecipe('6 daemon', 'none: the run of row 1\'s run --now against the daemon\'s run of the same epoch on a trigger, each as the database records it (started_at to finished_at)');
  const b = runs.reduce((x, r) => (!r.problem && (x.problem || r.seconds < x.seconds) ? r : x));
  const reference = runNow ? runNow.runSeconds : null;
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
    target: `<= ${TARGET} x run --now's run`,
    measured: ratio === null ? 'n/a' : `${ratio.toFixed(2)}x`,
    pass: ratio !== null && !b.problem && ratio <= TARGET,
    check: problems[0] ?? `ok (trigger --wait ${b.triggerSeconds} s, run started ${b.pickupSeconds} s after it)`,
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
      if (!started) return { seconds: 0, triggerSeconds: 0, pickupSeconds: 0, daemonPeakRssMiB: 0, problem: `the daemon did not log "daemon started" within ${START_SECONDS} s: ${lastLines(daemon.logFile)}` };
      say(`  daemon started; trigger --tenant ${TENANT} --wait …`);
      const trigger = await runCli(work.dir, config, ['trigger', '--tenant', TENANT, '--wait', '--json'], { label: 'trigger', timeoutSeconds: flags.timeoutSeconds });
      checkInterrupted();
      let problem = trigger.problem ? `trigger ${trigger.problem}` : null;
      const db = path.join(work.dir, 'data', 'provisioner.db');
      const users = queryValue<number>(db, 'SELECT count(*) FROM users WHERE tenant = ?', TENANT) ?? 0;
      if (!problem && users !== n) problem = `users holds ${fmt(users)} rows of tenant ${TENANT}, expected ${fmt(n)}`;
      const startedAt = queryValue<string>(db, "SELECT started_at FROM runs WHERE reason = 'trigger' ORDER BY id DESC LIMIT 1");
      const finishedAt = queryValue<string>(db, "SELECT finished_at FROM runs WHERE reason = 'trigger' ORDER BY id DESC LIMIT 1");
      if (!problem && !(startedAt && finishedAt)) problem = 'the database holds no finished run of the trigger';
      const stopped = await daemon.stop();
      if (!problem && stopped.code !== 0) problem = `the daemon exited with ${stopped.code ?? stopped.signal} on SIGTERM: ${lastLines(daemon.logFile)}`;
      const runStart = startedAt ? Date.parse(startedAt) : NaN;
      return {
        seconds: startedAt && finishedAt ? round((Date.parse(finishedAt) - runStart) / 1000) : 0,
        triggerSeconds: round(trigger.m.seconds),
        pickupSeconds: startedAt ? round((runStart - trigger.m.startedAtMs) / 1000) : 0,
        daemonPeakRssMiB: mib(stopped.peakRssBytes),
        problem,
      };
    } finally {
      await daemon.stop();
    }
  } finally {
    await removeTenant();
    await work.remove();
  }
}
