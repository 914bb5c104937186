// `npm run bench`: provisioner against the same work done by hand, side by side in one run
// (SPEC §5). provisioner is a black box: a config.yaml, files on the SFTP server's disk, and
// `node dist/src/cli.js … run --now --json` (or the daemon) as a measured child process.
// One table row per line of work; exit 0 when every target holds, 1 when one fails, 2 for bad
// flags or missing tools. See bench/README.md and `npm run bench -- --help`.
//
//   bench/flags.ts          flags and usage          bench/config.ts       the config it writes
//   bench/provisioner.ts    running the CLI          bench/by-hand.ts      sftp + sqlite3 by hand
//   bench/rows-users.ts     rows 1-3                 bench/rows-passwords.ts  row 4
//   bench/rows-scattered.ts row 1b (row 1 shuffled)
//   bench/rows-polling.ts   row 5 (+ poll-baseline.ts, the bare ssh2 loop)
//   bench/rows-daemon.ts    row 6                    bench/report.ts       table and JSON
//   bench/rows-pg.ts        row 7 (+ by-hand-pg.ts, sftp + psql; postgres.ts, the server)
//   bench/measure.ts        time and peak RSS        bench/cleanup.ts      undo on every path
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startTestSftpServer } from '../test/harness/sftp-server.js';
import { checkInterrupted, cleanupAll, installSignalHandlers, Interrupted, withCleanup } from './cleanup.js';
import { parseFlags, SSHD, UsageError, type Flags } from './flags.js';
import { findPgServer, shownUrl } from './postgres.js';
import { scatteredRow } from './rows-scattered.js';
import { CLI, fmt, round, say } from './provisioner.js';
import { held, renderTable, writeResults, type RowResult } from './report.js';
import { daemonRow } from './rows-daemon.js';
import { passwordRows } from './rows-passwords.js';
import { pgRow, skippedPgRow } from './rows-pg.js';
import { pollingRows } from './rows-polling.js';
import { prepareUserSources, usersRows } from './rows-users.js';

const here = path.dirname(fileURLToPath(import.meta.url)); // dist/bench
const RESULTS = path.resolve(here, '../../bench/results/latest.json');

function versionOf(cmd: string, args: string[]): string | null {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  if (r.error) return null;
  return `${r.stdout ?? ''}${r.stderr ?? ''}`.trim().split('\n')[0] || null;
}

/** What the selected rows need on this machine; a line per missing piece. */
function missingTools(flags: Flags, tools: Record<string, string | null>): string[] {
  const missing: string[] = [];
  if (!existsSync(CLI)) missing.push(`${CLI} is missing; run \`npm run build\` first (npm run bench does)`);
  const byHand = flags.rows.has('new') || flags.rows.has('resync') || flags.rows.has('pg');
  if (byHand && !tools.openssh) missing.push("OpenSSH's sftp client (rows new, resync and pg)");
  if (byHand && !tools.sqlite3) missing.push('the sqlite3 CLI (rows new and resync)');
  if (flags.server === 'openssh') {
    if (!existsSync(SSHD)) missing.push(`OpenSSH's sshd at ${SSHD} (or pass --server embedded and leave out the poll rows)`);
    if (process.getuid?.() !== 0) missing.push('root: sshd with a chroot needs it (or pass --server embedded and leave out the poll rows)');
  }
  return missing;
}

const load = () => round(os.loadavg()[0]);

async function main(): Promise<number> {
  let flags: Flags;
  try {
    flags = parseFlags(process.argv.slice(2));
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    process.stderr.write(`bench: ${err.message}\n(see npm run bench -- --help)\n`);
    return 2;
  }
  const tools: Record<string, string | null> = { openssh: versionOf('ssh', ['-V']), sqlite3: versionOf('sqlite3', ['--version']), psql: versionOf('psql', ['--version']) };
  const missing = missingTools(flags, tools);
  if (missing.length) {
    process.stderr.write(`bench: missing:\n${missing.map((m) => `  - ${m}\n`).join('')}`);
    return 2;
  }
  installSignalHandlers();
  const results: RowResult[] = [];
  const before = load();
  const cores = os.availableParallelism();
  const usersWork = flags.rows.has('new') || flags.rows.has('scattered') || flags.rows.has('daemon');
  // Row 7 needs a PostgreSQL server; without one it is skipped and nothing else changes.
  const pg = flags.rows.has('pg') ? findPgServer() : null;
  const pgUrl = pg && 'url' in pg ? pg.url : null;
  if (pg) tools.postgresServer = 'version' in pg ? pg.version : null;
  const sizes = flags.sizes.filter((n) => usersWork || (pgUrl && flags.pgSizes.includes(n)));
  say(`bench: rows ${[...flags.rows].join(', ')}${sizes.length ? `; N = ${sizes.map(fmt).join(', ')}` : ''}; ${cores} cores; load average ${before}`);
  if (before > cores / 2) say(`bench: note: load average ${before} on ${cores} cores; other work will skew these numbers`);
  if (pg) say('url' in pg ? `bench: PostgreSQL ${pg.version} at ${shownUrl(pg.url)}` : `bench: row 7 skipped: ${pg.skipped}`);
  if (pg && 'skipped' in pg) results.push(skippedPgRow(pg.skipped, flags.pgSizes));

  // Polling opens dozens of connections at once: sshd must not drop any (MaxStartups).
  const server = await startTestSftpServer(flags.server, { maxStartups: 1024, maxSessions: 1024 });
  withCleanup(() => server.stop());
  try {
    say(`bench: ${server.kind} server on ${server.host}:${server.port}, root ${server.root}`);
    for (const n of sizes) {
      checkInterrupted();
      say(`\n${fmt(n)} rows`);
      const sources = await prepareUserSources(server, n, flags.rows.has('resync'));
      try {
        if (flags.rows.has('new')) {
          const users = await usersRows(server, flags, sources);
          results.push(...users.rows);
          if (flags.rows.has('daemon')) {
            say(`  row 6: the daemon`);
            results.push(await daemonRow(server, flags, n, sources.first, users.runNow));
          }
        }
        if (flags.rows.has('scattered') && n === sizes[0]) {
          say(`  row 1b: the same users, their ids in no order`);
          results.push(await scatteredRow(server, flags, sources));
        }
        if (pgUrl && flags.pgSizes.includes(n)) {
          say(`  row 7: PostgreSQL`);
          results.push(await pgRow(server, flags, pgUrl, sources));
        }
      } finally {
        await sources.remove();
      }
    }
    if (flags.rows.has('passwords')) {
      checkInterrupted();
      say(`\nrow 4: roster passwords, ${fmt(flags.students)} students`);
      results.push(...(await passwordRows(server, flags)));
    }
    if (flags.rows.has('poll') || flags.rows.has('poll10k')) {
      checkInterrupted();
      say(`\nrow 5: polling, ${fmt(flags.tenants)} tenants${flags.rows.has('poll10k') ? ` and ${fmt(flags.manyTenants)}` : ''}`);
      results.push(...(await pollingRows(server, flags)));
    }
  } finally {
    await cleanupAll(); // the server too
  }

  const order = ['new', 'resync', 'scattered', 'memory', 'passwords', 'poll', 'poll10k', 'daemon', 'pg'];
  results.sort((a, b) => order.indexOf(a.row) - order.indexOf(b.row)); // stable: sizes stay in order
  process.stdout.write(renderTable(results, flags));
  writeResults(RESULTS, results, flags, tools, { before, after: load() });
  process.stdout.write(`results written to ${path.relative(process.cwd(), RESULTS) || RESULTS}\n`);
  return results.every(held) ? 0 : 1;
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
