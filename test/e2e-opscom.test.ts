// OPS-COM managed user import (seeds 003, 004), end to end: any CSV dropped into the folder is
// taken (keeping its name), moved to a bak folder that is created if missing, header cells
// match a column's possible names, failed rows go back by mail as a CSV with the reason, and
// active 0 archives the user with `_<year>` on the identifying fields. Real SFTP server (both
// kinds), real CLI, real SQLite.
import fs from 'node:fs';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { dbUsers, epochsIn, listRemote, mails, readCsv, resultJson } from './harness/checks.js';
import { csv, World, worlds } from './harness/world.js';

const UPLOAD = '/parking/import';
const BAK = '/parking/import/bak';
// The district's own export: OPS-COM's possible names, not the canonical ones, in its own order.
const HEADER = 'UniqueId,Login Source,First Name,LastName,UserName,E-mail,Cell Phone,User Type ID,Student Number,Active';

describe.each(worlds())('OPS-COM managed user import on %s', (_label, kind, store) => {
  let world: World;
  const year = new Date().getUTCFullYear();
  beforeEach(async (ctx) => {
    world = await World.start(kind, `opscom-${kind}-${ctx.task.name}-${store}`, { store });
    world.addTenant('parking', {
      schedule: '*/5 * * * *',
      paths: { upload: UPLOAD, bak: BAK, tmp: '/parking/tmp' },
      files: { '*.csv': 'opscom-users' },
      loose: 'all',
      options: { archiveInactive: true, actor: 'import-task@parking.example' },
      notify: { to: ['failed-imports@university.example'], replyTo: 'parking-admin@university.example', when: 'failures' },
    });
    fs.mkdirSync(world.remote(UPLOAD), { recursive: true });
  });
  // ctx, not onTestFailed: vitest runs afterEach hooks before onTestFailed callbacks.
  afterEach(async (ctx) => {
    await world.stop(ctx.task.result?.state === 'fail');
  });

  it('takes any dropped CSV under its own name, reads aliased headers, files it in a new bak folder and mails the failed rows', async () => {
    world.putFile(
      `${UPLOAD}/Fall Permits 2024.csv`,
      csv(
        HEADER,
        'J3,saml,Jay,Three,j3,j3@university.example,555-0100,2,S123,1',
        'K4,local,Kay,Four,k4,k4@university.example,,1,,',
        'L5,,Elle,Five,l5,l5@university.example,,1,,1',
        'M6,local,Em,Six,m6,m6@university.example,,staff,,1',
      ),
    );
    expect(world.exists(BAK)).toBe(false);
    const r = await world.cli(['run', '--tenant', 'parking', '--now']);
    expect(r.code, r.stdout + r.stderr).toBe(1);
    expect(r.stdout).toContain('line 4: login_source: login_source is required but empty; fill it in');
    expect(r.stdout).toContain('line 5: user_type_id "staff": is not valid: use the number of an OPS-COM user type, e.g. 1');

    // Gone from the drop folder, kept under its own name in a bak folder made for it.
    expect(fs.readdirSync(world.remote(UPLOAD)).filter((n) => !n.startsWith('.'))).toEqual(['bak']);
    const [epoch] = epochsIn(world, BAK);
    expect(listRemote(world, `${BAK}/${epoch}`)).toEqual(['COMPLETE', 'Fall Permits 2024.csv', 'errors.csv', 'result.json']);
    expect(resultJson(world, `${BAK}/${epoch}`)).toMatchObject({ status: 'applied with errors', files: [{ file: 'Fall Permits 2024.csv', kind: 'opscom-users', rows: 4, created: 2, failed: 2 }] });

    // The failed rows, with the district's own columns and the reason, ready to fix and drop again.
    const errors = readCsv(world, `${BAK}/${epoch}/errors.csv`);
    expect(errors[0]).toEqual([...HEADER.split(','), 'error']);
    expect(errors.slice(1).map((e) => [e[0], e[10]])).toEqual([
      ['L5', 'line 4: login_source: login_source is required but empty; fill it in'],
      ['M6', 'line 5: user_type_id "staff": is not valid: use the number of an OPS-COM user type, e.g. 1'],
    ]);
    const [mail] = mails(world, 'parking');
    expect(mail.to).toEqual(['failed-imports@university.example']);
    expect(mail.replyTo).toBe('parking-admin@university.example');
    expect(mail.attachments).toEqual([{ filename: 'errors.csv', content: world.read(`${BAK}/${epoch}/errors.csv`) }]);

    const users = dbUsers(world, 'parking');
    expect(users.map((u) => [u.external_id, u.first_name, u.last_name, u.username, u.email, u.active, u.updated_by])).toEqual([
      ['J3', 'Jay', 'Three', 'j3', 'j3@university.example', 1, 'import-task@parking.example'],
      ['K4', 'Kay', 'Four', 'k4', 'k4@university.example', 1, 'import-task@parking.example'],
    ]);
    expect(JSON.parse(users[0].attributes)).toEqual({ login_source: 'saml', phone_cell: '555-0100', student_no: 'S123', user_type_id: '2' });

    // The fixed errors.csv dropped back as it is (its error column ignored) is taken too.
    const fixed = world.read(`${BAK}/${epoch}/errors.csv`).replace('L5,,', 'L5,local,').replace(',staff,', ',3,');
    world.putFile(`${UPLOAD}/errors-fixed.csv`, fixed);
    const again = await world.cli(['run', '--tenant', 'parking', '--now']);
    expect(again.code, again.stdout).toBe(0);
    expect(dbUsers(world, 'parking').map((u) => u.external_id)).toEqual(['J3', 'K4', 'L5', 'M6']);
    expect(epochsIn(world, BAK)).toHaveLength(2);
  });

  it('archives a user imported with active 0, suffixing _<year>, and brings them back with active 1', async () => {
    world.putFile(`${UPLOAD}/users.csv`, csv(HEADER, 'J3,saml,Jay,Three,j3,j3@university.example,,2,,1', 'K4,saml,Kay,Four,k4,k4@university.example,,2,,1'));
    expect((await world.cli(['run', '--tenant', 'parking', '--now'])).code).toBe(0);

    world.putFile(`${UPLOAD}/leavers.csv`, csv('unique_id,login_source,active', 'J3,saml,0'));
    const archived = await world.cli(['run', '--tenant', 'parking', '--now']);
    expect(archived.code, archived.stdout).toBe(0);
    expect(archived.stdout).toMatch(/leavers\.csv\s*│\s*applied\s*│\s*1\s*│\s*0\s*│\s*0\s*│\s*0\s*│\s*0\s*│\s*1\s*│/);
    const users = await world.usersJson('parking');
    expect(users[0]).toMatchObject({ externalId: 'J3', active: false, username: `j3_${year}`, email: `j3@university.example_${year}` });
    expect(users[0].archivedAt).toEqual(expect.any(String));
    expect(users[1]).toMatchObject({ externalId: 'K4', active: true, archivedAt: null, username: 'k4' });

    world.putFile(`${UPLOAD}/returners.csv`, csv('unique_id,login_source,active', 'J3,saml,1'));
    expect((await world.cli(['run', '--tenant', 'parking', '--now'])).code).toBe(0);
    const back = dbUsers(world, 'parking').find((u) => u.external_id === 'J3')!;
    expect(back).toMatchObject({ active: 1, archived_at: null, username: 'j3', email: 'j3@university.example' });

    const history = await world.cli(['users', '--tenant', 'parking', '--history', 'J3']);
    expect(history.code).toBe(0);
    expect(history.stdout).toMatch(/create from upload \d{8}-\d{6} users\.csv by import-task@parking\.example/);
    expect(history.stdout).toMatch(/archive from upload \d{8}-\d{6} leavers\.csv by import-task@parking\.example/);
    expect(history.stdout).toContain(`username: j3 -> j3_${year}`);
    expect(history.stdout).toMatch(/restore from upload \d{8}-\d{6} returners\.csv/);
    expect(history.stdout).toContain(`username: j3_${year} -> j3`);
  });

  it('rejects a file whose headers are not possible names, listing the accepted columns', async () => {
    world.putFile(`${UPLOAD}/export.csv`, csv('Unique_Identifier,login_source,first_name', 'J3,saml,Jay'));
    const r = await world.cli(['run', '--tenant', 'parking', '--now']);
    expect(r.code).toBe(1);
    expect(r.stdout).toContain('the header row has missing required column "unique_id"; unknown column "Unique_Identifier"');
    expect(r.stdout).toContain('accepted columns: unique_id, login_source, first_name, last_name, user_name, email, street');
    const [epoch] = epochsIn(world, BAK);
    expect(resultJson(world, `${BAK}/${epoch}`).status).toBe('rejected');
    expect(dbUsers(world, 'parking')).toEqual([]);
    expect(mails(world, 'parking')[0].subject).toContain('export.csv rejected');
  });

  it('a dry run checks dropped files where they lie and moves nothing', async () => {
    world.putFile(`${UPLOAD}/users.csv`, csv(HEADER, 'J3,saml,Jay,Three,j3,j3@university.example,,2,,1', 'K4,,Kay,Four,k4,k4@university.example,,2,,1'));
    const dry = await world.cli(['run', '--tenant', 'parking', '--now', '--dry-run']);
    expect(dry.code, dry.stdout + dry.stderr).toBe(1);
    expect(dry.stdout).toContain('Dry run: nothing was applied or moved');
    expect(dry.stdout).toMatch(/users\.csv\s*│\s*applied with errors\s*│\s*2\s*│\s*1\s*│/);
    expect(dry.stdout).toContain('line 3: login_source: login_source is required but empty');
    expect(fs.readdirSync(world.remote(UPLOAD))).toEqual(['users.csv']);
    expect(dbUsers(world, 'parking')).toEqual([]);
    expect(mails(world)).toEqual([]);
  });
});
