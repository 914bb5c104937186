// SFTP automated student rosters (seed 001), end to end: students.csv in the Upload folder,
// exact CAPS_UNDERSCORE headers, date passwords, a site map, and a nightly wipe-and-reload
// with its safety hold. Real SFTP server (both kinds), real CLI, real SQLite.
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { verifyPassword } from '../src/import/passwords.js';
import { databaseBytes, dbUsers, epochsIn, listRemote, mails, readCsv, resultJson } from './harness/checks.js';
import { csv, World, worlds } from './harness/world.js';

const HEADER = 'STUDENT_ID,FIRST_NAME,LAST_NAME,GRADE,SITE_ID,EMAIL,PASSWORD';
const UPLOAD = '/lincoln/Upload';
const SITES = { '100': 'Lincoln Elementary', '200': 'Lincoln High' };

function student(i: number, extra: Partial<{ last: string; site: string; email: string; password: string }> = {}): string {
  return [i, `First${i}`, extra.last ?? `Last${i}`, '5', extra.site ?? '100', extra.email ?? `s${i}@lincoln.example`, extra.password ?? '2011-04-07'].join(',');
}

describe.each(worlds())('student rosters on %s', (_label, kind, store) => {
  let world: World;
  beforeEach(async (ctx) => {
    world = await World.start(kind, `roster-${kind}-${ctx.task.name}-${store}`, { store });
    world.set('mail', { from: 'Provisioning <provisioning@vendor.example>', outbox: './data/outbox', operators: ['ops@vendor.example'] });
    world.addTenant('lincoln', {
      paths: { upload: UPLOAD, bak: `${UPLOAD}/bak`, tmp: '/lincoln/tmp' },
      files: { 'students.csv': 'roster-students' },
      loose: 'all',
      options: {
        strictHeaders: true,
        passwordFormat: 'date',
        siteMap: SITES,
        fullSync: true,
        maxDeactivatePercent: 10,
        overwriteEmail: false,
        overwritePassword: false,
        actor: 'roster-sync@lincoln.example',
      },
      notify: { to: ['it@lincoln.example'], replyTo: 'support@vendor.example', when: 'failures' },
    });
    fs.mkdirSync(world.remote(UPLOAD), { recursive: true });
  });
  // ctx, not onTestFailed: vitest runs afterEach hooks before onTestFailed callbacks.
  afterEach(async (ctx) => {
    await world.stop(ctx.task.result?.state === 'fail');
  });

  it('rejects a header row that is not exactly the CAPS names in order, saying what was expected and what was found', async () => {
    world.putFile(`${UPLOAD}/students.csv`, csv('Student_ID,FIRST_NAME,LAST_NAME,GRADE,SITE_ID,EMAIL,PASSWORD', student(1001)));
    const r = await world.cli(['run', '--tenant', 'lincoln', '--now']);
    expect(r.code, r.stderr).toBe(1);
    const expected = 'The first difference is column 1: expected "STUDENT_ID", found "Student_ID"';
    expect(r.stdout).toContain(expected);
    expect(r.stdout).toContain(`the header row must be exactly ${HEADER} (capital letters, underscores, in this order)`);

    expect(world.exists(`${UPLOAD}/students.csv`)).toBe(false);
    const [epoch] = epochsIn(world, `${UPLOAD}/bak`);
    expect(listRemote(world, `${UPLOAD}/bak/${epoch}`)).toEqual(['COMPLETE', 'result.json', 'students.csv']);
    expect(resultJson(world, `${UPLOAD}/bak/${epoch}`)).toMatchObject({ status: 'rejected', files: [{ file: 'students.csv', status: 'rejected' }] });
    expect(dbUsers(world, 'lincoln')).toEqual([]);
    const [mail] = mails(world);
    expect(mail.subject).toContain('students.csv rejected');
    expect(mail.text).toContain(expected);
    expect(mail.to).toEqual(['it@lincoln.example']);
  });

  it('formats date passwords as m/d/yyyy before hashing, maps site ids to labels, and never shows a password', async () => {
    const canary = 'Canary-Secret-9931';
    world.putFile(
      `${UPLOAD}/students.csv`,
      csv(
        HEADER,
        student(1001, { password: '2011-04-07' }),
        student(1002, { password: '4/7/2011', site: '200' }),
        student(1003, { password: '04/07/2011' }),
        student(1004, { password: '20110407', email: '' }),
        student(1005, { site: '999' }),
        student(1006, { password: canary }),
      ),
    );
    const r = await world.cli(['run', '--tenant', 'lincoln', '--now']);
    expect(r.code, r.stderr).toBe(1);
    expect(r.stdout).toContain('applied with errors');
    expect(r.stdout).toContain(`line 6: SITE_ID "999": this site id is not in this district's site map; use one of 100, 200 or ask us to add it`);
    expect(r.stdout).toContain('line 7: PASSWORD "(hidden)": is not a date');

    const users = dbUsers(world, 'lincoln');
    expect(users.map((u) => [u.external_id, u.site_id, u.site_label, u.updated_by])).toEqual([
      ['1001', '100', 'Lincoln Elementary', 'roster-sync@lincoln.example'],
      ['1002', '200', 'Lincoln High', 'roster-sync@lincoln.example'],
      ['1003', '100', 'Lincoln Elementary', 'roster-sync@lincoln.example'],
      ['1004', '100', 'Lincoln Elementary', 'roster-sync@lincoln.example'],
    ]);
    for (const u of users) {
      expect(u.password_hash).toMatch(/^\$scrypt\$ln=\d+,r=\d+,p=\d+\$/);
      expect(await verifyPassword('4/7/2011', u.password_hash!), u.external_id).toBe(true);
    }
    expect(JSON.parse(users[0].attributes)).toEqual({ GRADE: '5' });

    const [epoch] = epochsIn(world, `${UPLOAD}/bak`);
    const errors = readCsv(world, `${UPLOAD}/bak/${epoch}/errors.csv`);
    expect(errors[0]).toEqual([...HEADER.split(','), 'error']);
    expect(errors.slice(1).map((e) => e[0])).toEqual(['1005', '1006']);
    expect(errors[1][6]).toBe(''); // passwords are blanked, even valid ones
    expect(errors[2][6]).toBe('');
    expect(errors[2][7]).toContain('PASSWORD "(hidden)": is not a date');

    const [mail] = mails(world);
    expect(mail.attachments.map((a) => a.filename)).toEqual(['errors.csv']);
    expect(mail.attachments[0].content).toBe(world.read(`${UPLOAD}/bak/${epoch}/errors.csv`));
    expect(mail.text).toContain('line 6: SITE_ID "999"');

    // The secrets, in any form, reached neither the database, the logs, errors.csv nor the mail.
    const everything = [
      databaseBytes(world).toString('latin1'),
      r.stdout,
      r.stderr,
      world.read(`${UPLOAD}/bak/${epoch}/errors.csv`),
      world.read(`${UPLOAD}/bak/${epoch}/result.json`),
      JSON.stringify(mails(world)),
    ].join('\n');
    for (const secret of [canary, '4/7/2011', '2011-04-07', '04/07/2011', '20110407']) expect(everything).not.toContain(secret);
  });

  it('wipes and reloads nightly, holds a file that would deactivate too many, and release applies it', async () => {
    const all = Array.from({ length: 10 }, (_, i) => student(1001 + i));
    world.putFile(`${UPLOAD}/students.csv`, csv(HEADER, ...all));
    const first = await world.cli(['run', '--tenant', 'lincoln', '--now']);
    expect(first.code, first.stdout + first.stderr).toBe(0);
    expect(dbUsers(world, 'lincoln').filter((u) => u.active)).toHaveLength(10);

    // One student left: deactivated, within the 10% limit. A changed e-mail is not taken (overwriteEmail: false).
    world.putFile(`${UPLOAD}/students.csv`, csv(HEADER, ...all.slice(0, 9).map((row, i) => (i === 0 ? student(1001, { email: 'new@lincoln.example', last: 'Renamed' }) : row))));
    const second = await world.cli(['run', '--tenant', 'lincoln', '--now']);
    expect(second.code, second.stdout).toBe(0);
    let users = dbUsers(world, 'lincoln');
    expect(users.filter((u) => !u.active).map((u) => u.external_id)).toEqual(['1010']);
    expect(users[0]).toMatchObject({ last_name: 'Renamed', email: 's1001@lincoln.example' });

    // A truncated export: 3 of the 9 active students missing (33%) is held.
    world.putFile(`${UPLOAD}/students.csv`, csv(HEADER, ...all.slice(0, 6)));
    const held = await world.cli(['run', '--tenant', 'lincoln', '--now']);
    expect(held.code, held.stdout).toBe(1);
    expect(held.stdout).toContain('held: this full sync would deactivate 3 of 9 active users (33.3%), more than the 10% limit');
    const [heldEpoch] = epochsIn(world, `${UPLOAD}/.held`);
    expect(heldEpoch).toBeDefined();
    expect(listRemote(world, `${UPLOAD}/.held/${heldEpoch}`)).toEqual(['COMPLETE', 'result.json', 'students.csv']);
    expect(resultJson(world, `${UPLOAD}/.held/${heldEpoch}`).status).toBe('held');
    expect(epochsIn(world, `${UPLOAD}/bak`)).not.toContain(heldEpoch);
    users = dbUsers(world, 'lincoln');
    expect(users.filter((u) => u.active)).toHaveLength(9);
    const heldMail = mails(world).at(-1)!;
    expect(heldMail.subject).toContain('students.csv held');
    expect(heldMail.to).toEqual(['it@lincoln.example', 'ops@vendor.example']);
    expect(heldMail.text).toContain(`.held/${heldEpoch}`);
    expect(heldMail.text).toContain('would deactivate 3 of 9 active users');

    // Left alone by a normal run...
    const idle = await world.cli(['run', '--tenant', 'lincoln', '--now']);
    expect(idle.code).toBe(0);
    expect(idle.stdout).toContain('nothing to do');
    expect(world.exists(`${UPLOAD}/.held/${heldEpoch}/students.csv`)).toBe(true);

    // ...and by --force, which only concerns keep-in-place files: a new upload in that run would still be checked...
    const notReleased = await world.cli(['run', '--tenant', 'lincoln', '--now', '--force']);
    expect(notReleased.code).toBe(0);
    expect(world.exists(`${UPLOAD}/.held/${heldEpoch}/students.csv`)).toBe(true);

    // ...applied once an operator releases it, and filed in bak; the district is told.
    const forced = await world.cli(['release', '--tenant', 'lincoln', heldEpoch]);
    expect(forced.code, forced.stdout + forced.stderr).toBe(0);
    const released = mails(world).at(-1)!;
    expect(released.text).toContain('Released by');
    expect(released.text).toContain(`${UPLOAD}/bak/${heldEpoch}`);
    expect(world.query<{ action: string; result: string }>('SELECT action, result FROM audit')).toEqual([{ action: 'release', result: 'ok' }]);
    expect(world.exists(`${UPLOAD}/.held/${heldEpoch}`)).toBe(false);
    expect(resultJson(world, `${UPLOAD}/bak/${heldEpoch}`)).toMatchObject({ status: 'applied', files: [{ deactivated: 3, updated: 1, unchanged: 5 }] });
    users = dbUsers(world, 'lincoln');
    expect(users).toHaveLength(10); // deactivated, never deleted
    expect(users.filter((u) => !u.active).map((u) => u.external_id)).toEqual(['1007', '1008', '1009', '1010']);
    const changes = world.query<{ external_id: string; actor: string }>("SELECT external_id, actor FROM user_changes WHERE action = 'deactivate' ORDER BY id");
    expect(changes.map((c) => c.external_id)).toEqual(['1010', '1007', '1008', '1009']);
    expect(new Set(changes.map((c) => c.actor))).toEqual(new Set(['roster-sync@lincoln.example']));
    const status = JSON.parse((await world.cli(['status', '--tenant', 'lincoln', '--json'])).stdout);
    expect(status[0].imports.slice(0, 2).map((i: { status: string; epoch: string }) => [i.epoch, i.status])).toEqual([
      [heldEpoch, 'applied'],
      [heldEpoch, 'held'],
    ]);
  });

  it('keep-in-place roster with Google SSO: no PASSWORD column; a held file is held once, not every night', async () => {
    world.addTenant('jefferson', {
      paths: { upload: '/jefferson/Upload', bak: '/jefferson/bak', tmp: '/jefferson/tmp' },
      files: { 'students.csv': 'roster-students' },
      loose: 'keep',
      options: { strictHeaders: true, sso: 'google', fullSync: true, maxDeactivatePercent: 20 },
      notify: { to: ['it@jefferson.example'], when: 'failures' },
    });
    const header = 'STUDENT_ID,FIRST_NAME,LAST_NAME,GRADE,SITE_ID,EMAIL';
    const rows = Array.from({ length: 5 }, (_, i) => `${i + 1},F${i},L${i},K,100,s${i + 1}@jefferson.example`);
    world.putFile('/jefferson/Upload/students.csv', csv(header, ...rows, '6,No,Email,K,100,'));
    const first = await world.cli(['run', '--tenant', 'jefferson', '--now']);
    expect(first.code, first.stdout).toBe(1);
    expect(first.stdout).toContain('line 7: EMAIL: EMAIL is required but empty');
    expect(dbUsers(world, 'jefferson').map((u) => [u.external_id, u.password_hash])).toEqual(rows.map((_, i) => [String(i + 1), null]));
    expect(world.exists('/jefferson/Upload/students.csv')).toBe(true);
    expect(world.exists('/jefferson/tmp/students.csv.sha1')).toBe(true);

    world.putFile('/jefferson/Upload/students.csv', csv(header, ...rows.slice(0, 2)));
    const held = await world.cli(['run', '--tenant', 'jefferson', '--now']);
    expect(held.code).toBe(1);
    expect(held.stdout).toContain('would deactivate 3 of 5 active users');
    const mailsAfterHold = mails(world, 'jefferson').length;
    const again = await world.cli(['run', '--tenant', 'jefferson', '--now']);
    expect(again.code).toBe(0);
    expect(again.stdout).toContain('nothing to do');
    expect(mails(world, 'jefferson')).toHaveLength(mailsAfterHold);
    expect(dbUsers(world, 'jefferson').every((u) => u.active)).toBe(true);

    const heldStatus = JSON.parse((await world.cli(['status', '--tenant', 'jefferson', '--json'])).stdout);
    expect(heldStatus[0].held.map((h: { file: string }) => h.file)).toEqual(['students.csv']);

    // The copy that was held (not the file as it is now) is what a release applies.
    const heldEpoch = heldStatus[0].held[0].epoch as string;
    expect(world.read(`/jefferson/Upload/.held/${heldEpoch}/students.csv`)).toBe(csv(header, ...rows.slice(0, 2)));
    const forced = await world.cli(['release', '--tenant', 'jefferson', heldEpoch]);
    expect(forced.code, forced.stdout).toBe(0);
    expect(dbUsers(world, 'jefferson').filter((u) => u.active).map((u) => u.external_id)).toEqual(['1', '2']);
    // Released: status no longer lists it as held.
    const after = JSON.parse((await world.cli(['status', '--tenant', 'jefferson', '--json'])).stdout);
    expect(after[0].held).toEqual([]);
  });

  it('validate --tenant checks a file offline with the tenant headers, site map and date passwords', async () => {
    const local = path.join(world.dir, 'students.csv');
    fs.writeFileSync(local, csv(HEADER, student(1001), student(1002, { site: '300' }), student(1003, { password: 'not-a-date' })));
    const r = await world.cli(['validate', '--tenant', 'lincoln', local]);
    expect(r.code, r.stderr).toBe(1);
    expect(r.stdout).toContain('3 row(s): 1 valid, 2 with errors');
    expect(r.stdout).toContain(`line 3: SITE_ID "300": this site id is not in this district's site map`);
    expect(r.stdout).toContain('line 4: PASSWORD "(hidden)": is not a date');
    expect(r.stdout).not.toContain('not-a-date');
    const errors = fs.readFileSync(path.join(world.dir, 'students.errors.csv'), 'utf8');
    expect(errors.split('\r\n')[0]).toBe(`\uFEFF${HEADER},error`); // errors.csv starts with a BOM, for Excel

    fs.writeFileSync(local, csv('STUDENT_ID,LAST_NAME,FIRST_NAME,GRADE,SITE_ID,EMAIL,PASSWORD', student(1001)));
    const strict = await world.cli(['validate', '--tenant', 'lincoln', local]);
    expect(strict.code).toBe(1);
    expect(strict.stdout).toContain('expected "FIRST_NAME", found "LAST_NAME"');

    fs.writeFileSync(local, csv(HEADER, student(1001), student(1002, { site: '200' })));
    const ok = await world.cli(['validate', '--tenant', 'lincoln', local]);
    expect(ok.code, ok.stdout).toBe(0);
    expect(ok.stdout).toContain('valid');
    // Offline: nothing was applied, nothing on the server was touched.
    expect(dbUsers(world, 'lincoln')).toEqual([]);
    expect(fs.readdirSync(world.remote(UPLOAD))).toEqual([]);
  });
});
