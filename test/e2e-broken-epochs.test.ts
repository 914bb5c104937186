// A broken epoch never blocks its tenant, end to end through the real CLI: an upload the SFTP
// account cannot read, a file name too long for the usual errors.csv name, a `bak` that is a
// file. Each is recorded, set aside where the district can see it, told once (to the district
// and the operators), and the uploads behind it are applied in the same run.
import fs from 'node:fs';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { age, epochsIn, listRemote, mails, readCsv, resultJson } from './harness/checks.js';
import { availableSftpServerKinds } from './harness/sftp-server.js';
import { csv, World } from './harness/world.js';

const HEADER = 'user_id,first_name,last_name,email,role,school_id,active';
const OPERATORS = ['ops@vendor.example'];
const MAIL = { from: 'Provisioning <provisioning@vendor.example>', outbox: './data/outbox', operators: OPERATORS };
const user = (id: string) => `${id},First ${id},Last ${id},${id}@lincoln.example,staff,1,1`;

// Permission denied needs an SFTP account that is not root: only OpenSSH can log in as an
// unprivileged user (the embedded server runs as root and reads every file).
const openssh = availableSftpServerKinds().includes('openssh');

describe.runIf(openssh)('an epoch the SFTP account cannot read (OpenSSH, unprivileged user)', () => {
  let world: World;
  beforeEach(async (ctx) => {
    world = await World.start('openssh', `unreadable-${ctx.task.name}`, { unprivileged: true });
    world.set('mail', MAIL);
    world.addTenant('lincoln', { notify: { to: ['it@lincoln.example'], when: 'failures' } });
  });
  afterEach(async (ctx) => {
    await world.stop(ctx.task.result?.state === 'fail');
  });

  it('is recorded failed and set aside in failed/, the newer epoch behind it is applied, told once, exit 3, not retried', async () => {
    expect(world.server.username).not.toBe('root');
    const broken = world.putEpoch('lincoln', '20240101-020000', { 'users.csv': csv(HEADER, user('u1')) });
    fs.chmodSync(`${broken}/users.csv`, 0o000);
    world.putEpoch('lincoln', '20240102-020000', { 'users.csv': csv(HEADER, user('u2'), user('u3')) });

    const r = await world.cli(['run', '--tenant', 'lincoln', '--now']);
    expect(r.code, r.stdout + r.stderr).toBe(3);
    expect(r.stdout).toMatch(/lincoln\s*│\s*20240101-020000\s*│\s*users\.csv\s*│\s*failed/);
    expect(r.stdout).toMatch(/lincoln\s*│\s*20240102-020000\s*│\s*users\.csv\s*│\s*applied/);
    expect(r.stdout).toContain('users.csv cannot be read by the import account (permission denied on the SFTP server)');
    expect(r.stdout).toContain('lincoln 20240101-020000: now at /lincoln/upload/failed/20240101-020000');
    expect(r.stdout + r.stderr).not.toMatch(/\n\s+at .+\(.+:\d+:\d+\)/); // no stack trace for the district's problem

    // Set aside where the district can see it, with a result.json saying why; the good epoch is in bak.
    expect(world.exists('/lincoln/upload/20240101-020000')).toBe(false);
    expect(epochsIn(world, '/lincoln/upload/failed')).toEqual(['20240101-020000']);
    const failed = resultJson(world, '/lincoln/upload/failed/20240101-020000');
    expect(failed).toMatchObject({ status: 'failed', files: [{ file: 'users.csv', status: 'failed' }] });
    expect(String(failed.files[0].message)).toContain('permission denied');
    expect(epochsIn(world, '/lincoln/upload/bak')).toEqual(['20240102-020000']);
    expect((await world.usersJson('lincoln')).map((u) => u.externalId)).toEqual(['u2', 'u3']);

    // One mail, to the district and the operators (the applied epoch is not mailed: when: failures).
    const sent = mails(world);
    expect(sent).toHaveLength(1);
    expect(sent[0].to).toEqual(['it@lincoln.example', ...OPERATORS]);
    expect(sent[0].subject).toContain('20240101-020000');
    expect(sent[0].text).toContain('permission denied');
    expect(sent[0].text).toContain('/lincoln/upload/failed/20240101-020000');

    // status says so.
    const [s] = JSON.parse((await world.cli(['status', '--tenant', 'lincoln', '--json'])).stdout);
    expect(s.lastRun).toMatchObject({ status: 'failed' });
    expect(s.imports.map((i: { epoch: string; status: string }) => [i.epoch, i.status])).toEqual(
      expect.arrayContaining([
        ['20240101-020000', 'failed'],
        ['20240102-020000', 'applied'],
      ]),
    );
    const text = await world.cli(['status', '--tenant', 'lincoln']);
    expect(text.code).toBe(0);
    expect(text.stdout).toMatch(/lincoln\s*│.*│\s*failed\s*│/);
    expect(text.stdout).toMatch(/20240101-020000\s*│\s*users\.csv\s*│\s*failed/);

    // The next run neither retries it nor mails again.
    const next = await world.cli(['run', '--tenant', 'lincoln', '--now']);
    expect(next.code, next.stdout + next.stderr).toBe(0);
    expect(next.stdout).toContain('nothing to do');
    expect(mails(world)).toHaveLength(1);
    expect(world.query<{ n: number }>("SELECT count(*) AS n FROM imports WHERE epoch = '20240101-020000'")[0].n).toBe(1);
  });

  it('an unreadable file of an epoch of three does not hide the others: each is processed, and each outcome is in result.json and the mail', async () => {
    world.addTenant('lincoln', {
      files: { 'admins.csv': 'samegoal-users', 'staff.csv': 'samegoal-users', 'users.csv': 'samegoal-users' },
      notify: { to: ['it@lincoln.example'], when: 'failures' },
    });
    const dir = world.putEpoch('lincoln', '20240101-020000', {
      'admins.csv': csv(HEADER, user('a1')),
      'staff.csv': csv(HEADER, user('s1'), user('s2')),
      'users.csv': csv(HEADER, user('u1'), 'u2,First u2,Last u2,not-an-email,staff,1,1'),
    });
    fs.chmodSync(`${dir}/admins.csv`, 0o000); // the first file in order: the others come after it

    const r = await world.cli(['run', '--tenant', 'lincoln', '--now']);
    expect(r.code, r.stdout + r.stderr).toBe(3);
    expect(r.stdout).toMatch(/20240101-020000\s*│\s*admins\.csv\s*│\s*failed/);
    expect(r.stdout).toMatch(/20240101-020000\s*│\s*staff\.csv\s*│\s*applied\s*│\s*2\s*│\s*2/);
    expect(r.stdout).toMatch(/20240101-020000\s*│\s*users\.csv\s*│\s*applied with errors\s*│\s*2\s*│\s*1/);
    expect(r.stdout).toContain('admins.csv cannot be read by the import account (permission denied on the SFTP server)');
    expect((await world.usersJson('lincoln')).map((u) => u.externalId)).toEqual(['s1', 's2', 'u1']);

    const where = '/lincoln/upload/failed/20240101-020000';
    const result = resultJson(world, where);
    expect(result.status).toBe('failed');
    expect(result.files.map((f) => [f.file, f.status, f.rows, f.created, f.failed, f.errorsCsv])).toEqual([
      ['admins.csv', 'failed', 0, 0, 0, null],
      ['staff.csv', 'applied', 2, 2, 0, null],
      ['users.csv', 'applied with errors', 2, 1, 1, 'users.errors.csv'],
    ]);
    expect(String(result.files[0].message)).toContain('permission denied');
    expect(listRemote(world, where)).toContain('users.errors.csv');

    const sent = mails(world, 'lincoln');
    expect(sent).toHaveLength(1);
    expect(sent[0].to).toEqual(['it@lincoln.example', ...OPERATORS]);
    expect(sent[0].subject).toContain('admins.csv failed, staff.csv applied, users.csv applied with 1 error');
    expect(sent[0].text).toContain('3 files were processed: 1 failed, 1 applied, 1 applied with errors.');
    expect(sent[0].text).toMatch(/admins\.csv \(samegoal-users\): failed\nProcessing failed: admins\.csv cannot be read/);
    expect(sent[0].text).toMatch(/staff\.csv \(samegoal-users\): applied\nAll 2 rows were applied\./);
    expect(sent[0].text).toMatch(/users\.csv \(samegoal-users\): applied with errors\n1 of 2 rows could not be applied/);
    expect(sent[0].attachments.map((a) => a.filename)).toEqual(['users.errors.csv']);
  });

  it('an upload that never completed is still reported, once, when an epoch in the same run fails', async () => {
    world.addTenant('lincoln', { staleAfterHours: 1, notify: { to: ['it@lincoln.example'], when: 'failures' } });
    world.putEpoch('lincoln', '20240101-010000', { 'users.csv': csv(HEADER, user('u0')) }, false);
    age(world, '/lincoln/upload/20240101-010000/users.csv', 2);
    age(world, '/lincoln/upload/20240101-010000', 2);
    const broken = world.putEpoch('lincoln', '20240101-020000', { 'users.csv': csv(HEADER, user('u1')) });
    fs.chmodSync(`${broken}/users.csv`, 0o000);

    const r = await world.cli(['run', '--tenant', 'lincoln', '--now']);
    expect(r.code, r.stdout + r.stderr).toBe(3);
    expect(r.stdout).toContain('upload 20240101-010000 never completed');
    const sent = mails(world);
    expect(sent).toHaveLength(2);
    const stale = sent.filter((m) => m.text.includes('upload 20240101-010000 never got its COMPLETE file'));
    expect(stale).toHaveLength(1);
    expect(stale[0].to).toEqual(['it@lincoln.example']);
    expect(sent.filter((m) => m.text.includes('permission denied'))).toHaveLength(1);

    const next = await world.cli(['run', '--tenant', 'lincoln', '--now']);
    expect(next.code, next.stdout + next.stderr).toBe(0);
    expect(mails(world)).toHaveLength(2);
  });
});

