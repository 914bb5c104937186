// Agylia user imports (seed 002), end to end: one fixed file /uploads/user-import.csv that
// stays where it is and is processed only when its content is new (SHA1 in /tmp; deleting it
// forces a retry), a run log in /log/user-import.log, and changes made in the name of a
// nominated admin. Real SFTP server (both kinds), real CLI, real SQLite.
import crypto from 'node:crypto';
import fs from 'node:fs';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { dbUsers, epochsIn, listRemote, mails, readCsv, resultJson } from './harness/checks.js';
import { csv, World, worlds } from './harness/world.js';

const HEADER = 'Email,FirstName,LastName,Username,Department,JobTitle,Active';
const FILE = '/uploads/user-import.csv';
const HASH = '/tmp/user-import.csv.sha1';
const LOG = '/log/user-import.log';
const ADMIN = 'ftp-user@acme.example';

const sha1 = (text: string) => crypto.createHash('sha1').update(text).digest('hex');

describe.each(worlds())('Agylia user imports on %s', (_label, kind, store) => {
  let world: World;
  beforeEach(async (ctx) => {
    world = await World.start(kind, `agylia-${kind}-${ctx.task.name}-${store}`, { store });
    world.addTenant('acme', {
      schedule: '0 0 * * *',
      paths: { upload: '/uploads', bak: '/reports', tmp: '/tmp', log: LOG },
      files: { 'user-import.csv': 'agylia-users' },
      loose: 'keep',
      options: { actor: ADMIN },
      notify: { to: [ADMIN], replyTo: 'support@vendor.example', when: 'always' },
    });
    fs.mkdirSync(world.remote('/uploads'), { recursive: true });
  });
  // ctx, not onTestFailed: vitest runs afterEach hooks before onTestFailed callbacks.
  afterEach(async (ctx) => {
    await world.stop(ctx.task.result?.state === 'fail');
  });

  const logLines = () => world.read(LOG).trim().split('\n');
  const importCount = () => world.query<{ n: number }>("SELECT count(*) AS n FROM imports WHERE tenant = 'acme'")[0].n;

  it('processes user-import.csv in place once, keeps its SHA1 in /tmp, logs each run, and retries when the hash file is deleted', async () => {
    const v1 = csv(
      HEADER,
      'Ada@acme.example,Ada,Lovelace,ada,Research,Analyst,1',
      'grace@acme.example,Grace,Hopper,grace,Navy,Admiral,yes',
      'alan@acme.example,Alan,Turing,alan,Research,Scientist,maybe',
    );
    world.putFile(FILE, v1);
    expect(world.exists('/log')).toBe(false);

    const first = await world.cli(['run', '--tenant', 'acme', '--now']);
    expect(first.code, first.stdout + first.stderr).toBe(1);
    expect(first.stdout).toContain('line 4: Active "maybe": must be 1 or 0');
    // Left where it is; the hash written beside nothing else in /tmp.
    expect(world.read(FILE)).toBe(v1);
    expect(world.read(HASH)).toBe(`${sha1(v1)}  user-import.csv\n`);
    expect(listRemote(world, '/tmp')).toEqual(['user-import.csv.sha1']);
    // The run log: its folder created, one line for the file.
    expect(logLines()).toHaveLength(1);
    expect(logLines()[0]).toMatch(/^\d{4}-\d\d-\d\dT\S+ epoch=\d{8}-\d{6} file="user-import.csv" status="applied with errors" rows=3 created=2 .* failed=1 sha1=[0-9a-f]{40}$/);
    expect(logLines()[0]).toContain(`sha1=${sha1(v1)}`);
    // Results and the fix-and-resubmit errors.csv in the tenant's bak folder.
    const [epoch] = epochsIn(world, '/reports');
    expect(listRemote(world, `/reports/${epoch}`)).toEqual(['errors.csv', 'result.json']);
    expect(resultJson(world, `/reports/${epoch}`)).toMatchObject({ status: 'applied with errors', files: [{ file: 'user-import.csv', created: 2, failed: 1 }] });
    const errors = readCsv(world, `/reports/${epoch}/errors.csv`);
    expect(errors).toEqual([
      [...HEADER.split(','), 'error'],
      ['alan@acme.example', 'Alan', 'Turing', 'alan', 'Research', 'Scientist', 'maybe', 'line 4: Active "maybe": must be 1 or 0 (true/false, yes/no and y/n are accepted too)'],
    ]);
    // Users keyed by their address, changed in the name of the nominated admin.
    const users = dbUsers(world, 'acme');
    expect(users.map((u) => [u.external_id, u.email, u.username, u.updated_by])).toEqual([
      ['ada@acme.example', 'Ada@acme.example', 'ada', ADMIN],
      ['grace@acme.example', 'grace@acme.example', 'grace', ADMIN],
    ]);
    expect(JSON.parse(users[0].attributes)).toEqual({ Department: 'Research', JobTitle: 'Analyst' });
    expect(world.query("SELECT DISTINCT actor FROM imports WHERE tenant = 'acme'")).toEqual([{ actor: ADMIN }]);
    expect(world.query("SELECT DISTINCT actor FROM imports WHERE tenant = 'acme'")).toEqual([{ actor: ADMIN }]);
    expect(world.query("SELECT DISTINCT updated_by AS actor FROM users WHERE tenant = 'acme'")).toEqual([{ actor: ADMIN }]);
    // The status report goes to the admin, with the failed records attached.
    const [report] = mails(world, 'acme');
    expect(report.to).toEqual([ADMIN]);
    expect(report.subject).toContain('user-import.csv applied with 1 error');
    expect(report.attachments.map((a) => a.filename)).toEqual(['errors.csv']);

    // The same content again: nothing to do, nothing logged.
    const idle = await world.cli(['run', '--tenant', 'acme', '--now']);
    expect(idle.code, idle.stdout).toBe(0);
    expect(idle.stdout).toContain('nothing to do');
    expect(logLines()).toHaveLength(1);
    expect(importCount()).toBe(1);

    // Deleting the hash file is how the customer asks for a retry.
    fs.rmSync(world.remote(HASH));
    const retry = await world.cli(['run', '--tenant', 'acme', '--now']);
    expect(retry.code).toBe(1);
    expect(importCount()).toBe(2);
    expect(logLines()).toHaveLength(2);
    expect(logLines()[1]).toContain('rows=3 created=0 updated=0 unchanged=2');
    expect(world.read(HASH)).toBe(`${sha1(v1)}  user-import.csv\n`);

    // New content is processed; an address in other capitals is the same user.
    const v2 = csv(HEADER, 'ADA@ACME.EXAMPLE,Ada,King,ada,Research,Countess,1', 'alan@acme.example,Alan,Turing,alan,Research,Scientist,1');
    world.putFile(FILE, v2);
    const changed = await world.cli(['run', '--tenant', 'acme', '--now']);
    expect(changed.code, changed.stdout).toBe(0);
    expect(world.read(HASH)).toBe(`${sha1(v2)}  user-import.csv\n`);
    expect(logLines()).toHaveLength(3);
    expect(logLines()[2]).toContain('status="applied" rows=2 created=1 updated=1');
    expect(dbUsers(world, 'acme').map((u) => [u.external_id, u.email, u.last_name])).toEqual([
      ['ada@acme.example', 'ADA@ACME.EXAMPLE', 'King'],
      ['alan@acme.example', 'alan@acme.example', 'Turing'],
      ['grace@acme.example', 'grace@acme.example', 'Hopper'],
    ]);
    const history = JSON.parse((await world.cli(['users', '--tenant', 'acme', '--history', 'Ada@Acme.example', '--json'])).stdout);
    expect(history.map((c: { action: string; actor: string }) => [c.action, c.actor])).toEqual([
      ['create', ADMIN],
      ['update', ADMIN],
    ]);
    expect(history[1].changes).toEqual(
      expect.arrayContaining([
        { field: 'email', from: 'Ada@acme.example', to: 'ADA@ACME.EXAMPLE' },
        { field: 'last_name', from: 'Lovelace', to: 'King' },
      ]),
    );

    // --force takes the seen content once more.
    const forced = await world.cli(['run', '--tenant', 'acme', '--now', '--force']);
    expect(forced.code).toBe(0);
    expect(logLines()).toHaveLength(4);
    expect(logLines()[3]).toContain('rows=2 created=0 updated=0 unchanged=2');
    expect(epochsIn(world, '/reports')).toHaveLength(4);
  });

  it('never takes a file that is still being written', async () => {
    world.addTenant('acme', { ...world.tenantConfig('acme'), settleSeconds: 2 });
    world.putFile(FILE, csv(HEADER, 'ada@acme.example,Ada,Lovelace,,,,'));
    const early = await world.cli(['run', '--tenant', 'acme', '--now']);
    expect(early.code).toBe(0);
    expect(early.stdout).toContain('user-import.csv is still settling');
    expect(world.exists(HASH)).toBe(false);
    expect(dbUsers(world, 'acme')).toEqual([]);

    // Still growing: the clock starts again.
    await new Promise((r) => setTimeout(r, 1500));
    world.putFile(FILE, csv(HEADER, 'ada@acme.example,Ada,Lovelace,,,,', 'alan@acme.example,Alan,Turing,,,,'));
    const growing = await world.cli(['run', '--tenant', 'acme', '--now']);
    expect(growing.stdout).toContain('still settling');

    await new Promise((r) => setTimeout(r, 2500));
    const later = await world.cli(['run', '--tenant', 'acme', '--now']);
    expect(later.code, later.stdout).toBe(0);
    expect(dbUsers(world, 'acme')).toHaveLength(2);
    expect(world.exists(HASH)).toBe(true);
  });

  it('a dry run reports what would change and leaves the server and the directory alone', async () => {
    world.putFile(FILE, csv(HEADER, 'ada@acme.example,Ada,Lovelace,,,,', 'bad,Bad,Address,,,,'));
    const dry = await world.cli(['run', '--tenant', 'acme', '--now', '--dry-run']);
    expect(dry.code, dry.stdout + dry.stderr).toBe(1);
    expect(dry.stdout).toContain('Dry run: nothing was applied or moved');
    expect(dry.stdout).toMatch(/user-import\.csv\s*│\s*applied with errors\s*│\s*2\s*│\s*1\s*│/);
    expect(world.exists(HASH)).toBe(false);
    expect(world.exists('/log')).toBe(false);
    expect(world.exists('/reports')).toBe(false);
    expect(dbUsers(world, 'acme')).toEqual([]);
    expect(mails(world)).toEqual([]);

    const real = await world.cli(['run', '--tenant', 'acme', '--now']);
    expect(real.code).toBe(1);
    expect(dbUsers(world, 'acme').map((u) => u.external_id)).toEqual(['ada@acme.example']);
    expect(world.exists(HASH)).toBe(true);
  });
});
