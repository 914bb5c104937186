// Ready means ready now, end to end through the real CLI: a loose file whose modification time
// is older than settleSeconds is taken by the first `run --now` (Agylia's keep-in-place file,
// a roster's students.csv, an OPS-COM drop, a SameGoal _auto.csv); one still being written is
// left, and `run --now`, `trigger --wait` and `status` say when it will be taken; a keep-in-place
// file that changes while it is downloaded is not applied.
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { age, dbUsers, epochsIn } from './harness/checks.js';
import { spawnDaemon, waitFor, type DaemonProcess } from './harness/daemon.js';
import { availableSftpServerKinds } from './harness/sftp-server.js';
import { csv, World } from './harness/world.js';

const NEVER_SOON = '0 0 1 1 *';
const AGYLIA = 'Email,FirstName,LastName,Username,Department,JobTitle,Active';
const ROSTER = 'STUDENT_ID,FIRST_NAME,LAST_NAME,GRADE,SITE_ID,EMAIL';
const OPSCOM = 'unique_id,login_source,first_name,last_name,email';
const SAMEGOAL = 'user_id,first_name,last_name,email,role,school_id,active';
const TEN_MINUTES = 10 / 60;

describe.each(availableSftpServerKinds())('ready means ready now on %s sftp', (kind) => {
  let world: World;
  let daemon: DaemonProcess | undefined;
  beforeEach(async (ctx) => {
    world = await World.start(kind, `ready-${kind}-${ctx.task.name}`);
    const common = { settleSeconds: 60, schedule: NEVER_SOON, notify: { when: 'never' } };
    world.addTenant('acme', { ...common, paths: { upload: '/acme/uploads', bak: '/acme/reports', tmp: '/acme/tmp' }, files: { 'user-import.csv': 'agylia-users' }, loose: 'keep' });
    world.addTenant('roster', { ...common, files: { 'students.csv': 'roster-students' }, loose: 'all', options: { strictHeaders: true, sso: 'google' } });
    world.addTenant('parking', { ...common, files: { '*.csv': 'opscom-users' }, loose: 'all' });
    world.addTenant('lincoln', { ...common, files: { 'users.csv': 'samegoal-users' }, loose: 'auto' });
  });
  afterEach(async (ctx) => {
    if (daemon) {
      if (ctx.task.result?.state === 'fail') process.stderr.write(`\n--- daemon output ---\n${daemon.output()}\n`);
      await daemon.stop('SIGKILL');
      daemon = undefined;
    }
    await world.stop(ctx.task.result?.state === 'fail');
  });

  const put = (remote: string, content: string, hoursAgo?: number) => {
    world.putFile(remote, content);
    if (hoursAgo !== undefined) age(world, remote, hoursAgo);
  };
  const ids = (tenant: string) => dbUsers(world, tenant).map((u) => u.external_id);

  it('takes files last changed ten minutes ago in the first run, with settleSeconds 60', async () => {
    put('/acme/uploads/user-import.csv', csv(AGYLIA, 'ada@acme.example,Ada,Lovelace,ada,Research,Analyst,1'), TEN_MINUTES);
    put('/roster/upload/students.csv', csv(ROSTER, '1001,Ada,Lovelace,5,100,ada@roster.example'), TEN_MINUTES);
    put('/parking/upload/permits-export.csv', csv(OPSCOM, 'p1,local,Ada,Lovelace,ada@parking.example'), TEN_MINUTES);
    put('/lincoln/upload/users_auto.csv', csv(SAMEGOAL, 'u1,Ada,Lovelace,ada@lincoln.example,staff,1,1'), TEN_MINUTES);

    const r = await world.cli(['run', '--now', '--tenant', 'acme', '--tenant', 'roster', '--tenant', 'parking', '--tenant', 'lincoln']);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).not.toContain('settling');
    expect(ids('acme')).toEqual(['ada@acme.example']);
    expect(ids('roster')).toEqual(['1001']);
    expect(ids('parking')).toEqual(['p1']);
    expect(ids('lincoln')).toEqual(['u1']);
    // The keep-in-place file stays; the others were moved into epochs and filed in bak.
    expect(world.exists('/acme/uploads/user-import.csv')).toBe(true);
    expect(epochsIn(world, '/acme/reports')).toHaveLength(1);
    for (const t of ['roster', 'parking', 'lincoln']) {
      expect(fs.readdirSync(world.remote(`/${t}/upload`)).filter((n) => n.endsWith('.csv'))).toEqual([]);
      expect(epochsIn(world, `/${t}/upload/bak`)).toHaveLength(1);
    }
  });

  it('leaves a file still being written, and run --now, trigger --wait and status say when it will be taken', async () => {
    put('/lincoln/upload/users_auto.csv', csv(SAMEGOAL, 'u1,Ada,Lovelace,ada@lincoln.example,staff,1,1'));
    put('/acme/uploads/user-import.csv', csv(AGYLIA, 'ada@acme.example,Ada,Lovelace,ada,Research,Analyst,1'));
    const written = Math.floor(Date.now() / 1000) * 1000;

    const r = await world.cli(['run', '--now', '--tenant', 'lincoln', '--tenant', 'acme']);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    const when = /lincoln: users_auto\.csv is still settling \(changed less than 60 s ago\); a run after (\d\d:\d\d:\d\d)Z takes it/.exec(r.stdout);
    expect(when, r.stdout).not.toBeNull();
    expect(r.stdout).toMatch(/acme: user-import\.csv is still settling \(changed less than 60 s ago\); a run after \d\d:\d\d:\d\dZ takes it/);
    expect(world.exists('/lincoln/upload/users_auto.csv')).toBe(true);
    expect(ids('lincoln')).toEqual([]);
    expect(ids('acme')).toEqual([]);

    const status = JSON.parse((await world.cli(['status', '--json', '--tenant', 'lincoln'])).stdout);
    expect(status[0].settling).toEqual([{ file: 'users_auto.csv', reason: 'changed less than 60 s ago', takeAfter: expect.any(String) }]);
    // About a minute after it was last written (the server keeps whole seconds), as run --now said.
    const takeAfter = status[0].settling[0].takeAfter as string;
    expect(Math.abs(Date.parse(takeAfter) - (written + 60_000))).toBeLessThanOrEqual(2000);
    expect(when![1]).toBe(takeAfter.slice(11, 19));
    expect((await world.cli(['status', '--tenant', 'lincoln'])).stdout).toMatch(/settling: users_auto\.csv \(changed less than 60 s ago\); a run after [\d-]+ [\d:]+Z takes it/);

    // Tier-2 asks the running daemon: the result lists it as settling, and it is still not taken.
    daemon = spawnDaemon(world);
    await waitFor('the daemon', () => daemon!.output().includes('daemon started'), 15_000);
    const t = await world.cli(['trigger', '--tenant', 'lincoln', '--wait', '--json']);
    expect(t.code, t.stdout + t.stderr).toBe(0);
    const [triggered] = JSON.parse(t.stdout);
    expect(triggered).toMatchObject({ tenant: 'lincoln', status: 'nothing' });
    expect(triggered.result.settling).toEqual([{ file: 'users_auto.csv', reason: 'changed less than 60 s ago', takeAfter: status[0].settling[0].takeAfter }]);
    expect(world.exists('/lincoln/upload/users_auto.csv')).toBe(true);
    const text = await world.cli(['trigger', '--tenant', 'lincoln', '--wait']);
    expect(text.stdout).toMatch(/lincoln: users_auto\.csv is still settling \(changed less than 60 s ago\); a run after \d\d:\d\d:\d\dZ takes it/);
  });

  it('leaves a file that changes during the short re-check, says when it will be taken, and takes it once it has settled', async () => {
    // A window the test can write into, wide enough for a loaded machine to notice the first look.
    world.set('settleRecheckSeconds', 10);
    const remote = '/lincoln/upload/users_auto.csv';
    put(remote, csv(SAMEGOAL, 'u1,Ada,Lovelace,ada@lincoln.example,staff,1,1'), TEN_MINUTES); // looks settled at first sight
    let finished: { stdout: string; stderr: string } | undefined;
    const run = world.cli(['run', '--now', '--tenant', 'lincoln']).then((r) => (finished = r));
    // The district's upload goes on while the worker looks again.
    const observed = () => {
      if (finished) throw new Error(`the run ended before the test saw its first look at the file:\n${finished.stdout}${finished.stderr}`);
      try {
        return world.query<{ n: number }>("SELECT count(*) AS n FROM file_observations WHERE tenant = 'lincoln'")[0].n === 1;
      } catch {
        return false; // the database is still being made
      }
    };
    await waitFor('the first look at the file', observed, 30_000, 10);
    fs.appendFileSync(world.remote(remote), 'u2,Alan,Turing,alan@lincoln.example,staff,1,1\n');
    const r = await run;
    expect(r.code, r.stdout + r.stderr).toBe(0);
    const when = /lincoln: users_auto\.csv is still settling \(it changed while we looked: still being written\); a run after (\d\d:\d\d:\d\d)Z takes it/.exec(r.stdout);
    expect(when, r.stdout).not.toBeNull();
    // settleSeconds (60) from the change we saw, by our clock (compared as times of day: midnight may lie between).
    const [h, m, sec] = when![1].split(':').map(Number);
    const expected = new Date(Date.now() + 60_000);
    const off = (h * 3600 + m * 60 + sec - (expected.getUTCHours() * 3600 + expected.getUTCMinutes() * 60 + expected.getUTCSeconds()) + 86_400 * 1.5) % 86_400 - 43_200;
    expect(Math.abs(off)).toBeLessThan(30);
    expect(world.exists(remote)).toBe(true);
    expect(epochsIn(world, '/lincoln/upload/bak')).toEqual([]);
    expect(ids('lincoln')).toEqual([]);
    const [s] = JSON.parse((await world.cli(['status', '--tenant', 'lincoln', '--json'])).stdout);
    expect(s.settling).toEqual([{ file: 'users_auto.csv', reason: 'it changed while we looked: still being written', takeAfter: expect.any(String) }]);

    // Once it has stayed the same for settleSeconds, a run takes the whole file.
    age(world, remote, TEN_MINUTES);
    const next = await world.cli(['run', '--now', '--tenant', 'lincoln']);
    expect(next.code, next.stdout + next.stderr).toBe(0);
    expect(ids('lincoln')).toEqual(['u1', 'u2']);
    expect(world.exists(remote)).toBe(false);
  }, 90_000);

  it('does not apply a keep-in-place file that changed while it was downloaded; the next run takes it', async () => {
    // Large enough that the download lasts a while: the test changes the file meanwhile.
    const rows = Array.from({ length: 500_000 }, (_, i) => `user${i}@acme.example,First${i},Last${i},user${i},Research,Analyst,1`);
    put('/acme/uploads/user-import.csv', `${AGYLIA}\n${rows.join('\n')}\n`, TEN_MINUTES);
    const workDir = path.join(world.dir, 'data', 'work');
    const run = world.cli(['run', '--now', '--tenant', 'acme']);
    // The worker downloads into <workDir>/w-<identity>-<run>/keep-0.csv: change the file once that starts.
    let changed = false;
    const watch = (async () => {
      const deadline = Date.now() + 30_000;
      while (!changed && Date.now() < deadline) {
        const downloading = fs.existsSync(workDir) && fs.readdirSync(workDir).some((d) => fs.existsSync(path.join(workDir, d, 'keep-0.csv')));
        if (downloading) {
          age(world, '/acme/uploads/user-import.csv', 9 / 60);
          changed = true;
        } else await new Promise((r) => setTimeout(r, 2));
      }
    })();
    const [r] = await Promise.all([run, watch]);
    expect(changed).toBe(true);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toContain('acme: user-import.csv is still settling (it changed while it was downloaded)');
    expect(world.query<{ n: number }>("SELECT count(*) AS n FROM imports WHERE tenant = 'acme'")[0].n).toBe(0);
    expect(ids('acme')).toEqual([]);
    expect(world.exists('/acme/tmp/user-import.csv.sha1')).toBe(false);

    put('/acme/uploads/user-import.csv', csv(AGYLIA, 'ada@acme.example,Ada,Lovelace,ada,Research,Analyst,1'), TEN_MINUTES);
    const next = await world.cli(['run', '--now', '--tenant', 'acme']);
    expect(next.code, next.stdout + next.stderr).toBe(0);
    expect(ids('acme')).toEqual(['ada@acme.example']);
  }, 120_000);
});
