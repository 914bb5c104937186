// Row 1b: new users N whose ids come in no order, as in a district's export sorted by name. Row
// 1's roster lists its ids in order (employees' E… and students' S… mixed, each ascending); this
// row shuffles the same lines. provisioner then reads the staged rows sorted by key
// (src/store/sqlite/key-runs.ts, stage.ts); before it did, a shuffled 1,000,000-row roster took
// four times as long as row 1's (19.6 s against 4.8). Only at the first N (the shuffle holds the
// file in memory), against the same by-hand recipe on the same shuffled file, with the same
// memory limit as row 3.
import fs from 'node:fs';
import path from 'node:path';
import type { TestSftpServer } from '../test/harness/sftp-server.js';
import { checkInterrupted, withCleanup } from './cleanup.js';
import type { Flags } from './flags.js';
import { writeShuffledCopy } from './generate.js';
import { fmt, mib, round, say } from './provisioner.js';
import { addRecipe, type RowResult } from './report.js';
import { MEMORY_LIMIT_MIB, oneRepetition, speedRow, type Side, type UserSources } from './rows-users.js';

export const SCATTERED_TITLE = '1b new users, ids in no order';

export async function scatteredRow(server: TestSftpServer, flags: Flags, src: UserSources): Promise<RowResult> {
  const file = path.join(path.dirname(src.first), `users-${src.n}-shuffled.csv`);
  const remove = withCleanup(() => fs.rmSync(file, { force: true }));
  try {
    const t0 = Date.now();
    const bytes = await writeShuffledCopy(src.first, file);
    say(`  shuffled the ${fmt(src.n)} rows (${mib(bytes)} MiB) in ${round((Date.now() - t0) / 1000, 1)} s`);
    const runs: Side[] = [];
    for (let rep = 1; rep <= flags.repeat; rep++) {
      checkInterrupted();
      if (flags.repeat > 1) say(`  repetition ${rep} of ${flags.repeat}`);
      runs.push((await oneRepetition(server, flags, src.n, file, null, false, 'shuffled')).first);
    }
    addRecipe(SCATTERED_TITLE, "row 1's recipe on the same users, shuffled");
    const row = speedRow('scattered', SCATTERED_TITLE, src.n, runs, bytes);
    if (row.peakRssMiB !== null && row.peakRssMiB > MEMORY_LIMIT_MIB) {
      row.pass = false;
      row.check = `peak RSS ${row.peakRssMiB} MiB, over the ${MEMORY_LIMIT_MIB} MiB limit`;
    }
    return row;
  } finally {
    await remove();
  }
}
