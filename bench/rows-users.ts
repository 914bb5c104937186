// Rows 1-3: new users N, re-sync N with 1% changed, and provisioner's peak RSS in both.
//
// Per N and repetition: a fresh work folder (config.yaml, empty database) and a fresh by-hand
// database. Row 1 puts the generated roster as the tenant's epoch; the by-hand recipe fetches
// that same file and loads it, then provisioner runs. Row 2 puts a second epoch (the same users,
// every 100th with a new e-mail) and both sides run again on what row 1 left.
import fs from 'node:fs';
import path from 'node:path';
import type { TestSftpServer } from '../test/harness/sftp-server.js';
import { BY_HAND_RECIPE, byHandUpsert, type ByHandResult } from './by-hand.js';
import { checkInterrupted, withCleanup } from './cleanup.js';
import { benchTenant, writeConfig } from './config.js';
import type { Flags, RowName } from './flags.js';
import { writeUsersCsv } from './generate.js';
import { summarizeCpuProfile, type ProfileSummary } from './profile.js';
import { fileResult, fmt, mib, nextEpoch, putEpoch, queryValue, round, runCli, say, tempDir, type CliRun } from './provisioner.js';
import { addRecipe, type RowResult } from './report.js';

export const TENANT = 'bench';
export const SPEED_TARGET = 1.5;
export const MEMORY_LIMIT_MIB = 150;
/** Row 2 changes every 100th row: 1%. */
const CHANGE_EVERY = 100;

/** What row 6 compares the daemon with: row 1's run --now. */
export interface RunNowTiming {
  seconds: number;
  /** From spawn to the run's started_at in the database: node, config, database, migrations. */
  startupSeconds: number;
  /** The run itself, as the database records it: started_at to finished_at. */
  runSeconds: number;
}

/** One repetition of a speed row: provisioner's run and the by-hand baseline's (row 7's too). */
export interface Side {
  cli: CliRun;
  byHand: ByHandResult | null;
  problems: string[];
  startupSeconds: number | null;
  runSeconds: number | null;
}

/** The generated rosters of one N, in the server's /source folder (outside any tenant's). */
export interface UserSources {
  n: number;
  first: string;
  bytes: number;
  /** The re-sync roster (every 100th e-mail changed), when row 2 runs. */
  second: string | null;
  changed: number;
  remove: () => Promise<void>;
}

export async function prepareUserSources(server: TestSftpServer, n: number, withResync: boolean): Promise<UserSources> {
  const sourceDir = path.join(server.root, 'source');
  fs.mkdirSync(sourceDir, { recursive: true });
  const first = path.join(sourceDir, `users-${n}.csv`);
  const second = path.join(sourceDir, `users-${n}-changed.csv`);
  const remove = withCleanup(() => {
    fs.rmSync(first, { force: true });
    fs.rmSync(second, { force: true });
  });
  const t0 = Date.now();
  const { bytes } = await writeUsersCsv(first, n);
  const changed = withResync ? (await writeUsersCsv(second, n, { changeEvery: CHANGE_EVERY })).changed : 0;
  checkInterrupted();
  say(`  generated ${fmt(n)} rows (${mib(bytes)} MiB)${withResync ? ` and the re-sync roster (${fmt(changed)} changed)` : ''} in ${round((Date.now() - t0) / 1000, 1)} s`);
  return { n, first, bytes, second: withResync ? second : null, changed, remove };
}

export async function usersRows(server: TestSftpServer, flags: Flags, src: UserSources): Promise<{ rows: RowResult[]; runNow: RunNowTiming | null }> {
  const { n, bytes, changed } = src;
  const withResync = src.second !== null;
  const newRuns: Side[] = [];
  const resyncRuns: Side[] = [];
  let profiles: { first?: ProfileSummary; second?: ProfileSummary } = {};
  for (let rep = 1; rep <= flags.repeat; rep++) {
    checkInterrupted();
    if (flags.repeat > 1) say(`  repetition ${rep} of ${flags.repeat}`);
    const r = await oneRepetition(server, flags, n, src.first, src.second ? { file: src.second, changed } : null, rep === 1);
    newRuns.push(r.first);
    if (r.second) resyncRuns.push(r.second);
    if (rep === 1) profiles = r.profiles;
  }

  addRecipe('1 new users', BY_HAND_RECIPE);
  const rows: RowResult[] = [speedRow('new', '1 new users', n, newRuns, bytes, profiles.first)];
  if (withResync) {
    addRecipe('2 re-sync', 'the same as row 1, again, on the by-hand database row 1 left');
    rows.push(speedRow('resync', '2 re-sync 1%', n, resyncRuns, bytes, profiles.second, changed));
  }
  if (flags.rows.has('memory')) {
    addRecipe('3 memory', 'none: provisioner peak RSS of rows 1 and 2 against a fixed limit');
    rows.push(memoryRow('3 memory, new', n, newRuns));
    if (withResync) rows.push(memoryRow('3 memory, re-sync', n, resyncRuns));
  }
  const best = fastest(newRuns);
  const runNow =
    best && !best.cli.problem && best.startupSeconds !== null && best.runSeconds !== null
      ? { seconds: round(best.cli.m.seconds), startupSeconds: best.startupSeconds, runSeconds: best.runSeconds }
      : null;
  return { rows, runNow };
}

