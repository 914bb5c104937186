// `npm run bench`: provisioner against what a user would do by hand, side by side (SPEC §5).
//
// For each N: a samegoal-users CSV of N rows is streamed to disk inside a real SFTP server's
// root (OpenSSH sshd on loopback, or the embedded server), as a complete epoch. Then
//   baseline:    OpenSSH `sftp -b` fetches the file, the `sqlite3` CLI `.import`s it;
//   provisioner: `node dist/src/cli.js --config … run --now --tenant bench` (a child process)
//                downloads, checks, stages and applies it, and files the epoch away.
// Each step is timed (wall clock) and its peak RSS taken; the users table must hold N rows
// afterwards. Prints a table and writes bench/results/latest.json.
//
//   npm run bench                      # 1,000,000 and 5,000,000 rows
//   npm run bench -- --quick           # 100,000 and 500,000 rows
//   npm run bench -- --rows 200000 --server embedded --repeat 3 --cpu-prof /tmp/prof
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import Database from 'better-sqlite3';
import Table from 'cli-table3';
import YAML from 'yaml';
import { startTestSftpServer, type SftpServerKind, type TestSftpServer } from '../test/harness/sftp-server.js';
import { writeUsersCsv } from './generate.js';
import { killAllChildren, measure, tail, type Measurement } from './measure.js';
import { summarizeCpuProfile, type ProfileSummary } from './profile.js';

const here = path.dirname(fileURLToPath(import.meta.url)); // dist/bench
const REPO = path.resolve(here, '../..');
const CLI = path.resolve(here, '../src/cli.js');
const RESULTS = path.join(REPO, 'bench', 'results', 'latest.json');
const SSHD = '/usr/sbin/sshd';
const TENANT = 'bench';
const MB = 1024 * 1024;

const USAGE = `usage: npm run bench -- [--rows N[,N2…]] [--quick] [--server openssh|embedded] [--repeat K] [--no-baseline] [--cpu-prof DIR]

  --rows N[,N2]   roster sizes (default 1000000,5000000)
  --quick         same as --rows 100000,500000
  --server KIND   SFTP server: openssh (default when ${SSHD} exists) or embedded
  --repeat K      run each side K times and report the fastest (default 1)
  --no-baseline   skip the sftp + sqlite3 baseline
  --cpu-prof DIR  run provisioner under node --cpu-prof, keep the profiles in DIR, print the top functions
`;

interface Flags {
  sizes: number[];
  server: SftpServerKind;
  baseline: boolean;
  cpuProfDir: string | null;
  repeat: number;
}

