// The spine, end to end against a real SFTP server (OpenSSH where installed, and the embedded
// one), real SQLite and the real CLI: what a district uploads, what the worker leaves behind.
import fs from 'node:fs';
import Papa from 'papaparse';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { execute } from './harness/stores.js';
import { csv, World, worlds } from './harness/world.js';

const HEADER = 'user_id,first_name,last_name,email,role,school_id,active';

describe.each(worlds())('spine on %s', (_label, kind, store) => {
  let world: World;
  beforeEach(async (ctx) => {
    world = await World.start(kind, `${kind}-${ctx.task.name}-${store}`, { store });
    world.addTenant('lincoln');
  });
  // vitest 4 runs afterEach before onTestFailed: read the result from the task itself.
  afterEach(async (ctx) => {
    await world.stop(ctx.task.result?.state === 'fail');
  });

  it('applies a ready epoch, files it in bak with result.json and errors.csv, and exits 1 for row errors', async () => {
    world.putEpoch('lincoln', '20240101-020000', {
      'users.csv': csv(
        HEADER,
        'u1,Ada,Lovelace,ada@lincoln.example,teacher,100,1',
        'u2,Alan,Turing,not-an-email,teacher,100,1',
        'u3,Grace,Hopper,grace@lincoln.example,admin,200,',
        ',No,Id,noid@lincoln.example,staff,100,1',
        'u4,Edsger,Dijkstra,edsger@lincoln.example,teacher,300,yes',
      ),
    });
    const r = await world.cli(['run', '--tenant', 'lincoln', '--now']);
    expect(r.code, r.stderr).toBe(1);
    expect(r.stdout).toContain('applied with errors');
    expect(r.stdout).toContain('line 3: email "not-an-email": is not a valid e-mail address');

    expect(world.exists('/lincoln/upload/20240101-020000')).toBe(false);
    const bak = '/lincoln/upload/bak/20240101-020000';
    expect(fs.readdirSync(world.remote(bak)).sort()).toEqual(['COMPLETE', 'errors.csv', 'result.json', 'users.csv']);
    const result = JSON.parse(world.read(`${bak}/result.json`));
    expect(result.status).toBe('applied with errors');
    expect(result.files[0]).toMatchObject({ file: 'users.csv', rows: 5, created: 3, failed: 2, errorsCsv: 'errors.csv' });

    const errors = Papa.parse<string[]>(world.read(`${bak}/errors.csv`).trim()).data;
    expect(errors[0]).toEqual([...HEADER.split(','), 'error']);
    expect(errors.slice(1).map((e) => e[0])).toEqual(['u2', '']);
    expect(errors[1][3]).toBe('not-an-email');
    expect(errors[2][7]).toContain('user_id is required but empty');

    const users = await world.usersJson('lincoln');
    expect(users.map((u) => u.externalId)).toEqual(['u1', 'u3', 'u4']);
    expect(users[0]).toMatchObject({ kind: 'samegoal-users', email: 'ada@lincoln.example', firstName: 'Ada', lastName: 'Lovelace', siteId: '100', active: true, archivedAt: null });

    const status = JSON.parse((await world.cli(['status', '--json'])).stdout);
    expect(status[0].tenant).toBe('lincoln');
    expect(status[0].imports[0]).toMatchObject({ epoch: '20240101-020000', file: 'users.csv', status: 'applied with errors', rows: 5, created: 3, failed: 2 });

    // The fixed errors.csv can be uploaded again as it is (its `error` column is ignored).
    const fixed = world.read(`${bak}/errors.csv`).replace('not-an-email', 'alan@lincoln.example').replace(/\r\n,No,Id,[^\r\n]*/, '');
    world.putEpoch('lincoln', '20240102-020000', { 'users.csv': fixed });
    const again = await world.cli(['run', '--tenant', 'lincoln', '--now']);
    expect(again.code, again.stdout + again.stderr).toBe(0);
    expect((await world.usersJson('lincoln')).map((u) => u.externalId)).toEqual(['u1', 'u2', 'u3', 'u4']);

    // A second run finds nothing to do.
    const idle = await world.cli(['run', '--tenant', 'lincoln', '--now']);
    expect(idle.code).toBe(0);
    expect(idle.stdout).toContain('nothing to do');
  });

  it('applies a new upload that reuses an old epoch name, but never the same content twice', async () => {
    world.putEpoch('lincoln', '20240101-020000', { 'users.csv': csv(HEADER, 'u1,Ada,Lovelace,ada@lincoln.example,,,') });
    expect((await world.cli(['run', '--tenant', 'lincoln', '--now'])).code).toBe(0);
    world.putEpoch('lincoln', '20240101-020000', { 'users.csv': csv(HEADER, 'u2,Alan,Turing,alan@lincoln.example,,,') });
    const r = await world.cli(['run', '--tenant', 'lincoln', '--now']);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect((await world.usersJson('lincoln')).map((u) => u.externalId)).toEqual(['u1', 'u2']);
    expect(fs.readdirSync(world.remote('/lincoln/upload/bak')).sort()).toEqual(['20240101-020000', '20240101-020000-2']);
  });

  it('leaves an epoch without COMPLETE alone', async () => {
    world.putEpoch('lincoln', '20240101-020000', { 'users.csv': csv(HEADER, 'u1,Ada,Lovelace,ada@lincoln.example,,,') }, false);
    const r = await world.cli(['run', '--tenant', 'lincoln', '--now']);
    expect(r.code).toBe(0);
    expect(fs.readdirSync(world.remote('/lincoln/upload/20240101-020000'))).toEqual(['users.csv']);
    expect(await world.usersJson('lincoln')).toEqual([]);
  });

  it('takes an _auto.csv file only once it has settled', async () => {
    // Long enough that a slow first run (a busy machine) still sees the file as fresh.
    world.addTenant('lincoln', { settleSeconds: 5 });
    world.putFile('/lincoln/upload/users_auto.csv', csv(HEADER, 'u1,Ada,Lovelace,ada@lincoln.example,,,'));
    const early = await world.cli(['run', '--tenant', 'lincoln', '--now']);
    expect(early.code).toBe(0);
    expect(early.stdout).toContain('users_auto.csv is still settling');
    expect(world.exists('/lincoln/upload/users_auto.csv')).toBe(true);

    await new Promise((r) => setTimeout(r, 5500));
    const later = await world.cli(['run', '--tenant', 'lincoln', '--now']);
    expect(later.code, later.stderr).toBe(0);
    expect(world.exists('/lincoln/upload/users_auto.csv')).toBe(false);
    const epochs = fs.readdirSync(world.remote('/lincoln/upload/bak'));
    expect(epochs).toHaveLength(1);
    expect(epochs[0]).toMatch(/^\d{8}-\d{6}$/);
    expect(fs.readdirSync(world.remote(`/lincoln/upload/bak/${epochs[0]}`)).sort()).toEqual(['COMPLETE', 'result.json', 'users.csv']);
    expect((await world.usersJson('lincoln')).map((u) => u.externalId)).toEqual(['u1']);
  });

  it('applies an epoch once when two run --now processes race for it', async () => {
    const rows = Array.from({ length: 3000 }, (_, i) => `u${i},First${i},Last${i},u${i}@lincoln.example,staff,1,1`);
    world.putEpoch('lincoln', '20240101-020000', { 'users.csv': csv(HEADER, ...rows) });
    const [a, b] = await Promise.all([world.cli(['run', '--tenant', 'lincoln', '--now']), world.cli(['run', '--tenant', 'lincoln', '--now'])]);
    expect([a.code, b.code].sort(), a.stderr + b.stderr).toEqual([0, 0]);
    const imports = world.query<{ n: number }>("SELECT count(*) AS n FROM imports WHERE epoch = '20240101-020000'");
    expect(imports[0].n).toBe(1);
    expect(world.query<{ n: number }>('SELECT count(*) AS n FROM users')[0].n).toBe(3000);
    // Creates are recorded once per import: every user points at the one import that made it.
    expect(world.query<{ n: number }>("SELECT count(DISTINCT created_import_id) AS n FROM users")[0].n).toBe(1);
    expect(world.query<{ n: number }>("SELECT created AS n FROM imports WHERE epoch = '20240101-020000'")[0].n).toBe(3000);
  });

  it('recovers the claim of a run that was killed mid-way, and applies the epoch once', async () => {
    const rows = Array.from({ length: 150_000 }, (_, i) => `u${i},First${i},Last${i},u${i}@lincoln.example,staff,1,1`);
    world.putEpoch('lincoln', '20240101-020000', { 'users.csv': `${HEADER}\n${rows.join('\n')}\n` });
    const child = world.spawnCli(['run', '--tenant', 'lincoln', '--now']);
    const claimed = world.remote('/lincoln/upload/.processing/20240101-020000');
    const deadline = Date.now() + 20_000;
    while (!fs.existsSync(claimed) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
    expect(fs.existsSync(claimed)).toBe(true);
    child.kill('SIGKILL');
    await new Promise((r) => child.on('close', r));
    expect(world.query<{ n: number }>('SELECT count(*) AS n FROM users')[0].n).toBe(0);

    const r = await world.cli(['run', '--tenant', 'lincoln', '--now']);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stderr).toContain('recovering epoch 20240101-020000');
    expect(world.exists('/lincoln/upload/bak/20240101-020000/users.csv')).toBe(true);
    expect(world.exists('/lincoln/upload/.processing/20240101-020000')).toBe(false);
    expect(world.query<{ n: number }>('SELECT count(*) AS n FROM users')[0].n).toBe(150_000);
    expect(world.query<{ n: number }>("SELECT count(*) AS n FROM imports WHERE status = 'applied'")[0].n).toBe(1);
  }, 120_000);

  it("never takes an upload a live worker elsewhere has claimed (by its claim file or the store's lease), and takes one whose lease ran out", async () => {
    const elsewhere = 'worker-2.elsewhere.example:4242:0badcafe';
    const claimFile = (expiresInMs: number) =>
      JSON.stringify({ owner: elsewhere, claimedAt: new Date(Date.now() - 10_000).toISOString(), expiresAt: new Date(Date.now() + expiresInMs).toISOString() });
    const claimed = (epoch: string, user: string, claim: string | null) => {
      const dir = `/lincoln/upload/.processing/${epoch}`;
      world.putFile(`${dir}/users.csv`, csv(HEADER, `${user},Ada,Lovelace,${user}@lincoln.example,teacher,100,1`));
      world.putFile(`${dir}/COMPLETE`, '');
      if (claim) world.putFile(`${dir}/.provisioner-claim.json`, claim);
    };
    // A worker that shares no database with us, its lease good for ten more minutes; one whose
    // lease ran out a minute ago; and one that shares our database (its claim file not written yet).
    claimed('20240101-020000', 'u1', claimFile(600_000));
    claimed('20240102-020000', 'u2', claimFile(-60_000));
    claimed('20240103-020000', 'u3', null);
    expect((await world.cli(['run', '--tenant', 'lincoln', '--now', '--dry-run'])).code).toBe(0); // makes the database
    await execute(world.database, 'INSERT INTO claims (tenant, epoch, owner, claimed_at, expires_at) VALUES (?, ?, ?, ?, ?)',
      'lincoln', '20240103-020000', elsewhere, new Date().toISOString(), new Date(Date.now() + 600_000).toISOString());

    const r = await world.cli(['run', '--tenant', 'lincoln', '--now']);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    for (const epoch of ['20240101-020000', '20240103-020000']) {
      expect(r.stderr).toContain(`epoch ${epoch} is being processed by ${elsewhere}`);
      expect(world.exists(`/lincoln/upload/.processing/${epoch}/users.csv`)).toBe(true);
    }
    expect(r.stderr).toContain('recovering epoch 20240102-020000');
    expect(world.exists('/lincoln/upload/bak/20240102-020000/result.json')).toBe(true);
    expect((await world.usersJson('lincoln')).map((u) => u.externalId)).toEqual(['u2']);
  });

  it('rejects a misnamed file and says which names are expected', async () => {
    world.putEpoch('lincoln', '20240101-020000', { 'usrs.csv': csv(HEADER, 'u1,Ada,Lovelace,ada@lincoln.example,,,') });
    const r = await world.cli(['run', '--tenant', 'lincoln', '--now']);
    expect(r.code).toBe(1);
    expect(r.stdout).toContain('misnamed file "usrs.csv"; expected one of "users.csv"');
    const result = JSON.parse(world.read('/lincoln/upload/bak/20240101-020000/result.json'));
    expect(result.files[0]).toMatchObject({ file: 'usrs.csv', status: 'rejected' });
    expect(await world.usersJson('lincoln')).toEqual([]);
  });

  it('rejects a file with a missing column and applies nothing of it', async () => {
    world.putEpoch('lincoln', '20240101-020000', { 'users.csv': csv('user_id,first_name,last_name', 'u1,Ada,Lovelace') });
    const r = await world.cli(['run', '--tenant', 'lincoln', '--now']);
    expect(r.code).toBe(1);
    expect(r.stdout).toContain('missing required column "email"');
    expect(await world.usersJson('lincoln')).toEqual([]);
    const result = JSON.parse(world.read('/lincoln/upload/bak/20240101-020000/result.json'));
    expect(result.status).toBe('rejected');
  });

  it('reads a UTF-8 file with a BOM and CRLF line ends', async () => {
    const body = '\uFEFF' + [HEADER, 'u1,Zoë,Ångström,zoe@lincoln.example,teacher,1,1', 'u2,José,Núñez,jose@lincoln.example,teacher,1,1'].join('\r\n') + '\r\n';
    world.putEpoch('lincoln', '20240101-020000', { 'users.csv': Buffer.from(body, 'utf8') });
    const r = await world.cli(['run', '--tenant', 'lincoln', '--now']);
    expect(r.code, r.stdout).toBe(0);
    const users = await world.usersJson('lincoln');
    expect(users.map((u) => [u.externalId, u.firstName, u.lastName])).toEqual([
      ['u1', 'Zoë', 'Ångström'],
      ['u2', 'José', 'Núñez'],
    ]);
  });

  it('reads quoted commas, quotes and newlines, and reports the right line numbers after them', async () => {
    world.putEpoch('lincoln', '20240101-020000', {
      'users.csv': csv(
        HEADER,
        'u1,"Smith, Jr.","O""Brien",u1@lincoln.example,teacher,1,1',
        'u2,"Multi',
        'line",Name,u2@lincoln.example,teacher,1,1',
        'u3,Bad,Row,bad-email,teacher,1,1',
      ),
    });
    const r = await world.cli(['run', '--tenant', 'lincoln', '--now']);
    expect(r.code).toBe(1);
    expect(r.stdout).toContain('line 5: email "bad-email"');
    const users = await world.usersJson('lincoln');
    expect(users.map((u) => [u.firstName, u.lastName])).toEqual([
      ['Smith, Jr.', 'O"Brien'],
      ['Multi\nline', 'Name'],
    ]);
  });

  it('refuses a server whose host key does not match the pinned one', async () => {
    world.addTenant('lincoln', {});
    const tenant = world.tenantConfig('lincoln') as { sftp: Record<string, unknown> };
    tenant.sftp.hostKey = 'SHA256:' + 'A'.repeat(43);
    world.writeConfig();
    world.putEpoch('lincoln', '20240101-020000', { 'users.csv': csv(HEADER, 'u1,Ada,Lovelace,ada@lincoln.example,,,') });
    const r = await world.cli(['run', '--tenant', 'lincoln', '--now']);
    expect(r.code).toBe(3);
    expect(r.stdout).toContain('host key mismatch');
    expect(r.stdout).toContain(world.server.hostKeyFingerprint);
    expect(world.exists('/lincoln/upload/20240101-020000/COMPLETE')).toBe(true);
  });

  it('reports duplicate ids as row errors naming the first line', async () => {
    world.putEpoch('lincoln', '20240101-020000', {
      'users.csv': csv(HEADER, 'u1,Ada,Lovelace,ada@lincoln.example,,,', 'u1,Ada,Again,ada2@lincoln.example,,,'),
    });
    const r = await world.cli(['run', '--tenant', 'lincoln', '--now']);
    expect(r.code).toBe(1);
    expect(r.stdout).toContain('line 3: user_id "u1": duplicate user_id: it already appears on line 2');
    expect((await world.usersJson('lincoln'))[0].lastName).toBe('Lovelace');
  });
});

