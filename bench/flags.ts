// Command-line flags of `npm run bench` and its usage text.
import { existsSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import type { SftpServerKind } from '../test/harness/sftp-server.js';

export const SSHD = '/usr/sbin/sshd';

/** The lines of work, in the order they run and print. */
export const ROW_NAMES = ['new', 'resync', 'scattered', 'memory', 'passwords', 'poll', 'poll10k', 'daemon', 'pg'] as const;
export type RowName = (typeof ROW_NAMES)[number];

/** A row needs these measured first (they run, and print, too). */
const NEEDS: Record<RowName, RowName[]> = {
  new: [],
  resync: ['new'],
  scattered: [],
  memory: ['new', 'resync'],
  passwords: [],
  poll: [],
  poll10k: ['poll'],
  daemon: ['new'],
  pg: [],
};

export const USAGE = `usage: npm run bench -- [flags]

Measures provisioner (node dist/src/cli.js as a child process) side by side with the same work
done by hand, one table row per line of work, and checks each against its target.

rows (names for --only):
  new        1  new users N: fresh database, one epoch of N samegoal users
                by hand: sftp -b get + one sqlite3 -batch (.import into a TEMP table, upsert)
  resync     2  re-sync N, 1% changed: the same database again, N users of which 1% differ
                by hand: the same recipe again on the by-hand database of row 1
  scattered  1b new users N, the same users with their ids in no order (first N only; 150 MiB)
                by hand: row 1's recipe on the same shuffled file
  memory     3  peak RSS of rows 1 and 2 at each N (limit 150 MiB)
  passwords  4  a roster-students roster with date passwords: first import, re-run unchanged,
                against the same roster without PASSWORD on an sso: google tenant
  poll       5  T tenants with nothing to do, one run --now of all of them
                by hand: a bare ssh2 loop, 32 connections at a time (connect, sftp, readdir, end)
  poll10k    5  10,000 tenants against the T-tenant run: time and peak RSS (not in --quick)
  daemon     6  provisioner run (daemon) + trigger --wait against run --now minus its start-up
  pg         7  new users N into PostgreSQL: row 1 with database: a fresh PostgreSQL database
                by hand: sftp -b get + one psql (\\copy into a TEMP table, upsert)
                server: PROVISIONER_TEST_PG, else postgres://postgres@127.0.0.1:5432/postgres;
                skipped (neither pass nor fail) without one or without psql

flags:
  --quick           N = 100,000 and 500,000 (pg: 100,000 only), T = 200, 1,000 students,
                    no poll10k; about 3 minutes in all on 2 cores
  --rows N[,N2]     sizes for rows new, resync, memory, daemon, pg (default 1000000,5000000)
  --only NAME[,..]  run only these rows (and the rows they need: resync and memory need new,
                    daemon needs new, poll10k needs poll)
  --repeat K        run each measured step K times and keep the fastest (peak RSS: the largest)
  --tenants T       tenants for the poll row (default 1000; --quick 200)
  --students S      students in the passwords roster (default 5000; --quick 1000)
  --timeout S       stop any one provisioner or by-hand step after S seconds and fail its row
                    (default 1800; --quick 60)
  --server KIND     openssh (default when ${SSHD} exists) or embedded; the poll rows need openssh
  --cpu-prof DIR    run provisioner under node --cpu-prof in rows new and resync, keep the
                    .cpuprofile files in DIR, print where the time went
  -h, --help        this text

Exit code: 0 every target held (skipped rows aside), 1 a target or a check failed, 2 bad flags
or missing tools.
Results: the table on stdout, progress on stderr, everything in bench/results/latest.json.
Needs root (sshd with a chroot), OpenSSH sshd and sftp, the sqlite3 CLI; /usr/bin/time if present;
row pg a PostgreSQL server and psql.
`;

export interface Flags {
  quick: boolean;
  sizes: number[];
  /** The rows to run: the ones asked for and the ones they need. */
  rows: Set<RowName>;
  /** The rows asked for (--only), or every row. */
  asked: Set<RowName>;
  /** Sizes of row pg: every N, but in --quick the first only (it must stay under 3 minutes). */
  pgSizes: number[];
  repeat: number;
  tenants: number;
  /** Tenants of the poll10k row. */
  manyTenants: number;
  students: number;
  timeoutSeconds: number;
  server: SftpServerKind;
  cpuProfDir: string | null;
}

export class UsageError extends Error {}

const positive = (name: string, text: string): number => {
  const n = Number(text.trim().replace(/_/g, ''));
  if (!Number.isInteger(n) || n < 1) throw new UsageError(`${name} must be a positive integer, not "${text}"`);
  return n;
};

/** Parses argv; prints the usage and exits 0 on --help; throws UsageError on anything wrong. */
export function parseFlags(argv: string[]): Flags {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        quick: { type: 'boolean', default: false },
        rows: { type: 'string' },
        only: { type: 'string' },
        repeat: { type: 'string', default: '1' },
        tenants: { type: 'string' },
        students: { type: 'string' },
        timeout: { type: 'string' },
        server: { type: 'string' },
        'cpu-prof': { type: 'string' },
        help: { type: 'boolean', short: 'h', default: false },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  if (values.help) {
    process.stdout.write(USAGE);
    process.exit(0);
  }
  const quick = values.quick === true;
  const rowsText = values.rows ?? (quick ? '100000,500000' : '1000000,5000000');
  const sizes = rowsText.split(',').map((s) => positive('--rows', s));

  const asked = new Set<RowName>();
  if (values.only) {
    for (const name of values.only.split(',').map((s) => s.trim()).filter(Boolean)) {
      if (!(ROW_NAMES as readonly string[]).includes(name)) throw new UsageError(`--only: unknown row "${name}"; rows are ${ROW_NAMES.join(', ')}`);
      asked.add(name as RowName);
    }
    if (asked.size === 0) throw new UsageError('--only needs at least one row name');
  } else {
    for (const name of ROW_NAMES) if (!(quick && name === 'poll10k')) asked.add(name);
  }
  const rows = new Set<RowName>();
  const add = (name: RowName) => {
    if (rows.has(name)) return;
    for (const need of NEEDS[name]) add(need);
    rows.add(name);
  };
  for (const name of ROW_NAMES) if (asked.has(name)) add(name);

  const server = values.server ?? (existsSync(SSHD) ? 'openssh' : 'embedded');
  if (server !== 'openssh' && server !== 'embedded') throw new UsageError(`--server must be openssh or embedded, not "${server}"`);
  if (server === 'embedded' && (rows.has('poll') || rows.has('poll10k'))) {
    throw new UsageError('the poll rows need the OpenSSH server (--server openssh); leave them out with --only');
  }
  return {
    quick,
    sizes,
    rows,
    asked,
    pgSizes: quick ? sizes.slice(0, 1) : sizes,
    repeat: positive('--repeat', values.repeat ?? '1'),
    tenants: values.tenants ? positive('--tenants', values.tenants) : quick ? 200 : 1000,
    manyTenants: 10_000,
    students: values.students ? positive('--students', values.students) : quick ? 1000 : 5000,
    timeoutSeconds: values.timeout ? positive('--timeout', values.timeout) : quick ? 60 : 1800,
    server,
    cpuProfDir: values['cpu-prof'] ? path.resolve(values['cpu-prof']) : null,
  };
}