function parseFlags(argv: string[]): Flags {
  const { values } = parseArgs({
    args: argv,
    options: {
      rows: { type: 'string' },
      quick: { type: 'boolean', default: false },
      server: { type: 'string' },
      'no-baseline': { type: 'boolean', default: false },
      'cpu-prof': { type: 'string' },
      repeat: { type: 'string', default: '1' },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(USAGE);
    process.exit(0);
  }
  const rows = values.rows ?? (values.quick ? '100000,500000' : '1000000,5000000');
  const sizes = rows.split(',').map((s) => Number(s.trim().replace(/_/g, '')));
  if (sizes.length === 0 || sizes.some((n) => !Number.isInteger(n) || n < 1)) throw new UsageError(`--rows must be positive integers separated by commas, not "${rows}"`);
  const server = values.server ?? (existsSync(SSHD) ? 'openssh' : 'embedded');
  if (server !== 'openssh' && server !== 'embedded') throw new UsageError(`--server must be openssh or embedded, not "${server}"`);
  const repeat = Number(values.repeat);
  if (!Number.isInteger(repeat) || repeat < 1) throw new UsageError(`--repeat must be a positive integer, not "${values.repeat}"`);
  return { sizes, server, baseline: !values['no-baseline'], cpuProfDir: values['cpu-prof'] ? path.resolve(values['cpu-prof']) : null, repeat };
}

class UsageError extends Error {}

// ---------------------------------------------------------------------------------------------
// cleanup on every path, including Ctrl-C
// ---------------------------------------------------------------------------------------------

const cleanups: Array<() => Promise<void> | void> = [];

/** Registers `fn` to run on exit or Ctrl-C; call the result to run it now (once) instead. */
function withCleanup(fn: () => void): () => void {
  let done = false;
  const run = () => {
    if (done) return;
    done = true;
    const at = cleanups.indexOf(run);
    if (at >= 0) cleanups.splice(at, 1);
    fn();
  };
  cleanups.push(run);
  return run;
}

let cleaning: Promise<void> | undefined;

/** Runs every registered cleanup, newest first; every caller awaits the same single pass. */
function cleanupAll(): Promise<void> {
  cleaning ??= (async () => {
    while (cleanups.length) {
      try {
        await cleanups.pop()!();
      } catch (err) {
        process.stderr.write(`bench: cleanup failed: ${(err as Error).message}\n`);
      }
    }
  })();
  return cleaning;
}

/** Set by Ctrl-C or SIGTERM: no further step starts and no results are written. */
let interrupted = false;

class Interrupted extends Error {}

function checkInterrupted(): void {
  if (interrupted) throw new Interrupted('interrupted');
}

for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.once(sig, () => {
    interrupted = true;
    process.stderr.write(`\nbench: ${sig}; stopping and cleaning up\n`);
    void killAllChildren()
      .then(cleanupAll)
      .finally(() => process.exit(130));
  });
}

// ---------------------------------------------------------------------------------------------
// one size
// ---------------------------------------------------------------------------------------------

interface ProvisionerRun {
  seconds: number;
  peakRssMB: number;
  rssSource: Measurement['rssSource'];
  polledHwmMB: number;
  exitCode: number | null;
  fileStatus: string | null;
  usersInDb: number;
}

interface BaselineRun {
  seconds: number;
  sftpSeconds: number;
  sqlite3Seconds: number;
  sftpPeakRssMB: number;
  sqlite3PeakRssMB: number;
  usersInDb: number;
}

interface SizeResult {
  rows: number;
  csvMB: number;
  /** The fastest of the repetitions (peak RSS: the largest of them). */
  provisioner: ProvisionerRun & { rowsPerSecond: number; runs: number[]; profile?: ProfileSummary };
  baseline: (BaselineRun & { runs: number[] }) | null;
  /** provisioner seconds / baseline seconds, both the fastest of the repetitions. */
  ratio: number | null;
  /** 1-minute load average before and after: other work on the machine skews the numbers. */
  loadAverage: { before: number; after: number };
  ok: boolean;
  problems: string[];
}

const mb = (bytes: number) => Math.round((bytes / MB) * 10) / 10;
const round = (n: number, digits = 2) => Math.round(n * 10 ** digits) / 10 ** digits;
const say = (line: string) => process.stderr.write(`${line}\n`);
const fmt = (n: number) => n.toLocaleString('en-US');
const load = () => round(os.loadavg()[0]);

/** Flush dirty pages so that one step's writeback does not land in the next step's time. */
function syncDisks(): void {
  spawnSync('sync', { stdio: 'ignore' });
}

let epochCounter = 0;

async function benchSize(server: TestSftpServer, flags: Flags, rows: number): Promise<SizeResult> {
  const problems: string[] = [];
  const before = load();
  if (before > os.cpus().length / 2) say(`  note: load average is ${before} on ${os.cpus().length} cores; other work will skew these numbers`);
  // Generated once per size, outside the tenant's folders; each run gets a fresh epoch of it.
  const sourceDir = path.join(server.root, 'source');
  fs.mkdirSync(sourceDir, { recursive: true });
  const source = path.join(sourceDir, `users-${rows}.csv`);
  const removeSource = withCleanup(() => fs.rmSync(source, { force: true }));
  try {
    const genStart = Date.now();
    const { bytes } = await writeUsersCsv(source, rows);
    checkInterrupted();
    say(`  generated ${fmt(rows)} rows, ${mb(bytes)} MB, in ${round((Date.now() - genStart) / 1000, 1)} s`);

    const baselineRuns: BaselineRun[] = [];
    const provisionerRuns: ProvisionerRun[] = [];
    let profile: ProfileSummary | undefined;
    for (let rep = 1; rep <= flags.repeat; rep++) {
      checkInterrupted();
      if (flags.repeat > 1) say(`  run ${rep} of ${flags.repeat}`);
      if (flags.baseline) {
        const b = await runBaseline(server, `/source/${path.basename(source)}`, rows, problems);
        if (b) baselineRuns.push(b);
      }
      checkInterrupted();
      const p = await runProvisioner(server, flags, source, rows, problems);
      checkInterrupted();
      provisionerRuns.push(p.run);
      profile ??= p.profile;
    }

    const fastest = <T extends { seconds: number }>(runs: T[]): T | undefined => runs.reduce<T | undefined>((best, r) => (!best || r.seconds < best.seconds ? r : best), undefined);
    const bestP = fastest(provisionerRuns)!;
    const bestB = fastest(baselineRuns);
    return {
      rows,
      csvMB: mb(bytes),
      provisioner: {
        ...bestP,
        peakRssMB: Math.max(...provisionerRuns.map((r) => r.peakRssMB)),
        rowsPerSecond: Math.round(rows / bestP.seconds),
        runs: provisionerRuns.map((r) => r.seconds),
        ...(profile ? { profile } : {}),
      },
      baseline: bestB ? { ...bestB, runs: baselineRuns.map((r) => r.seconds) } : null,
      ratio: bestB ? round(bestP.seconds / bestB.seconds) : null,
      loadAverage: { before, after: load() },
      ok: problems.length === 0,
      problems,
    };
  } finally {
    removeSource();
  }
}

/** provisioner as an operator runs it: a fresh config and database, the file as a complete epoch. */
async function runProvisioner(
  server: TestSftpServer,
  flags: Flags,
  source: string,
  rows: number,
  problems: string[],
): Promise<{ run: ProvisionerRun; profile?: ProfileSummary }> {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'provisioner-bench-'));
  const tenantRoot = path.join(server.root, TENANT);
  const removeWork = withCleanup(() => {
    fs.rmSync(work, { recursive: true, force: true });
    fs.rmSync(tenantRoot, { recursive: true, force: true });
  });
  try {
    // The upload, as a district's nightly job leaves it: the CSV, then COMPLETE.
    const epoch = `20250101-${String(++epochCounter).padStart(6, '0')}`;
    const epochDir = path.join(tenantRoot, 'upload', epoch);
    fs.mkdirSync(epochDir, { recursive: true });
    try {
      fs.linkSync(source, path.join(epochDir, 'users.csv'));
    } catch {
      fs.copyFileSync(source, path.join(epochDir, 'users.csv'));
    }
    fs.writeFileSync(path.join(epochDir, 'COMPLETE'), '');

    const config = writeConfig(server, work);
    const args = [CLI, '--config', config, 'run', '--now', '--tenant', TENANT, '--json'];
    const profileFile = flags.cpuProfDir ? path.join(flags.cpuProfDir, `provisioner-${rows}-${Date.now()}.cpuprofile`) : null;
    if (profileFile) {
      fs.mkdirSync(path.dirname(profileFile), { recursive: true });
      args.unshift('--cpu-prof', '--cpu-prof-dir', path.dirname(profileFile), '--cpu-prof-name', path.basename(profileFile));
    }
    syncDisks();
    say(`  provisioner run --now …`);
    const stdoutFile = path.join(work, 'provisioner.stdout');
    const stderrFile = path.join(work, 'provisioner.stderr');
    const m = await measure(process.execPath, args, { cwd: work, stdoutFile, stderrFile });
    say(`  provisioner: ${round(m.seconds, 1)} s, peak RSS ${mb(m.peakRssBytes)} MB (exit ${m.code ?? m.signal})`);
    if (m.code !== 0) problems.push(`provisioner exited with ${m.code ?? m.signal}:\n${tail(stderrFile)}`);
    const fileStatus = readFileStatus(stdoutFile);
    if (fileStatus !== 'applied') problems.push(`users.csv status is ${fileStatus ?? '(none)'}, expected applied`);
    const usersInDb = countRows(path.join(work, 'data', 'provisioner.db'), 'SELECT count(*) FROM users WHERE tenant = ?', TENANT);
    if (usersInDb !== rows) problems.push(`users table holds ${fmt(usersInDb)} rows of tenant ${TENANT}, expected ${fmt(rows)}`);
    const run: ProvisionerRun = {
      seconds: round(m.seconds),
      peakRssMB: mb(m.peakRssBytes),
      rssSource: m.rssSource,
      polledHwmMB: mb(m.polledHwmBytes),
      exitCode: m.code,
      fileStatus,
      usersInDb,
    };
    return { run, profile: profileFile && existsSync(profileFile) ? summarizeCpuProfile(profileFile) : undefined };
  } finally {
    removeWork();
  }
}