export async function oneRepetition(
  server: TestSftpServer,
  flags: Flags,
  n: number,
  firstFile: string,
  resync: { file: string; changed: number } | null,
  profile: boolean,
  /** What the first step is called in progress lines and profile names. */
  firstLabel = 'new',
): Promise<{ first: Side; second: Side | null; profiles: { first?: ProfileSummary; second?: ProfileSummary } }> {
  const work = tempDir('provisioner-bench-');
  const byHandDb = path.join(work.dir, 'by-hand.db');
  const tenantRoot = path.join(server.root, TENANT);
  const removeTenant = withCleanup(() => fs.rmSync(tenantRoot, { recursive: true, force: true }));
  try {
    const config = writeConfig(work.dir, { [TENANT]: benchTenant(server, TENANT) });
    const dbFile = path.join(work.dir, 'data', 'provisioner.db');
    const profiles: { first?: ProfileSummary; second?: ProfileSummary } = {};

    const step = async (label: string, source: string): Promise<Side> => {
      const remote = putEpoch(server.root, `/${TENANT}/upload`, nextEpoch(), { 'users.csv': source });
      say(`  ${label}: by hand (sftp get + sqlite3 upsert) …`);
      const byHand = await byHandUpsert(server, `${remote}/users.csv`, byHandDb, flags.timeoutSeconds);
      checkInterrupted();
      say(`  ${label}: by hand ${byHand.problem ? 'FAILED' : `${byHand.seconds} s (sftp ${byHand.sftpSeconds} + sqlite3 ${byHand.sqlite3Seconds})`}; provisioner run --now …`);
      const prof = profile && flags.cpuProfDir ? { dir: flags.cpuProfDir, name: `provisioner-${label}-${n}-${Date.now()}.cpuprofile` } : null;
      if (prof) fs.mkdirSync(prof.dir, { recursive: true });
      const cli = await runCli(work.dir, config, ['run', '--now', '--tenant', TENANT, '--json'], {
        label,
        timeoutSeconds: flags.timeoutSeconds,
        nodeArgs: prof ? ['--cpu-prof', '--cpu-prof-dir', prof.dir, '--cpu-prof-name', prof.name] : [],
      });
      checkInterrupted();
      say(`  ${label}: provisioner ${round(cli.m.seconds, 1)} s, peak RSS ${mib(cli.m.peakRssBytes)} MiB${cli.problem ? ` (${cli.problem})` : ''}`);
      if (prof && fs.existsSync(path.join(prof.dir, prof.name))) {
        profiles[label === firstLabel ? 'first' : 'second'] = summarizeCpuProfile(path.join(prof.dir, prof.name));
      }
      const problems: string[] = [];
      if (cli.problem) problems.push(`provisioner ${cli.problem}`);
      if (byHand.problem) problems.push(byHand.problem);
      else if (byHand.usersInDb !== n) problems.push(`by hand: the users table holds ${fmt(byHand.usersInDb)} rows, expected ${fmt(n)}`);
      const started = queryValue<string>(dbFile, 'SELECT started_at FROM runs ORDER BY id DESC LIMIT 1');
      const finished = queryValue<string>(dbFile, 'SELECT finished_at FROM runs ORDER BY id DESC LIMIT 1');
      const startupSeconds = started ? round((Date.parse(started) - cli.m.startedAtMs) / 1000) : null;
      const runSeconds = started && finished ? round((Date.parse(finished) - Date.parse(started)) / 1000) : null;
      return { cli, byHand, problems, startupSeconds, runSeconds };
    };

    const first = await step(firstLabel, firstFile);
    if (!first.cli.problem) {
      const f = fileResult(first.cli.json, TENANT, 'users.csv');
      if (f?.status !== 'applied') first.problems.push(`users.csv is ${f?.status ?? 'missing from the --json output'}, expected applied`);
      else if (f.counts.created !== n) first.problems.push(`created ${fmt(f.counts.created)}, expected ${fmt(n)}`);
      const users = queryValue<number>(dbFile, 'SELECT count(*) FROM users WHERE tenant = ?', TENANT) ?? 0;
      if (users !== n) first.problems.push(`users holds ${fmt(users)} rows of tenant ${TENANT}, expected ${fmt(n)}`);
    }
    if (!resync) return { first, second: null, profiles };
    checkInterrupted();
    const second = await step('resync', resync.file);
    if (first.cli.problem) second.problems.push('row 1 did not finish, so this re-sync did not start from N users');
    if (!second.cli.problem) {
      const f = fileResult(second.cli.json, TENANT, 'users.csv');
      const c = f?.counts;
      if (f?.status !== 'applied') second.problems.push(`users.csv is ${f?.status ?? 'missing from the --json output'}, expected applied`);
      else if (c!.updated !== resync.changed || c!.unchanged !== n - resync.changed || c!.created !== 0) {
        second.problems.push(`counts: created ${fmt(c!.created)}, updated ${fmt(c!.updated)}, unchanged ${fmt(c!.unchanged)}; expected 0, ${fmt(resync.changed)}, ${fmt(n - resync.changed)}`);
      }
    }
    return { first, second, profiles };
  } finally {
    await removeTenant();
    await work.remove();
  }
}

