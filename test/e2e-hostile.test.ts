// Hostile and careless files, end to end through the real CLI: a roster row shifted by one
// column never shows its password anywhere; an unclosed quote at the top of a 50 MB file is
// rejected at once, naming the line; errors.csv is safe to open in a spreadsheet and safe to
// upload again as it is; what the worker writes is readable by the district; a file name with
// a terminal escape is shown escaped; links are reported as links.
import fs from 'node:fs';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { databaseBytes, dbUsers, epochsIn, listRemote, mails, readCsv, resultJson } from './harness/checks.js';
import { availableSftpServerKinds, type SftpServerKind } from './harness/sftp-server.js';
import { csv, World, type CliResult } from './harness/world.js';

const ROSTER = 'STUDENT_ID,FIRST_NAME,LAST_NAME,GRADE,SITE_ID,EMAIL,PASSWORD';
const SAMEGOAL = 'user_id,first_name,last_name,email,role,school_id,active';
const OPSCOM = 'unique_id,login_source,first_name,last_name,email,phone_cell';
const ESC = '\x1b';

/** Runs the CLI and samples its peak resident memory (VmHWM) while it runs. */
async function measured(world: World, args: string[]): Promise<CliResult & { ms: number; peakMb: number }> {
  const t0 = Date.now();
  const child = world.spawnCli(args);
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => (stdout += d));
  child.stderr.on('data', (d) => (stderr += d));
  let peakKb = 0;
  const sample = setInterval(() => {
    try {
      const m = /VmHWM:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${child.pid}/status`, 'utf8'));
      if (m) peakKb = Math.max(peakKb, Number(m[1]));
    } catch {
      // gone
    }
  }, 20);
  const code = await new Promise<number>((resolve) => child.on('close', (c) => resolve(c ?? -1)));
  clearInterval(sample);
  return { code, stdout, stderr, ms: Date.now() - t0, peakMb: Math.round(peakKb / 1024) };
}

// On OpenSSH the server makes private files (umask 077), as some hosts do: what the worker
// writes must still be readable by the district. The embedded server has no umask of its own.
const serverOptions = (kind: SftpServerKind) => (kind === 'openssh' ? { umask: '077' } : {});

describe.each(availableSftpServerKinds())('hostile files on %s sftp', (kind) => {
  let world: World;
  beforeEach(async (ctx) => {
    world = await World.start(kind, `hostile-${kind}-${ctx.task.name}`, serverOptions(kind));
    world.set('mail', { from: 'Provisioning <provisioning@vendor.example>', outbox: './data/outbox', operators: ['ops@vendor.example'] });
  });
  afterEach(async (ctx) => {
    await world.stop(ctx.task.result?.state === 'fail');
  });

  it('never shows a date password, when a row is shifted by one column or has the wrong number of values', async () => {
    world.addTenant('lincoln', {
      paths: { upload: '/lincoln/upload', bak: '/lincoln/upload/bak', tmp: '/lincoln/tmp', log: '/lincoln/log/import.log' },
      files: { 'students.csv': 'roster-students' },
      loose: 'all',
      options: { strictHeaders: true, passwordFormat: 'date' },
      notify: { to: ['it@lincoln.example'], when: 'failures' },
    });
    const secret = '1987-06-13';
    world.putFile(
      '/lincoln/upload/students.csv',
      csv(
        ROSTER,
        `1001,Ada,Lovelace,5,100,ada@lincoln.example,${secret}`,
        // GRADE left out, a trailing comma added: every value moves one column left, the password into EMAIL.
        `1002,Alan,Turing,100,alan@lincoln.example,${secret},`,
        // GRADE left out: one value short.
        `1003,Grace,Hopper,100,grace@lincoln.example,${secret}`,
        // One value too many.
        `1004,Edsger,Dijkstra,5,100,x,edsger@lincoln.example,${secret}`,
      ),
    );
    const r = await world.cli(['run', '--tenant', 'lincoln', '--now']);
    expect(r.code, r.stdout + r.stderr).toBe(1);
    expect(r.stdout).toContain('applied with errors');
    expect(r.stdout).toMatch(/line 3: EMAIL "\(hidden\)": /);
    expect(r.stdout).toContain('line 4: this row has 6 values but the header has 7 columns');
    expect(r.stdout).toContain('line 5: this row has 8 values but the header has 7 columns');
    expect(dbUsers(world, 'lincoln').map((u) => u.external_id)).toEqual(['1001']);

    const [epoch] = epochsIn(world, '/lincoln/upload/bak');
    const errorsCsv = world.read(`/lincoln/upload/bak/${epoch}/errors.csv`);
    expect(readCsv(world, `/lincoln/upload/bak/${epoch}/errors.csv`).slice(1).map((e) => e[0])).toEqual(['1002', '1003', '1004']);
    const sent = mails(world);
    expect(sent).toHaveLength(1);
    expect(sent[0].attachments.map((a) => a.filename)).toEqual(['errors.csv']);
    const values = world.query<{ value: string | null }>('SELECT value FROM import_errors').map((e) => e.value ?? '');
    const everything = [
      r.stdout,
      r.stderr,
      errorsCsv,
      world.read(`/lincoln/upload/bak/${epoch}/result.json`),
      world.read('/lincoln/log/import.log'),
      sent[0].subject,
      sent[0].text,
      sent[0].attachments[0].content,
      world.query<{ html: string }>('SELECT html FROM mail_queue')[0].html,
      values.join('\n'),
      databaseBytes(world).toString('latin1'),
      (await world.cli(['status', '--tenant', 'lincoln'])).stdout,
      (await world.cli(['status', '--tenant', 'lincoln', '--json'])).stdout,
    ].join('\n');
    for (const form of [secret, '6/13/1987', '19870613']) expect(everything).not.toContain(form);
  });

  it('rejects an unclosed quote near the top of a 50 MB file at once, naming its line, with bounded memory', async () => {
    world.addTenant('lincoln', { notify: { to: ['it@lincoln.example'], when: 'failures' } });
    const row = (i: number) => `u${i},First${i},Last${i},u${i}@lincoln.example,staff,1,1`;
    const chunk = Array.from({ length: 10_000 }, (_, i) => row(i)).join('\n') + '\n';
    const body = [`${SAMEGOAL}\n${row(0)}\nu1,"Ada,Lovelace,ada@lincoln.example,staff,1,1\n`];
    let size = body[0].length;
    while (size < 50 * 1024 * 1024) {
      body.push(chunk);
      size += chunk.length;
    }
    world.putEpoch('lincoln', '20240101-020000', { 'users.csv': body.join('') });

    const r = await measured(world, ['run', '--tenant', 'lincoln', '--now']);
    process.stderr.write(`[unclosed quote in 50 MB on ${kind}] ${r.ms} ms, peak RSS ${r.peakMb} MB\n`);
    expect(r.code, r.stdout + r.stderr).toBe(1);
    expect(r.stdout).toMatch(/20240101-020000\s*│\s*users\.csv\s*│\s*rejected/);
    expect(r.stdout).toMatch(/line 3\b/);
    expect(r.stdout).toContain('Check line 3 for a stray quote character');
    expect(r.ms).toBeLessThan(30_000);
    expect(r.peakMb).toBeLessThan(400);
    expect(dbUsers(world, 'lincoln')).toEqual([]);
    expect(mails(world)[0].text).toContain('line 3');
  }, 120_000);

  it('writes errors.csv with a BOM, escapes formulas across line breaks, takes it back unchanged, and leaves 0644 files', async () => {
    world.addTenant('parking', { files: { '*.csv': 'opscom-users' }, loose: 'all', notify: { to: ['it@parking.example'], when: 'failures' } });
    const formula = '=HYPERLINK("http://x","y")\nsecond line';
    world.putEpoch('parking', '20240101-020000', {
      'permits.csv': csv(
        OPSCOM,
        'p1,local,Ada,Lovelace,ada@parking.example,+1 604 555 0101',
        `p2,local,"${formula.replace(/"/g, '""')}",Turing,not-an-email,+1 604 555 0102`,
        'p3,local,@SUM(1+1),-Hopper,also-not-an-email,+1 604 555 0103',
      ),
    });
    const r = await world.cli(['run', '--tenant', 'parking', '--now']);
    expect(r.code, r.stdout + r.stderr).toBe(1);
    const bak = '/parking/upload/bak/20240101-020000';
    const raw = fs.readFileSync(world.remote(`${bak}/errors.csv`));
    expect([...raw.subarray(0, 3)]).toEqual([0xef, 0xbb, 0xbf]);
    const rows = readCsv(world, `${bak}/errors.csv`);
    expect(rows[0]).toEqual(['unique_id', 'login_source', 'first_name', 'last_name', 'email', 'phone_cell', 'error']);
    expect(rows[1]).toEqual(['p2', 'local', `'${formula}`, 'Turing', 'not-an-email', "'+1 604 555 0102", expect.stringContaining('line 3: email')]);
    expect(rows[2].slice(0, 6)).toEqual(['p3', 'local', "'@SUM(1+1)", "'-Hopper", 'also-not-an-email', "'+1 604 555 0103"]);
    expect(mails(world)[0].attachments[0].content).toBe(raw.toString('utf8'));
    for (const f of ['errors.csv', 'result.json']) expect((fs.statSync(world.remote(`${bak}/${f}`)).mode & 0o777).toString(8), f).toBe('644');

    // Fixed in a spreadsheet (only the e-mails) and uploaded again as it is: no value changes.
    const fixed = raw.toString('utf8').replace('not-an-email', 'alan@parking.example').replace('also-not-an-email', 'grace@parking.example');
    world.putEpoch('parking', '20240102-020000', { 'permits.csv': fixed });
    const again = await world.cli(['run', '--tenant', 'parking', '--now']);
    expect(again.code, again.stdout + again.stderr).toBe(0);
    const users = await world.usersJson('parking');
    expect(users.map((u) => [u.externalId, u.firstName, u.lastName, (u.attributes as Record<string, string>).phone_cell])).toEqual([
      ['p1', 'Ada', 'Lovelace', '+1 604 555 0101'],
      ['p2', formula, 'Turing', '+1 604 555 0102'],
      ['p3', '@SUM(1+1)', '-Hopper', '+1 604 555 0103'],
    ]);
    expect((fs.statSync(world.remote('/parking/upload/bak/20240102-020000/result.json')).mode & 0o777).toString(8)).toBe('644');
  });

  it('shows a file name with a terminal escape escaped: in run output, status and the remote log', async () => {
    world.addTenant('parking', {
      paths: { upload: '/parking/upload', bak: '/parking/upload/bak', tmp: '/parking/tmp', log: '/parking/log/import.log' },
      files: { '*.csv': 'opscom-users' },
      loose: 'all',
      notify: { to: ['it@parking.example'], when: 'failures' },
    });
    const name = `permits${ESC}[31mRED${ESC}[0m.csv`;
    const shown = 'permits\\x1b[31mRED\\x1b[0m.csv';
    world.putEpoch('parking', '20240101-020000', { [name]: csv(OPSCOM, 'p1,local,Ada,Lovelace,ada@parking.example,') });
    const r = await world.cli(['run', '--tenant', 'parking', '--now']);
    expect(r.code, r.stdout + r.stderr).toBe(1);
    expect(r.stdout).toContain(shown);
    expect(r.stdout + r.stderr).not.toContain(ESC);
    const status = await world.cli(['status', '--tenant', 'parking']);
    expect(status.stdout).toContain(shown);
    expect(status.stdout).not.toContain(ESC);
    const log = world.read('/parking/log/import.log');
    expect(log).toContain(shown);
    expect(log).not.toContain(ESC);
  });

  it('reports names with a backslash or a control character as names we will not take, escaped, once', async () => {
    world.addTenant('lincoln', { loose: 'auto', notify: { to: ['it@lincoln.example'], when: 'failures' } });
    // A Windows export tool that put its folder into the name; a line break typed into a name.
    world.putEpoch('lincoln', '20240101-020000', { 'exports\\users.csv': csv(SAMEGOAL, 'u1,Ada,Lovelace,ada@lincoln.example,staff,1,1') });
    world.putEpoch('lincoln', '20240102-020000', { 'users\n.csv': csv(SAMEGOAL, 'u2,Alan,Turing,alan@lincoln.example,staff,1,1') });
    world.putFile('/lincoln/upload/exports\\users_auto.csv', csv(SAMEGOAL, 'u3,Grace,Hopper,grace@lincoln.example,staff,1,1'));

    const r = await world.cli(['run', '--tenant', 'lincoln', '--now']);
    expect(r.code, r.stdout + r.stderr).toBe(1);
    const backslash = '"exports\\\\users.csv" has a backslash (\\) in its name; such names are not taken. Rename it (for example to users.csv) and upload it again';
    expect(r.stdout).toContain(`lincoln 20240101-020000 exports\\users.csv: ${backslash}`);
    expect(r.stdout).toContain('"users\\n.csv" has a control character in its name; such names are not taken.');
    expect(r.stdout).toContain('lincoln: "exports\\\\users_auto.csv" has a backslash (\\) in its name; such names are not taken.');
    expect(r.stdout).not.toContain('no CSV files');
    expect(r.stdout).not.toContain('misnamed');
    expect(dbUsers(world, 'lincoln')).toEqual([]);
    expect(resultJson(world, '/lincoln/upload/bak/20240101-020000')).toMatchObject({ status: 'rejected', files: [{ file: 'exports\\users.csv', status: 'rejected', message: `${backslash}.` }] });
    expect(world.exists('/lincoln/upload/exports\\users_auto.csv')).toBe(true); // left where it is

    const sent = mails(world, 'lincoln');
    expect(sent).toHaveLength(3);
    expect(sent.filter((m) => m.text.includes(backslash))).toHaveLength(1);
    expect(sent.filter((m) => m.text.includes('"users\\n.csv" has a control character in its name'))).toHaveLength(1);
    expect(sent.filter((m) => m.text.includes('"exports\\\\users_auto.csv" has a backslash'))).toHaveLength(1);
    for (const m of sent) {
      expect(m.subject + m.text).not.toContain('users\n.csv'); // the line break shown escaped, in the subject and the body
      expect(m.subject).not.toMatch(/\(\)/);
    }
    expect(sent.find((m) => m.text.includes('exports\\\\users_auto.csv'))!.text).toMatch(/^lincoln district: account provisioning report\nFinished \d{4}-/);

    // Told once: the loose file left in place is not reported again.
    const again = await world.cli(['run', '--tenant', 'lincoln', '--now']);
    expect(again.code, again.stdout + again.stderr).toBe(0);
    expect(again.stdout).toContain('lincoln: "exports\\\\users_auto.csv" has a backslash (\\) in its name; such names are not taken.');
    expect(mails(world, 'lincoln')).toHaveLength(3);
  });

  it('reports a symlinked CSV in an epoch, and a symlink in the upload folder, as links', async () => {
    world.addTenant('lincoln', { notify: { to: ['it@lincoln.example'], when: 'failures' } });
    world.putFile('/lincoln/source/users.csv', csv(SAMEGOAL, 'u1,Ada,Lovelace,ada@lincoln.example,staff,1,1'));
    const dir = world.putEpoch('lincoln', '20240101-020000', {});
    fs.symlinkSync('../../source/users.csv', `${dir}/users.csv`);
    fs.symlinkSync('../source/users.csv', world.remote('/lincoln/upload/users_auto.csv'));
    world.own('/lincoln');

    const r = await world.cli(['run', '--tenant', 'lincoln', '--now']);
    expect(r.code, r.stdout + r.stderr).toBe(1);
    expect(r.stdout).toContain('users.csv is a symbolic link; links are never followed. Upload the file itself.');
    expect(r.stdout).toContain('users_auto.csv is a symbolic link; links are never followed. Upload the file or folder itself.');
    expect(r.stdout).not.toContain('no CSV files');
    expect(dbUsers(world, 'lincoln')).toEqual([]);
    expect(resultJson(world, '/lincoln/upload/bak/20240101-020000')).toMatchObject({ status: 'rejected', files: [{ file: 'users.csv', status: 'rejected' }] });
    expect(listRemote(world, '/lincoln/upload/bak/20240101-020000')).toEqual(['COMPLETE', 'result.json', 'users.csv']);
    expect(fs.lstatSync(world.remote('/lincoln/upload/bak/20240101-020000/users.csv')).isSymbolicLink()).toBe(true);

    const sent = mails(world);
    expect(sent).toHaveLength(2);
    for (const m of sent) {
      expect(m.text).toContain('symbolic link');
      expect(m.text).not.toContain('no CSV files');
    }
    expect(sent.some((m) => m.text.includes('users_auto.csv is a symbolic link'))).toBe(true);
    // Told once: the link left in the upload folder is not reported again.
    const again = await world.cli(['run', '--tenant', 'lincoln', '--now']);
    expect(again.code).toBeLessThanOrEqual(1);
    expect(mails(world)).toHaveLength(2);
  });
});