describe('command line', () => {
  it('prints its version, its help, and exits 2 on an unknown command', async () => {
    const world = await World.start('embedded', 'cli-basics');
    try {
      const version = await world.cli(['--version']);
      expect(version.stdout.trim()).toMatch(/^\d+\.\d+\.\d+$/);
      const help = await world.cli(['run', '--help']);
      expect(help.code).toBe(0);
      expect(help.stdout).toContain('--dry-run');
      expect((await world.cli(['bogus'])).code).toBe(2);
    } finally {
      await world.stop(false);
    }
  });
});

describe('configuration errors', () => {
  it('reports every problem at once as path: message and exits 2', async () => {
    const world = await World.start('embedded', 'config-errors');
    try {
      world.addTenant('lincoln', { schedule: 'every night', files: { 'users.csv': 'no-such-kind' } });
      const t = world.tenantConfig('lincoln') as { sftp: Record<string, unknown> };
      t.sftp.password = '${LINCOLN_SFTP_PASSWORD}';
      world.writeConfig();
      const r = await world.cli(['run', '--now'], { LINCOLN_SFTP_PASSWORD: '' });
      expect(r.code).toBe(2);
      expect(r.stderr).toContain('tenants.lincoln.schedule: "every night" is not a valid cron expression');
      expect(r.stderr).toContain('tenants.lincoln.files.users.csv: unknown file kind "no-such-kind"');
      // A tenant's SFTP secret is needed only to connect to it: status works without it, a run says what is missing.
      world.addTenant('lincoln', {});
      const t2 = world.tenantConfig('lincoln') as { sftp: Record<string, unknown> };
      t2.sftp.password = '${LINCOLN_SFTP_PASSWORD}';
      delete t2.sftp.privateKey;
      world.writeConfig();
      const env = { ...process.env };
      delete env.LINCOLN_SFTP_PASSWORD;
      expect((await world.cli(['status'], {})).code).toBe(0);
      const missing = await world.cliWithEnv(['run', '--now'], env);
      expect(missing.code, missing.stdout + missing.stderr).toBe(3);
      expect(missing.stdout).toContain('tenants.lincoln.sftp.password: environment variable LINCOLN_SFTP_PASSWORD is not set');
    } finally {
      await world.stop(false);
    }
  });
});
