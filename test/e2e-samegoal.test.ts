// SameGoal account provisioning (seed 000), end to end: epoch folders with COMPLETE and
// `_auto.csv` files, uploads that never complete, dry runs and the full-sync hold of a
// multi-file epoch. Real SFTP server (both kinds), real CLI, real SQLite.
import fs from 'node:fs';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { age, dbUsers, epochsIn, listRemote, mails, readCsv, resultJson } from './harness/checks.js';
import { csv, World, worlds } from './harness/world.js';

const HEADER = 'user_id,first_name,last_name,email,role,school_id,active';
const UPLOAD = '/lincoln/upload';
const BAK = '/lincoln/upload/bak';
const LOG = '/lincoln/log/import.log';

const row = (id: string, last = 'Last', active = '1') => `${id},First,${last},${id}@lincoln.example,teacher,100,${active}`;

describe.each(worlds())('SameGoal provisioning on %s', (_label, kind, store) => {
  let world: World;
  beforeEach(async (ctx) => {
    world = await World.start(kind, `samegoal-${kind}-${ctx.task.name}-${store}`, { store });
    world.addTenant('lincoln', {
      paths: { upload: UPLOAD, bak: BAK, tmp: '/lincoln/tmp', log: LOG },
      files: { 'users.csv': 'samegoal-users' },
      loose: 'auto',
      staleAfterHours: 24,
      options: { actor: 'samegoal-sync' },
      notify: { to: ['it@lincoln.example'], when: 'failures' },
    });
  });
  // ctx, not onTestFailed: vitest runs afterEach hooks before onTestFailed callbacks.
  afterEach(async (ctx) => {
    await world.stop(ctx.task.result?.state === 'fail');
  });

  it('processes ready epochs and settled _auto files in one run, oldest first, and logs one line per file', async () => {
    world.putEpoch('lincoln', '20240101-020000', { 'users.csv': csv(HEADER, row('u1'), row('u2')) });
    world.putFile(`${UPLOAD}/users_auto.csv`, csv(HEADER, row('u1', 'Auto'), row('u3')));
    const r = await world.cli(['run', '--tenant', 'lincoln', '--now']);
    expect(r.code, r.stdout + r.stderr).toBe(0);

    const epochs = epochsIn(world, BAK);
    expect(epochs).toHaveLength(2);
    expect(epochs[0]).toBe('20240101-020000');
    expect(listRemote(world, `${BAK}/${epochs[1]}`)).toEqual(['COMPLETE', 'result.json', 'users.csv']);
    expect(world.exists(`${UPLOAD}/users_auto.csv`)).toBe(false);
    // The auto file's epoch is newer, so its u1 wins.
    expect(dbUsers(world, 'lincoln').map((u) => [u.external_id, u.last_name, u.updated_by])).toEqual([
      ['u1', 'Auto', 'samegoal-sync'],
      ['u2', 'Last', 'samegoal-sync'],
      ['u3', 'Last', 'samegoal-sync'],
    ]);
    const lines = world.read(LOG).trim().split('\n');
    expect(lines).toHaveLength(2);
    expect(lines[0]).toContain('epoch=20240101-020000 file="users.csv" status="applied" rows=2 created=2');
    expect(lines[1]).toContain(`epoch=${epochs[1]} file="users.csv" status="applied" rows=2 created=1 updated=1`);
    expect(mails(world)).toEqual([]); // notify: failures, and nothing failed
  });

  it('reports an upload that never completed once, and never processes it', async () => {
    world.putEpoch('lincoln', '20240101-020000', { 'users.csv': csv(HEADER, row('u1')) }, false);
    age(world, `${UPLOAD}/20240101-020000/users.csv`, 48);
    age(world, `${UPLOAD}/20240101-020000`, 48);
    world.putEpoch('lincoln', '20240102-020000', { 'users.csv': csv(HEADER, row('u2')) }, false); // fresh: still uploading

    const r = await world.cli(['run', '--tenant', 'lincoln', '--now']);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toContain('lincoln: upload 20240101-020000 never completed (no COMPLETE file); it is left alone');
    expect(r.stdout).not.toContain('20240102-020000');
    const [mail] = mails(world, 'lincoln');
    expect(mail.subject).toContain('1 upload never completed');
    expect(mail.text).toContain('upload 20240101-020000 never got its COMPLETE file');
    expect(world.query("SELECT epoch FROM stale_uploads WHERE tenant = 'lincoln'")).toEqual([{ epoch: '20240101-020000' }]);
    expect(listRemote(world, `${UPLOAD}/20240101-020000`)).toEqual(['users.csv']);
    expect(dbUsers(world, 'lincoln')).toEqual([]);

    // Once is enough.
    const again = await world.cli(['run', '--tenant', 'lincoln', '--now']);
    expect(again.stdout).not.toContain('never completed');
    expect(mails(world, 'lincoln')).toHaveLength(1);

    // Completed late, it is processed like any other.
    fs.writeFileSync(world.remote(`${UPLOAD}/20240101-020000/COMPLETE`), '');
    const late = await world.cli(['run', '--tenant', 'lincoln', '--now']);
    expect(late.code).toBe(0);
    expect(epochsIn(world, BAK)).toEqual(['20240101-020000']);
    expect(dbUsers(world, 'lincoln').map((u) => u.external_id)).toEqual(['u1']);
  });

  it('a dry run reports what would be created, updated, deactivated and archived, and changes nothing', async () => {
    world.addTenant('lincoln', {
      ...world.tenantConfig('lincoln'),
      options: { fullSync: true, maxDeactivatePercent: 50, archiveInactive: true },
    });
    world.putEpoch('lincoln', '20240101-020000', { 'users.csv': csv(HEADER, row('u1'), row('u2'), row('u3')) });
    expect((await world.cli(['run', '--tenant', 'lincoln', '--now'])).code).toBe(0);
    const before = JSON.stringify(dbUsers(world, 'lincoln'));
    const imports = world.query('SELECT count(*) AS n FROM imports');

    world.putEpoch('lincoln', '20240102-020000', { 'users.csv': csv(HEADER, row('u1', 'Changed'), row('u2', 'Last', '0'), row('u4'), 'u5,Bad,Row,not-an-email,,,') });
    world.putFile(`${UPLOAD}/users_auto.csv`, csv(HEADER, row('u9')));
    const listing = () => JSON.stringify([fs.readdirSync(world.remote(UPLOAD)).sort(), listRemote(world, `${UPLOAD}/20240102-020000`)]);
    const serverBefore = listing();

    const dry = await world.cli(['run', '--tenant', 'lincoln', '--now', '--dry-run']);
    expect(dry.code, dry.stdout + dry.stderr).toBe(1);
    expect(dry.stdout).toContain('Dry run: nothing was applied or moved');
    // rows, created, updated, unchanged, deactivated, archived, failed
    expect(dry.stdout).toMatch(/20240102-020000\s*│\s*users\.csv\s*│\s*applied with errors\s*│\s*4\s*│\s*1\s*│\s*1\s*│\s*0\s*│\s*1\s*│\s*1\s*│\s*1\s*│/);
    // The _auto file, checked where it lies (each upload against the directory as it is now):
    // holding only u9, this full sync would be held.
    expect(dry.stdout).toMatch(/│\s*users\.csv\s*│\s*held\s*│\s*1\s*│\s*0\s*│\s*0\s*│\s*0\s*│\s*3\s*│/);
    expect(dry.stdout).toContain('held: this full sync would deactivate 3 of 3 active users');
    expect(dry.stdout).toContain('line 5: email "not-an-email"');

    expect(listing()).toBe(serverBefore);
    expect(world.exists(`${BAK}/20240102-020000`)).toBe(false);
    expect(JSON.stringify(dbUsers(world, 'lincoln'))).toBe(before);
    expect(world.query('SELECT count(*) AS n FROM imports')).toEqual(imports);
    expect(mails(world)).toEqual([]);
  });

  it('moves an epoch with a held file to .held even when another of its files was rejected; release files it in bak', async () => {
    world.addTenant('lincoln', {
      ...world.tenantConfig('lincoln'),
      options: { fullSync: true, maxDeactivatePercent: 10 },
      notify: { to: ['it@lincoln.example'], when: 'always' },
    });
    world.putEpoch('lincoln', '20240101-020000', { 'users.csv': csv(HEADER, row('u1'), row('u2'), row('u3'), row('u4')) });
    expect((await world.cli(['run', '--tenant', 'lincoln', '--now'])).code).toBe(0);

    world.putEpoch('lincoln', '20240102-020000', { 'users.csv': csv(HEADER, row('u1'), row('u2')), 'usrs.csv': csv(HEADER, row('u5')) });
    const held = await world.cli(['run', '--tenant', 'lincoln', '--now']);
    expect(held.code).toBe(1);
    expect(held.stdout).toContain('misnamed file "usrs.csv"');
    expect(held.stdout).toContain('would deactivate 2 of 4 active users');
    expect(listRemote(world, `${UPLOAD}/.held/20240102-020000`)).toEqual(['COMPLETE', 'result.json', 'users.csv', 'usrs.csv']);
    const report = mails(world, 'lincoln').at(-1)!;
    expect(report.text).toContain(`${UPLOAD}/.held/20240102-020000`);
    expect(dbUsers(world, 'lincoln').every((u) => u.active)).toBe(true);

    const forced = await world.cli(['release', '--tenant', 'lincoln', '20240102-020000']);
    expect(forced.code, forced.stdout + forced.stderr).toBe(1); // usrs.csv is still misnamed
    expect(world.exists(`${UPLOAD}/.held/20240102-020000`)).toBe(false);
    const result = resultJson(world, `${BAK}/20240102-020000`);
    expect(result.files.map((f) => [f.file, f.status, f.deactivated])).toEqual([
      ['users.csv', 'applied', 2],
      ['usrs.csv', 'rejected', 0],
    ]);
    expect(dbUsers(world, 'lincoln').map((u) => [u.external_id, u.active])).toEqual([
      ['u1', 1],
      ['u2', 1],
      ['u3', 0],
      ['u4', 0],
    ]);
  });

  it('reports row errors with an errors.csv that can be uploaded again as an _auto file', async () => {
    world.putEpoch('lincoln', '20240101-020000', { 'users.csv': csv(HEADER, row('u1'), 'u2,Alan,Turing,alan-at-lincoln,teacher,100,1') });
    const r = await world.cli(['run', '--tenant', 'lincoln', '--now']);
    expect(r.code).toBe(1);
    const errors = readCsv(world, `${BAK}/20240101-020000/errors.csv`);
    expect(errors[1].slice(0, 4)).toEqual(['u2', 'Alan', 'Turing', 'alan-at-lincoln']);
    const [mail] = mails(world, 'lincoln');
    expect(mail.attachments[0]).toEqual({ filename: 'errors.csv', content: world.read(`${BAK}/20240101-020000/errors.csv`) });

    world.putFile(`${UPLOAD}/users_auto.csv`, world.read(`${BAK}/20240101-020000/errors.csv`).replace('alan-at-lincoln', 'alan@lincoln.example'));
    const again = await world.cli(['run', '--tenant', 'lincoln', '--now']);
    expect(again.code, again.stdout).toBe(0);
    expect(dbUsers(world, 'lincoln').map((u) => [u.external_id, u.email])).toEqual([
      ['u1', 'u1@lincoln.example'],
      ['u2', 'alan@lincoln.example'],
    ]);
  });
});