/** What a user does by hand: `sftp -b` to fetch, then `sqlite3 .import`. */
async function runBaseline(server: TestSftpServer, remoteFile: string, rows: number, problems: string[]): Promise<BaselineRun | null> {
  if (!server.privateKeyPath) {
    problems.push('baseline skipped: the server has no key for sftp batch mode');
    return null;
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'provisioner-bench-by-hand-'));
  const removeDir = withCleanup(() => fs.rmSync(dir, { recursive: true, force: true }));
  try {
    const local = path.join(dir, 'users.csv');
    const batch = path.join(dir, 'batch');
    fs.writeFileSync(batch, `get ${remoteFile} ${local}\n`);
    syncDisks();
    say(`  baseline: sftp get …`);
    const sftp = await measure(
      'sftp',
      [
        '-q', '-b', batch, '-P', String(server.port), '-i', server.privateKeyPath,
        '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'BatchMode=yes',
        '-o', 'IdentitiesOnly=yes', '-o', 'LogLevel=ERROR',
        `${server.username}@${server.host}`,
      ],
      { cwd: dir, stdoutFile: path.join(dir, 'sftp.stdout'), stderrFile: path.join(dir, 'sftp.stderr') },
    );
    checkInterrupted();
    if (sftp.code !== 0 || !existsSync(local)) {
      problems.push(`baseline sftp exited with ${sftp.code ?? sftp.signal}:\n${tail(path.join(dir, 'sftp.stderr'))}`);
      return null;
    }
    const db = path.join(dir, 'by-hand.db');
    const script = [
      'CREATE TABLE users(user_id TEXT PRIMARY KEY, first_name, last_name, email, role, school_id, active);',
      '.mode csv',
      `.import --skip 1 '${local}' users`,
      '',
    ].join('\n');
    syncDisks();
    say(`  baseline: sftp ${round(sftp.seconds, 1)} s; sqlite3 .import …`);
    const sqlite = await measure('sqlite3', ['-batch', '-bail', db], {
      cwd: dir,
      stdin: script,
      stdoutFile: path.join(dir, 'sqlite3.stdout'),
      stderrFile: path.join(dir, 'sqlite3.stderr'),
    });
    checkInterrupted();
    if (sqlite.code !== 0) {
      problems.push(`baseline sqlite3 exited with ${sqlite.code ?? sqlite.signal}:\n${tail(path.join(dir, 'sqlite3.stderr'))}`);
      return null;
    }
    const usersInDb = countRows(db, 'SELECT count(*) FROM users');
    if (usersInDb !== rows) problems.push(`baseline users table holds ${fmt(usersInDb)} rows, expected ${fmt(rows)}`);
    say(`  baseline: sqlite3 ${round(sqlite.seconds, 1)} s`);
    return {
      seconds: round(sftp.seconds + sqlite.seconds),
      sftpSeconds: round(sftp.seconds),
      sqlite3Seconds: round(sqlite.seconds),
      sftpPeakRssMB: mb(sftp.peakRssBytes),
      sqlite3PeakRssMB: mb(sqlite.peakRssBytes),
      usersInDb,
    };
  } finally {
    removeDir(); // free the disk before provisioner runs
  }
}

