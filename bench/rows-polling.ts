// Row 5: T tenants on ONE OpenSSH server (same user and key, each with its own /tNNNN/upload),
// all with nothing to do, and one `run --now` of all of them. Baseline in the same run: a bare
// ssh2 loop (bench/poll-baseline.ts) that reads each tenant's upload folder, 32 connections at
// a time. Then 10,000 tenants against the T-tenant run: time and peak RSS.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { TestSftpServer } from '../test/harness/sftp-server.js';
import { checkInterrupted, withCleanup } from './cleanup.js';
import { benchTenant, POLLING_GLOBALS, writeConfig } from './config.js';
import type { Flags } from './flags.js';
import { measure } from './measure.js';
import type { PollBaselineParams, PollBaselineResult } from './poll-baseline.js';
import { fmt, lastLines, mib, round, runCli, say, syncDisks, tempDir, type TenantJson } from './provisioner.js';
import { addRecipe, type RowResult } from './report.js';

const BASELINE_SCRIPT = path.join(path.dirname(fileURLToPath(import.meta.url)), 'poll-baseline.js');
const BASELINE_CONCURRENCY = 32;
const SPEED_TARGET = 1.2;
/** 10,000 tenants may take this much longer per tenant than T tenants (10.5x for T = 1,000). */
const PER_TENANT_SLACK = 1.05;
const MEMORY_FLAT = 1.25;

interface Poll {
  seconds: number;
  peakRssMiB: number;
  problem: string | null;
}

const tenantId = (i: number, width: number) => `t${String(i).padStart(width, '0')}`;

export async function pollingRows(server: TestSftpServer, flags: Flags): Promise<RowResult[]> {
  const most = flags.rows.has('poll10k') ? Math.max(flags.tenants, flags.manyTenants) : flags.tenants;
  const width = Math.max(4, String(most - 1).length);
  const ids = Array.from({ length: most }, (_, i) => tenantId(i, width));
  const removeFolders = withCleanup(() => {
    for (const id of ids) fs.rmSync(path.join(server.root, id), { recursive: true, force: true });
  });
  try {
    for (const id of ids) fs.mkdirSync(path.join(server.root, id, 'upload'), { recursive: true });
    const t = flags.tenants;
    const some = ids.slice(0, t);
    const prov: Poll[] = [];
    const base: Poll[] = [];
    for (let rep = 1; rep <= flags.repeat; rep++) {
      checkInterrupted();
      base.push(await byHandPoll(server, flags, some));
      say(`  ${fmt(t)} tenants, bare ssh2 loop: ${base.at(-1)!.seconds} s${base.at(-1)!.problem ? ` (${base.at(-1)!.problem})` : ''}`);
      checkInterrupted();
      prov.push(await provisionerPoll(server, flags, some));
      say(`  ${fmt(t)} tenants, provisioner run --now: ${prov.at(-1)!.seconds} s, peak RSS ${prov.at(-1)!.peakRssMiB} MiB${prov.at(-1)!.problem ? ` (${prov.at(-1)!.problem})` : ''}`);
    }
    addRecipe('5 polling', `a bare ssh2 loop (node, ${BASELINE_CONCURRENCY} connections at a time): connect with the key, sftp, readdir /tNNNN/upload, end; for every tenant`);
    const p = best(prov);
    const b = best(base);
    const rows: RowResult[] = [];
    if (flags.rows.has('poll')) {
      const ratio = b.problem ? null : round(p.seconds / b.seconds);
      const problems = [p.problem, b.problem].filter((x): x is string => !!x);
      rows.push({
        row: 'poll',
        title: '5 polling',
        size: `${fmt(t)} tenants`,
        provisionerSeconds: p.seconds,
        baselineSeconds: b.problem ? null : b.seconds,
        ratio,
        peakRssMiB: p.peakRssMiB,
        target: `<= ${SPEED_TARGET}`,
        measured: ratio === null ? 'n/a' : `${ratio.toFixed(2)}x`,
        pass: ratio !== null && !p.problem && ratio <= SPEED_TARGET,
        check: problems[0] ?? 'ok',
        problems,
        details: { provisionerRuns: prov, baselineRuns: base, baselineConcurrency: BASELINE_CONCURRENCY },
      });
    }
    if (flags.rows.has('poll10k')) {
      const many = flags.manyTenants;
      const big: Poll[] = [];
      for (let rep = 1; rep <= flags.repeat; rep++) {
        checkInterrupted();
        big.push(await provisionerPoll(server, flags, ids.slice(0, many)));
        say(`  ${fmt(many)} tenants, provisioner run --now: ${big.at(-1)!.seconds} s, peak RSS ${big.at(-1)!.peakRssMiB} MiB${big.at(-1)!.problem ? ` (${big.at(-1)!.problem})` : ''}`);
      }
      addRecipe('5 polling 10k', `none: provisioner with ${fmt(many)} tenants against itself with ${fmt(t)} (row 5)`);
      const q = best(big);
      const limit = round((PER_TENANT_SLACK * many) / t, 2);
      const timeRatio = round(q.seconds / p.seconds);
      const rssRatio = round(q.peakRssMiB / p.peakRssMiB);
      const problems = [q.problem, p.problem && `the ${fmt(t)}-tenant run: ${p.problem}`].filter((x): x is string => !!x);
      const common = { row: 'poll10k' as const, size: `${fmt(many)} tenants`, check: problems[0] ?? 'ok', details: { runs: big, comparedWith: { tenants: t, seconds: p.seconds, peakRssMiB: p.peakRssMiB } } };
      rows.push({
        ...common,
        title: '5 polling 10k, time',
        provisionerSeconds: q.seconds,
        baselineSeconds: p.seconds,
        ratio: timeRatio,
        peakRssMiB: q.peakRssMiB,
        target: `<= ${limit}x the ${fmt(t)}-tenant time`,
        measured: `${timeRatio.toFixed(2)}x`,
        pass: problems.length ? false : timeRatio <= limit,
        problems,
      });
      rows.push({
        ...common,
        title: '5 polling 10k, memory',
        provisionerSeconds: null,
        baselineSeconds: null,
        ratio: null,
        peakRssMiB: q.peakRssMiB,
        target: `<= ${MEMORY_FLAT}x the ${fmt(t)}-tenant peak`,
        measured: `${rssRatio.toFixed(2)}x of ${p.peakRssMiB} MiB`,
        pass: problems.length ? false : rssRatio <= MEMORY_FLAT,
        problems: [],
      });
    }
    return rows;
  } finally {
    await removeFolders();
  }
}