function fastest(runs: Side[]): Side | undefined {
  const ok = runs.filter((r) => !r.cli.problem);
  const pool = ok.length ? ok : runs;
  return pool.reduce<Side | undefined>((best, r) => (!best || r.cli.m.seconds < best.cli.m.seconds ? r : best), undefined);
}

/** The table row of rows 1, 2 and 7: the fastest provisioner run against the fastest baseline. */
export function speedRow(row: RowName, title: string, n: number, runs: Side[], bytes: number, profile?: ProfileSummary, changed?: number): RowResult {
  const best = fastest(runs)!;
  const byHand = runs.map((r) => r.byHand).filter((b): b is ByHandResult => !!b && !b.problem);
  const bestHand = byHand.reduce<ByHandResult | undefined>((b, r) => (!b || r.seconds < b.seconds ? r : b), undefined);
  const problems = [...new Set(runs.flatMap((r) => r.problems))];
  const seconds = round(best.cli.m.seconds);
  const ratio = bestHand ? round(seconds / bestHand.seconds) : null;
  const finished = !best.cli.problem;
  const checks = problems.filter((p) => !p.startsWith('provisioner '));
  return {
    row,
    title,
    size: `${fmt(n)} rows`,
    provisionerSeconds: seconds,
    baselineSeconds: bestHand?.seconds ?? null,
    ratio,
    peakRssMiB: Math.max(...runs.map((r) => mib(r.cli.m.peakRssBytes))),
    target: row === 'pg' ? `<= ${SPEED_TARGET}` : `<= ${SPEED_TARGET} (aim 1.2)`,
    measured: ratio === null ? 'n/a' : finished ? `${ratio.toFixed(2)}x` : `> ${ratio.toFixed(2)}x (${best.cli.m.timedOut ? 'timed out' : 'failed'})`,
    // No figure (a side failed or timed out) is a failure too: the target was not shown to hold.
    pass: ratio !== null && finished && ratio <= SPEED_TARGET && checks.length === 0,
    check: problems.length ? (finished ? checks[0] ?? 'ok' : best.cli.problem!) : row === 'resync' ? `ok (updated ${fmt(changed ?? 0)}, unchanged ${fmt(n - (changed ?? 0))})` : 'ok',
    problems,
    details: {
      csvMiB: mib(bytes),
      rowsPerSecond: finished ? Math.round(n / seconds) : null,
      provisionerRuns: runs.map((r) => ({ seconds: round(r.cli.m.seconds), peakRssMiB: mib(r.cli.m.peakRssBytes), rssSource: r.cli.m.rssSource, exit: r.cli.m.code, timedOut: r.cli.m.timedOut, startupSeconds: r.startupSeconds, counts: fileResult(r.cli.json, TENANT, 'users.csv')?.counts ?? null })),
      byHandRuns: runs.map((r) => r.byHand),
      ...(changed !== undefined ? { changedRows: changed } : {}),
    },
    ...(profile ? { profile } : {}),
  };
}

function memoryRow(title: string, n: number, runs: Side[]): RowResult {
  const peak = Math.max(...runs.map((r) => mib(r.cli.m.peakRssBytes)));
  const finished = runs.some((r) => !r.cli.problem);
  // A run stopped early shows a peak, but not the peak of the whole file: not a pass.
  const pass = finished && peak <= MEMORY_LIMIT_MIB;
  return {
    row: 'memory',
    title,
    size: `${fmt(n)} rows`,
    provisionerSeconds: null,
    baselineSeconds: null,
    ratio: null,
    peakRssMiB: peak,
    target: `<= ${MEMORY_LIMIT_MIB} MiB`,
    measured: `${peak.toFixed(1)} MiB${finished ? '' : ' (run did not finish)'}`,
    pass,
    check: finished ? 'ok' : 'the run did not finish',
    problems: [],
    details: { rssSources: runs.map((r) => r.cli.m.rssSource), polledHwmMiB: runs.map((r) => mib(r.cli.m.polledHwmBytes)) },
  };
}