describe.each(availableSftpServerKinds())('broken epochs on %s sftp', (kind) => {
  let world: World;
  beforeEach(async (ctx) => {
    world = await World.start(kind, `broken-${kind}-${ctx.task.name}`);
    world.set('mail', MAIL);
  });
  afterEach(async (ctx) => {
    await world.stop(ctx.task.result?.state === 'fail');
  });

  it('processes a file whose name is 250 characters long, with row errors, and writes its errors.csv', async () => {
    const OPSCOM = 'unique_id,login_source,first_name,last_name,email';
    world.addTenant('parking', { files: { '*.csv': 'opscom-users' }, loose: 'all', notify: { to: ['it@parking.example'], when: 'failures' } });
    const long = `${'faculty-and-staff-parking-permit-holders-'.repeat(6).slice(0, 246)}.csv`;
    expect(long).toHaveLength(250);
    const rows = csv(OPSCOM, 'p1,local,Ada,Lovelace,ada@parking.example', 'p2,,Alan,Turing,alan@parking.example', 'p3,local,Grace,Hopper,not-an-email');
    // Loose (moved into an epoch of its own under the same name) ...
    world.putFile(`/parking/upload/${long}`, rows);
    // ... and in an epoch beside a second file, where errors.csv is named after each file.
    world.putEpoch('parking', '20240101-020000', { [long]: rows.replace(/p(\d)/g, 'q$1'), 'short.csv': csv(OPSCOM, 's1,local,Edsger,Dijkstra,not-an-email') });

    const r = await world.cli(['run', '--tenant', 'parking', '--now']);
    expect(r.code, r.stdout + r.stderr).toBe(1);
    expect(r.stdout + r.stderr).not.toContain('ENAMETOOLONG');
    expect(r.stdout).not.toMatch(/│\s*failed\s*│\s*\d/); // no file failed (the header has a "failed" count column)
    expect((await world.usersJson('parking')).map((u) => u.externalId).sort()).toEqual(['p1', 'q1']);

    const epochs = epochsIn(world, '/parking/upload/bak');
    expect(epochs).toHaveLength(2);
    expect(epochs).toContain('20240101-020000');
    const promoted = epochs.find((e) => e !== '20240101-020000')!;
    // Alone in its epoch: errors.csv.
    expect(listRemote(world, `/parking/upload/bak/${promoted}`)).toEqual(['COMPLETE', 'errors.csv', long, 'result.json'].sort());
    expect(resultJson(world, `/parking/upload/bak/${promoted}`).files[0]).toMatchObject({ file: long, status: 'applied with errors', failed: 2, errorsCsv: 'errors.csv' });
    expect(readCsv(world, `/parking/upload/bak/${promoted}/errors.csv`).slice(1).map((e) => e[0])).toEqual(['p2', 'p3']);
    // Beside another file: `<name>.errors.csv` would be too long for a file name, so it is shortened.
    const both = `/parking/upload/bak/20240101-020000`;
    const result = resultJson(world, both);
    const byFile = Object.fromEntries(result.files.map((f) => [f.file, f]));
    expect(byFile[long]).toMatchObject({ status: 'applied with errors', failed: 2 });
    const shortened = String(byFile[long].errorsCsv);
    expect(Buffer.byteLength(shortened)).toBeLessThanOrEqual(200);
    expect(byFile['short.csv']).toMatchObject({ errorsCsv: 'short.errors.csv' });
    expect(listRemote(world, both)).toEqual(expect.arrayContaining([shortened, 'short.errors.csv']));
    expect(readCsv(world, `${both}/${shortened}`).slice(1).map((e) => e[0])).toEqual(['q2', 'q3']);

    // Each report carries its errors.csv under the name it has in bak.
    const sent = mails(world, 'parking');
    expect(sent).toHaveLength(2);
    expect(sent.flatMap((m) => m.attachments.map((a) => a.filename)).sort()).toEqual(['errors.csv', shortened, 'short.errors.csv'].sort());
  });

  it('with bak a plain file: applies the epoch, sets it aside in failed/, tells the district and the operators once where it really is, exit 3, status says so', async () => {
    // The usual setting: the district hears about problems only. Not being able to file an upload is one.
    world.addTenant('lincoln', { notify: { to: ['it@lincoln.example'], when: 'failures' } });
    world.putFile('/lincoln/upload/bak', 'not a folder\n');
    world.putEpoch('lincoln', '20240101-020000', { 'users.csv': csv(HEADER, user('u1')) });
    world.putEpoch('lincoln', '20240102-020000', { 'users.csv': csv(HEADER, user('u1'), user('u2')) });

    const r = await world.cli(['run', '--tenant', 'lincoln', '--now']);
    expect(r.code, r.stdout + r.stderr).toBe(3);
    expect(r.stdout).toMatch(/20240101-020000\s*│\s*users\.csv\s*│\s*applied/);
    expect(r.stdout).toMatch(/20240102-020000\s*│\s*users\.csv\s*│\s*applied/);
    expect(r.stdout).toContain('lincoln 20240101-020000: now at /lincoln/upload/failed/20240101-020000');
    expect(r.stdout).toContain('lincoln 20240102-020000: now at /lincoln/upload/failed/20240102-020000');
    expect(r.stdout).toContain('lincoln: upload 20240101-020000 could not be moved to /lincoln/upload/bak (/lincoln/upload/bak is a file, not a folder); it is in /lincoln/upload/failed/20240101-020000');
    expect(r.stdout).not.toContain('now at /lincoln/upload/bak/');
    expect((await world.usersJson('lincoln')).map((u) => u.externalId)).toEqual(['u1', 'u2']);

    expect(world.read('/lincoln/upload/bak')).toBe('not a folder\n');
    expect(epochsIn(world, '/lincoln/upload/failed')).toEqual(['20240101-020000', '20240102-020000']);
    expect(listRemote(world, '/lincoln/upload/failed/20240101-020000')).toEqual(['COMPLETE', 'result.json', 'users.csv']);
    expect(resultJson(world, '/lincoln/upload/failed/20240101-020000').status).toBe('applied');

    // One mail per upload, each to the district and the operators, saying where it really is.
    const sent = mails(world, 'lincoln');
    expect(sent).toHaveLength(2);
    for (const [i, epoch] of ['20240101-020000', '20240102-020000'].entries()) {
      expect(sent[i].to).toEqual(['it@lincoln.example', ...OPERATORS]);
      expect(sent[i].subject).toContain(epoch);
      expect(sent[i].subject).toContain('not filed in bak');
      expect(sent[i].text).toContain(`/lincoln/upload/failed/${epoch}`);
      expect(sent[i].text).toContain('/lincoln/upload/bak is a file, not a folder');
      expect(sent[i].text).not.toContain(`/lincoln/upload/bak/${epoch}`);
      expect(sent[i].text).not.toContain('Nothing to fix.');
    }

    // status says so, in the last run and for as long as the uploads are not filed.
    const text = await world.cli(['status', '--tenant', 'lincoln']);
    expect(text.stdout).toMatch(/lincoln\s*│.*│\s*failed\s*│/);
    expect(text.stdout).toContain('last run: upload 20240101-020000 could not be moved to /lincoln/upload/bak');
    expect(text.stdout).toContain('not filed: upload 20240102-020000 is in /lincoln/upload/failed/20240102-020000');
    expect(text.stdout).toContain('not filed: upload 20240101-020000 is in /lincoln/upload/failed/20240101-020000');

    // Told once: the next run has nothing to do and mails nobody; status still shows where the uploads are.
    const again = await world.cli(['run', '--tenant', 'lincoln', '--now']);
    expect(again.code, again.stdout + again.stderr).toBe(0);
    expect(again.stdout).toContain('nothing to do');
    expect(mails(world, 'lincoln')).toHaveLength(2);
    const [s] = JSON.parse((await world.cli(['status', '--tenant', 'lincoln', '--json'])).stdout);
    expect(s.notFiled.map((m: { epoch: string; location: string }) => [m.epoch, m.location])).toEqual([
      ['20240102-020000', '/lincoln/upload/failed/20240102-020000'],
      ['20240101-020000', '/lincoln/upload/failed/20240101-020000'],
    ]);

    // Once bak is a folder again, the next upload is filed there and the notice goes away.
    fs.rmSync(world.remote('/lincoln/upload/bak'));
    world.putEpoch('lincoln', '20240103-020000', { 'users.csv': csv(HEADER, user('u1'), user('u2'), user('u3')) });
    const fixed = await world.cli(['run', '--tenant', 'lincoln', '--now']);
    expect(fixed.code, fixed.stdout + fixed.stderr).toBe(0);
    expect(epochsIn(world, '/lincoln/upload/bak')).toEqual(['20240103-020000']);
    expect(mails(world, 'lincoln')).toHaveLength(2);
    expect((await world.cli(['status', '--tenant', 'lincoln'])).stdout).not.toContain('not filed');
  });
});