const best = (runs: Poll[]): Poll => runs.reduce((b, r) => (!r.problem && (b.problem || r.seconds < b.seconds) ? r : b));

/** One `run --now` (no --tenant: every enabled tenant) over `ids`, each with nothing to do. */
async function provisionerPoll(server: TestSftpServer, flags: Flags, ids: string[]): Promise<Poll> {
  const work = tempDir('provisioner-bench-poll-');
  try {
    const config = writeConfig(work.dir, Object.fromEntries(ids.map((id) => [id, benchTenant(server, id)])), POLLING_GLOBALS);
    const cli = await runCli(work.dir, config, ['run', '--now', '--json'], { label: `poll-${ids.length}`, timeoutSeconds: flags.timeoutSeconds });
    let problem = cli.problem;
    if (!problem) {
      const results = (Array.isArray(cli.json) ? cli.json : []) as TenantJson[];
      const idle = results.filter((r) => r.status === 'nothing').length;
      if (results.length !== ids.length || idle !== ids.length) {
        const other = results.find((r) => r.status !== 'nothing');
        problem = `${fmt(idle)} of ${fmt(ids.length)} tenants had nothing to do${other ? `; ${other.tenant}: ${other.status} ${other.message ?? ''}` : ''}`;
      }
    }
    return { seconds: round(cli.m.seconds), peakRssMiB: mib(cli.m.peakRssBytes), problem };
  } finally {
    await work.remove();
  }
}

/** The bare ssh2 loop over the same folders, as its own node process. */
async function byHandPoll(server: TestSftpServer, flags: Flags, ids: string[]): Promise<Poll> {
  const work = tempDir('provisioner-bench-ssh2-');
  try {
    const params: PollBaselineParams = {
      host: server.host,
      port: server.port,
      username: server.username,
      privateKeyPath: server.privateKeyPath!,
      hostKey: server.hostKeyFingerprint,
      folders: ids.map((id) => `/${id}/upload`),
      concurrency: BASELINE_CONCURRENCY,
      timeoutSeconds: 60,
    };
    const paramsFile = path.join(work.dir, 'params.json');
    fs.writeFileSync(paramsFile, JSON.stringify(params));
    const out = path.join(work.dir, 'ssh2.stdout');
    const err = path.join(work.dir, 'ssh2.stderr');
    syncDisks();
    const m = await measure(process.execPath, [BASELINE_SCRIPT, paramsFile], { cwd: work.dir, stdoutFile: out, stderrFile: err, timeoutSeconds: flags.timeoutSeconds });
    let problem: string | null = null;
    try {
      const r = JSON.parse(fs.readFileSync(out, 'utf8')) as PollBaselineResult;
      if (r.read !== ids.length) problem = `ssh2 loop read ${fmt(r.read)} of ${fmt(ids.length)} folders; first failure: ${r.failures[0] ?? '?'}`;
    } catch {
      problem = `ssh2 loop ${m.timedOut ? 'timed out' : `exited with ${m.code ?? m.signal}`}: ${lastLines(err)}`;
    }
    return { seconds: round(m.seconds), peakRssMiB: mib(m.peakRssBytes), problem };
  } finally {
    await work.remove();
  }
}