// Some hosts refuse SETSTAT (chmod): what the worker writes there keeps the server's mode, and
// nothing fails for it. OpenSSH's internal-sftp refuses it when told to (-P setstat,fsetstat).
describe.runIf(availableSftpServerKinds().includes('openssh'))('a server that refuses to set permissions (OpenSSH, -P setstat,fsetstat)', () => {
  let world: World;
  beforeEach(async (ctx) => {
    world = await World.start('openssh', `no-setstat-${ctx.task.name}`, { deniedRequests: 'setstat,fsetstat' });
  });
  afterEach(async (ctx) => {
    await world.stop(ctx.task.result?.state === 'fail');
  });

  it('still writes result.json, errors.csv and the remote log, files the upload in bak, and says so once at warn', async () => {
    world.addTenant('lincoln', { paths: { upload: '/lincoln/upload', bak: '/lincoln/upload/bak', tmp: '/lincoln/tmp', log: '/lincoln/log/import.log' }, notify: { when: 'never' } });
    world.putEpoch('lincoln', '20240101-020000', { 'users.csv': csv(SAMEGOAL, 'u1,Ada,Lovelace,ada@lincoln.example,staff,1,1', 'u2,Alan,Turing,not-an-email,staff,1,1') });
    const r = await world.cli(['run', '--tenant', 'lincoln', '--now']);
    expect(r.code, r.stdout + r.stderr).toBe(1); // the row error, nothing else
    expect(r.stdout).toMatch(/20240101-020000\s*│\s*users\.csv\s*│\s*applied with errors/);
    expect(r.stdout).not.toContain('could not be written');
    expect(listRemote(world, '/lincoln/upload/bak/20240101-020000')).toEqual(['COMPLETE', 'errors.csv', 'result.json', 'users.csv']);
    expect(resultJson(world, '/lincoln/upload/bak/20240101-020000').files[0]).toMatchObject({ status: 'applied with errors', errorsCsv: 'errors.csv' });
    expect(world.read('/lincoln/log/import.log')).toContain('file="users.csv" status="applied with errors"');
    const refusals = r.stderr.split('\n').filter((l) => l.includes('refused to set the permissions'));
    expect(refusals, r.stderr).toHaveLength(1);
    expect(JSON.parse(refusals[0]).level).toBe(40); // warn
  });
});
