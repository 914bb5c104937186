// Row 7: row 1's first import of N users with the directory in PostgreSQL. Per repetition two
// fresh databases on the server, dropped on every path: provisioner's (the config's `database:`)
// and the by-hand recipe's (sftp + one psql). Each side starts after a CHECKPOINT, so that
// neither pays for the other's writes. Without a server (or psql) the row is skipped: shown in
// the table, but neither a pass nor a failure.
import fs from 'node:fs';
import path from 'node:path';
import type { TestSftpServer } from '../test/harness/sftp-server.js';
import { BY_HAND_PG_RECIPE, byHandPgUpsert } from './by-hand-pg.js';
import { checkInterrupted, withCleanup } from './cleanup.js';
import { benchTenant, writeConfig } from './config.js';
import type { Flags } from './flags.js';
import { checkpoint, freshDatabase, pgCount } from './postgres.js';
import { fileResult, fmt, mib, nextEpoch, putEpoch, round, runCli, say, tempDir } from './provisioner.js';
import { addRecipe, type RowResult } from './report.js';
import { SPEED_TARGET, speedRow, TENANT, type Side, type UserSources } from './rows-users.js';

const TITLE = '7 PostgreSQL new users';

export async function pgRow(server: TestSftpServer, flags: Flags, pgServer: string, src: UserSources): Promise<RowResult> {
  const runs: Side[] = [];
  for (let rep = 1; rep <= flags.repeat; rep++) {
    checkInterrupted();
    if (flags.repeat > 1) say(`  repetition ${rep} of ${flags.repeat}`);
    runs.push(await once(server, flags, pgServer, src));
  }
  addRecipe(TITLE, BY_HAND_PG_RECIPE);
  return speedRow('pg', TITLE, src.n, runs, src.bytes);
}

/** One row standing for every size the row would have run at. */
export function skippedPgRow(reason: string, sizes: number[]): RowResult {
  addRecipe(TITLE, BY_HAND_PG_RECIPE); // what the row would compare, under the table all the same
  return {
    row: 'pg',
    title: TITLE,
    size: `${sizes.map(fmt).join(', ')} rows`,
    provisionerSeconds: null,
    baselineSeconds: null,
    ratio: null,
    peakRssMiB: null,
    target: `<= ${SPEED_TARGET}`,
    measured: 'n/a',
    pass: false,
    skipped: reason,
    check: reason,
    problems: [],
    details: {},
  };
}

async function once(server: TestSftpServer, flags: Flags, pgServer: string, src: UserSources): Promise<Side> {
  const { n } = src;
  const work = tempDir('provisioner-bench-pg-');
  const tenantRoot = path.join(server.root, TENANT);
  const removeTenant = withCleanup(() => fs.rmSync(tenantRoot, { recursive: true, force: true }));
  const directory = freshDatabase(pgServer, 'provisioner_bench');
  const byHandDb = freshDatabase(pgServer, 'provisioner_bench_by_hand');
  try {
    const config = writeConfig(work.dir, { [TENANT]: benchTenant(server, TENANT) }, { database: directory.url });
    const remote = putEpoch(server.root, `/${TENANT}/upload`, nextEpoch(), { 'users.csv': src.first });
    say('  pg: by hand (sftp get + psql \\copy and upsert) …');
    checkpoint(pgServer);
    const byHand = await byHandPgUpsert(server, `${remote}/users.csv`, byHandDb.url, flags.timeoutSeconds);
    checkInterrupted();
    say(`  pg: by hand ${byHand.problem ? 'FAILED' : `${byHand.seconds} s (sftp ${byHand.sftpSeconds} + psql ${byHand.psqlSeconds})`}; provisioner run --now …`);
    checkpoint(pgServer);
    const cli = await runCli(work.dir, config, ['run', '--now', '--tenant', TENANT, '--json'], { label: 'pg', timeoutSeconds: flags.timeoutSeconds });
    checkInterrupted();
    say(`  pg: provisioner ${round(cli.m.seconds, 1)} s, peak RSS ${mib(cli.m.peakRssBytes)} MiB${cli.problem ? ` (${cli.problem})` : ''}`);
    const problems: string[] = [];
    if (cli.problem) problems.push(`provisioner ${cli.problem}`);
    else {
      const f = fileResult(cli.json, TENANT, 'users.csv');
      if (f?.status !== 'applied') problems.push(`users.csv is ${f?.status ?? 'missing from the --json output'}, expected applied`);
      else if (f.counts.created !== n) problems.push(`created ${fmt(f.counts.created)}, expected ${fmt(n)}`);
      const users = pgCount(directory.url, `SELECT count(*) FROM users WHERE tenant = '${TENANT}'`) ?? 0;
      if (users !== n) problems.push(`users holds ${fmt(users)} rows of tenant ${TENANT}, expected ${fmt(n)}`);
    }
    if (byHand.problem) problems.push(byHand.problem);
    else if (byHand.usersInDb !== n) problems.push(`by hand: the users table holds ${fmt(byHand.usersInDb)} rows, expected ${fmt(n)}`);
    return { cli, byHand, problems, startupSeconds: null, runSeconds: null };
  } finally {
    await byHandDb.drop();
    await directory.drop();
    await removeTenant();
    await work.remove();
  }
}