function writeConfig(server: TestSftpServer, work: string): string {
  const home = `/${TENANT}`;
  const config = {
    database: './data/provisioner.db',
    log: { level: 'info', format: 'json' },
    mail: { from: 'Provisioning <provisioning@vendor.example>', outbox: './data/outbox' },
    tenants: {
      [TENANT]: {
        name: 'Bench district',
        settleSeconds: 0,
        sftp: {
          host: server.host,
          port: server.port,
          username: server.username,
          // Key auth on both servers, as the baseline's sftp uses.
          ...(server.privateKeyPath ? { privateKey: server.privateKeyPath } : { password: server.password }),
          hostKey: server.hostKeyFingerprint,
          timeoutSeconds: 120,
        },
        paths: { upload: `${home}/upload`, bak: `${home}/upload/bak`, tmp: `${home}/tmp` },
        files: { 'users.csv': 'samegoal-users' },
        notify: { to: [], when: 'never' },
      },
    },
  };
  const file = path.join(work, 'config.yaml');
  fs.writeFileSync(file, YAML.stringify(config));
  return file;
}

/** The status of users.csv in `run --now --json` output. */
function readFileStatus(stdoutFile: string): string | null {
  try {
    const results = JSON.parse(fs.readFileSync(stdoutFile, 'utf8')) as Array<{ epochs: Array<{ files: Array<{ file: string; status: string }> }> }>;
    return results[0]?.epochs[0]?.files.find((f) => f.file === 'users.csv')?.status ?? null;
  } catch {
    return null;
  }
}

function countRows(dbFile: string, sql: string, ...params: unknown[]): number {
  if (!existsSync(dbFile)) return 0;
  const db = new Database(dbFile, { readonly: true, fileMustExist: true });
  try {
    return db.prepare(sql).pluck().get(...params) as number;
  } catch {
    return 0;
  } finally {
    db.close();
  }
}

function versionOf(cmd: string, args: string[]): string | null {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  if (r.error) return null;
  return `${r.stdout ?? ''}${r.stderr ?? ''}`.trim().split('\n')[0] || null;
}

// ---------------------------------------------------------------------------------------------
// main
// ---------------------------------------------------------------------------------------------

async function main(): Promise<number> {
  let flags: Flags;
  try {
    flags = parseFlags(process.argv.slice(2));
  } catch (err) {
    process.stderr.write(`bench: ${(err as Error).message}\n${USAGE}`);
    return 2;
  }
  if (!existsSync(CLI)) {
    process.stderr.write(`bench: ${CLI} is missing; run \`npm run build\` first (npm run bench does)\n`);
    return 2;
  }
  const tools = {
    sftp: versionOf('ssh', ['-V']),
    sqlite3: versionOf('sqlite3', ['--version']),
  };
  if (flags.baseline && (!tools.sftp || !tools.sqlite3)) {
    process.stderr.write(`bench: the baseline needs OpenSSH's sftp and the sqlite3 CLI on PATH (found: sftp ${tools.sftp ? 'yes' : 'no'}, sqlite3 ${tools.sqlite3 ? 'yes' : 'no'}); install them or pass --no-baseline\n`);
    return 2;
  }

  say(`bench: ${flags.server} SFTP server on loopback, sizes ${flags.sizes.map(fmt).join(', ')} rows`);
  const server = await startTestSftpServer(flags.server);
  cleanups.push(() => server.stop());
  say(`bench: server on ${server.host}:${server.port}, root ${server.root}`);
  const results: SizeResult[] = [];
  try {
    for (const rows of flags.sizes) {
      say(`\n${fmt(rows)} rows`);
      results.push(await benchSize(server, flags, rows));
    }
  } finally {
    await cleanupAll();
  }

  const bySize = [...results].sort((a, b) => a.rows - b.rows);
  const smallest = bySize[0];
  const largest = bySize[bySize.length - 1];
  const rssRatio = bySize.length > 1 ? round(largest.provisioner.peakRssMB / smallest.provisioner.peakRssMB) : null;

  const table = new Table({
    head: ['rows', 'provisioner s', 'rows/s', 'peak RSS MB', 'baseline s (sftp + sqlite3)', 'ratio prov/base', 'load avg', 'check'],
    style: { head: [], border: [] },
  });
  for (const r of results) {
    const b = r.baseline;
    table.push([
      fmt(r.rows),
      r.provisioner.seconds.toFixed(2),
      fmt(r.provisioner.rowsPerSecond),
      r.provisioner.peakRssMB.toFixed(1),
      b ? `${b.seconds.toFixed(2)} (${b.sftpSeconds.toFixed(2)} + ${b.sqlite3Seconds.toFixed(2)})` : 'n/a',
      r.ratio === null ? 'n/a' : `${r.ratio.toFixed(2)}x`,
      `${r.loadAverage.before} / ${r.loadAverage.after}`,
      r.ok ? 'ok' : 'FAILED',
    ]);
  }
  const out: string[] = [
    '',
    `provisioner vs sftp + sqlite3 by hand (${flags.server} server, ${os.cpus().length} cores` +
      `${flags.repeat > 1 ? `, fastest of ${flags.repeat} runs` : ''}; load avg: 1-minute, before / after)`,
    table.toString(),
  ];
  if (rssRatio !== null) {
    out.push(`peak RSS at ${fmt(largest.rows)} rows / at ${fmt(smallest.rows)} rows: ${rssRatio.toFixed(2)} (${largest.provisioner.peakRssMB} MB / ${smallest.provisioner.peakRssMB} MB)`);
  }
  for (const r of results) {
    for (const p of r.problems) out.push(`${fmt(r.rows)} rows: ${p}`);
    if (r.provisioner.profile) {
      out.push(`\n${fmt(r.rows)} rows: CPU profile of provisioner (self time, ${fmt(r.provisioner.profile.totalMs)} ms sampled)`);
      for (const f of r.provisioner.profile.files.slice(0, 12)) out.push(`  ${String(f.percent).padStart(5)}%  ${f.name}`);
      out.push('  top functions:');
      for (const f of r.provisioner.profile.functions.slice(0, 15)) out.push(`  ${String(f.percent).padStart(5)}%  ${f.name}`);
    }
  }
  process.stdout.write(out.join('\n') + '\n');

  const report = {
    measuredAt: new Date().toISOString(),
    machine: {
      cpus: os.cpus().length,
      cpuModel: os.cpus()[0]?.model ?? null,
      memoryMB: Math.round(os.totalmem() / MB),
      platform: `${os.platform()} ${os.release()}`,
      node: process.version,
      openssh: tools.sftp,
      sqlite3: tools.sqlite3,
    },
    server: flags.server,
    repeat: flags.repeat,
    results,
    rssRatioLargestToSmallest: rssRatio,
    ok: results.every((r) => r.ok),
  };
  fs.mkdirSync(path.dirname(RESULTS), { recursive: true });
  fs.writeFileSync(RESULTS, JSON.stringify(report, null, 2) + '\n');
  process.stdout.write(`results written to ${path.relative(process.cwd(), RESULTS) || RESULTS}\n`);
  return report.ok ? 0 : 1;
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  async (err: unknown) => {
    if (err instanceof Interrupted) return; // the signal handler cleans up and exits
    await cleanupAll();
    process.stderr.write(`bench: ${(err as Error)?.stack ?? String(err)}\n`);
    process.exitCode = 1;
  },
);
