// Every outcome reaches the district exactly once, end to end through the real CLI: a held full
// sync and what an operator then decides (release, discard, or nothing because a newer upload
// superseded it), an epoch with COMPLETE and no CSV, a reused epoch name, an upload that never
// completed, and the operators' hold notice whatever the district asked for; a report the mail
// server refuses for good is given up after a few tries, and `status` says so.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { age, dbUsers, epochsIn, listRemote, mails, resultJson } from './harness/checks.js';
import { PERMANENT_TRIES } from '../src/mail/delivery.js';
import { availableSftpServerKinds } from './harness/sftp-server.js';
import { startTestSmtpServer, type TestSmtpServer } from './harness/smtp-server.js';
import { availableStores } from './harness/stores.js';
import { csv, World, worlds } from './harness/world.js';

const HEADER = 'user_id,first_name,last_name,email,role,school_id,active';
const OPERATORS = ['ops@vendor.example'];
const IT = 'it@lincoln.example';
const user = (i: number, last = `Last${i}`) => `u${i},First${i},${last},u${i}@lincoln.example,staff,1,1`;
const ten = Array.from({ length: 10 }, (_, i) => user(i));
const active = (world: World) => dbUsers(world, 'lincoln').filter((u) => u.active).map((u) => u.external_id);

describe.each(worlds())('every outcome reported once on %s', (_label, kind, store) => {
  let world: World;
  beforeEach(async (ctx) => {
    world = await World.start(kind, `outcomes-${kind}-${store}-${ctx.task.name}`, { store });
    world.set('mail', { from: 'Provisioning <provisioning@vendor.example>', outbox: './data/outbox', operators: OPERATORS });
    world.addTenant('lincoln', { options: { fullSync: true, maxDeactivatePercent: 10 }, notify: { to: [IT], when: 'failures' } });
  });
  afterEach(async (ctx) => {
    await world.stop(ctx.task.result?.state === 'fail');
  });

  /** Ten users applied (no mail: the district wants failures only), then an upload of one user held. */
  async function holdOne(epoch = '20240102-020000'): Promise<void> {
    world.putEpoch('lincoln', '20240101-020000', { 'users.csv': csv(HEADER, ...ten) });
    const first = await world.cli(['run', '--tenant', 'lincoln', '--now']);
    expect(first.code, first.stdout + first.stderr).toBe(0);
    world.putEpoch('lincoln', epoch, { 'users.csv': csv(HEADER, ten[0]) });
    const held = await world.cli(['run', '--tenant', 'lincoln', '--now']);
    expect(held.code, held.stdout + held.stderr).toBe(1);
    expect(held.stdout).toContain('would deactivate 9 of 10 active users');
    expect(epochsIn(world, '/lincoln/upload/.held')).toEqual([epoch]);
    expect(active(world)).toHaveLength(10);
  }

  it('a held full sync, then release: two mails (held, then released), the users deactivated, nothing more', async () => {
    await holdOne();
    let sent = mails(world);
    expect(sent).toHaveLength(1);
    expect(sent[0].subject).toContain('held');
    expect(sent[0].to).toEqual([IT, ...OPERATORS]);
    expect(sent[0].text).toContain('/lincoln/upload/.held/20240102-020000');

    // Waiting for review: not taken again, not told again.
    const idle = await world.cli(['run', '--tenant', 'lincoln', '--now']);
    expect(idle.stdout).toContain('nothing to do');
    expect(mails(world)).toHaveLength(1);

    const r = await world.cli(['release', '--tenant', 'lincoln', '20240102-020000']);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toContain('now at /lincoln/upload/bak/20240102-020000');
    expect(active(world)).toEqual(['u0']);
    expect(dbUsers(world, 'lincoln')).toHaveLength(10); // deactivated, never deleted
    expect(resultJson(world, '/lincoln/upload/bak/20240102-020000')).toMatchObject({ status: 'applied', files: [{ deactivated: 9 }] });
    expect(world.exists('/lincoln/upload/.held/20240102-020000')).toBe(false);

    sent = mails(world);
    expect(sent).toHaveLength(2);
    expect(sent[1].to).toContain(IT);
    expect(sent[1].text).toContain('Released by');
    expect(sent[1].text).toContain('/lincoln/upload/bak/20240102-020000');
    expect(JSON.parse((await world.cli(['status', '--tenant', 'lincoln', '--json'])).stdout)[0].held).toEqual([]);

    // Released once: a second release is refused, a later run sends nothing.
    const twice = await world.cli(['release', '--tenant', 'lincoln', '20240102-020000']);
    expect(twice.code).toBe(2);
    expect(twice.stderr).toContain('has no held upload 20240102-020000');
    expect((await world.cli(['run', '--tenant', 'lincoln', '--now'])).stdout).toContain('nothing to do');
    expect(mails(world)).toHaveLength(2);
  });

  it('discard files the held upload in bak unapplied, and the district hears how it ended', async () => {
    await holdOne();
    const r = await world.cli(['discard', '--tenant', 'lincoln', '20240102-020000']);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(/20240102-020000\s*│\s*users\.csv\s*│\s*discarded/);
    expect(active(world)).toHaveLength(10);
    expect(listRemote(world, '/lincoln/upload/bak/20240102-020000')).toEqual(['COMPLETE', 'result.json', 'users.csv']);
    expect(resultJson(world, '/lincoln/upload/bak/20240102-020000')).toMatchObject({ status: 'discarded', files: [{ file: 'users.csv', status: 'discarded' }] });
    const sent = mails(world);
    expect(sent).toHaveLength(2);
    expect(sent[1].text).toContain('Discarded by');
    expect(sent[1].text).toContain('/lincoln/upload/bak/20240102-020000');
    expect(world.query<{ action: string }>('SELECT action FROM audit')).toEqual([{ action: 'discard' }]);
  });

  it('release refuses a held upload older than an import applied since ("superseded") and files it away, reported', async () => {
    await holdOne();
    // The next night's complete export is applied (one surname changed).
    world.putEpoch('lincoln', '20240103-020000', { 'users.csv': csv(HEADER, user(0, 'Renamed'), ...ten.slice(1)) });
    expect((await world.cli(['run', '--tenant', 'lincoln', '--now'])).code).toBe(0);
    const before = await world.cli(['status', '--tenant', 'lincoln']);
    expect(before.stdout).toMatch(/held: 20240102-020000\/users\.csv is superseded by import \d+/);

    const r = await world.cli(['release', '--tenant', 'lincoln', '20240102-020000']);
    expect(r.code, r.stdout + r.stderr).toBe(1);
    expect(r.stdout).toMatch(/20240102-020000\s*│\s*users\.csv\s*│\s*superseded/);
    expect(r.stdout).toContain('applying this older upload would undo it');
    expect(active(world)).toHaveLength(10);
    expect(dbUsers(world, 'lincoln')[0].last_name).toBe('Renamed');
    expect(epochsIn(world, '/lincoln/upload/bak')).toEqual(['20240101-020000', '20240102-020000', '20240103-020000']);
    expect(resultJson(world, '/lincoln/upload/bak/20240102-020000')).toMatchObject({ status: 'superseded', files: [{ status: 'superseded' }] });
    const sent = mails(world);
    expect(sent).toHaveLength(2);
    expect(sent[1].text).toContain('It was not applied: a newer upload');
    expect(JSON.parse((await world.cli(['status', '--tenant', 'lincoln', '--json'])).stdout)[0].held).toEqual([]);
  });

  it('run --now --force does not waive the hold for a new upload in that run', async () => {
    world.putEpoch('lincoln', '20240101-020000', { 'users.csv': csv(HEADER, ...ten) });
    expect((await world.cli(['run', '--tenant', 'lincoln', '--now'])).code).toBe(0);
    world.putEpoch('lincoln', '20240102-020000', { 'users.csv': csv(HEADER, ten[0]) });
    const r = await world.cli(['run', '--tenant', 'lincoln', '--now', '--force']);
    expect(r.code, r.stdout + r.stderr).toBe(1);
    expect(r.stdout).toMatch(/20240102-020000\s*│\s*users\.csv\s*│\s*held/);
    expect(active(world)).toHaveLength(10);
    expect(epochsIn(world, '/lincoln/upload/.held')).toEqual(['20240102-020000']);
  });

  it('the operators get the hold notice even when the district asked for no mail', async () => {
    world.addTenant('lincoln', { options: { fullSync: true, maxDeactivatePercent: 10 }, notify: { when: 'never' } });
    await holdOne();
    const sent = mails(world);
    expect(sent).toHaveLength(1);
    expect(sent[0].to).toEqual(OPERATORS);
    expect(sent[0].subject).toContain('held');
  });

  it('an epoch with COMPLETE and no CSV file is rejected and mailed once', async () => {
    world.putEpoch('lincoln', '20240101-020000', {});
    const r = await world.cli(['run', '--tenant', 'lincoln', '--now']);
    expect(r.code, r.stdout + r.stderr).toBe(1);
    expect(r.stdout).toContain('epoch 20240101-020000 has a COMPLETE file but no CSV files; upload the CSV files (users.csv) before COMPLETE');
    expect(listRemote(world, '/lincoln/upload/bak/20240101-020000')).toEqual(['COMPLETE', 'result.json']);
    expect(resultJson(world, '/lincoln/upload/bak/20240101-020000').status).toBe('rejected');
    const sent = mails(world);
    expect(sent).toHaveLength(1);
    expect(sent[0].subject).toContain('rejected');
    expect(sent[0].text).toContain('has a COMPLETE file but no CSV files');
    expect((await world.cli(['run', '--tenant', 'lincoln', '--now'])).stdout).toContain('nothing to do');
    expect(mails(world)).toHaveLength(1);
  });

  it('a reused epoch name is applied and reported with a note: two mails in all', async () => {
    world.addTenant('lincoln', { notify: { to: [IT], when: 'always' } });
    world.putEpoch('lincoln', '20240101-020000', { 'users.csv': csv(HEADER, user(1)) });
    expect((await world.cli(['run', '--tenant', 'lincoln', '--now'])).code).toBe(0);
    world.putEpoch('lincoln', '20240101-020000', { 'users.csv': csv(HEADER, user(2)) });
    const r = await world.cli(['run', '--tenant', 'lincoln', '--now']);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toContain('reused the name 20240101-020000 of an earlier upload');
    expect(dbUsers(world, 'lincoln').map((u) => u.external_id)).toEqual(['u1', 'u2']);
    const sent = mails(world);
    expect(sent).toHaveLength(2);
    expect(sent[0].text).not.toContain('reused the name');
    expect(sent[1].text).toContain('This upload reused the name 20240101-020000 of an earlier upload; it was processed as a new upload.');
    expect(sent[1].text).toContain('/lincoln/upload/bak/20240101-020000-2');
    expect((await world.cli(['run', '--tenant', 'lincoln', '--now'])).stdout).toContain('nothing to do');
    expect(mails(world)).toHaveLength(2);
  });

  it('an upload that never completed is reported once after staleAfterHours, and never again', async () => {
    world.addTenant('lincoln', { staleAfterHours: 1, notify: { to: [IT], when: 'failures' } });
    world.putEpoch('lincoln', '20240101-020000', { 'users.csv': csv(HEADER, user(1)) }, false);
    age(world, '/lincoln/upload/20240101-020000/users.csv', 2);
    age(world, '/lincoln/upload/20240101-020000', 2);
    const r = await world.cli(['run', '--tenant', 'lincoln', '--now']);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toContain('lincoln: upload 20240101-020000 never completed (no COMPLETE file); it is left alone');
    let sent = mails(world);
    expect(sent).toHaveLength(1);
    expect(sent[0].text).toContain('upload 20240101-020000 never got its COMPLETE file');
    expect(JSON.parse((await world.cli(['status', '--tenant', 'lincoln', '--json'])).stdout)[0].stale).toEqual([{ epoch: '20240101-020000', firstSeen: expect.any(String) }]);

    const again = await world.cli(['run', '--tenant', 'lincoln', '--now']);
    expect(again.stdout).not.toContain('never completed');
    sent = mails(world);
    expect(sent).toHaveLength(1);
    expect(world.exists('/lincoln/upload/20240101-020000/users.csv')).toBe(true);
    expect(dbUsers(world, 'lincoln')).toEqual([]);
  });
});

// A mail server that refuses the report for good (5xx): tried a bounded number of times, then
// given up, and `status` (what operators read) says so. One SFTP server kind: the mail is the point.
describe.each(availableStores())('a report the mail server refuses for good, on %s', (store) => {
  let world: World;
  let smtp: TestSmtpServer;
  beforeEach(async (ctx) => {
    world = await World.start(availableSftpServerKinds()[0], `outcomes-smtp-${store}-${ctx.task.name}`, { store });
    smtp = await startTestSmtpServer();
    world.set('mail', { from: 'Provisioning <provisioning@vendor.example>', smtp: smtp.url, operators: OPERATORS, retrySeconds: 1 });
    world.addTenant('lincoln', { notify: { to: [IT], when: 'failures' } });
  });
  afterEach(async (ctx) => {
    await smtp.stop();
    await world.stop(ctx.task.result?.state === 'fail');
  });

  it('is given up after a bounded number of tries, and `provisioner status` shows it failed with the reason', async () => {
    smtp.rejectNext(1000, 550);
    world.putEpoch('lincoln', '20240101-020000', { 'users.csv': csv(HEADER, user(1), 'u2,First2,Last2,not-an-email,staff,1,1') });
    const r = await world.cli(['run', '--tenant', 'lincoln', '--now']);
    expect(r.code, r.stdout + r.stderr).toBe(1);
    // Each run --now delivers what is due; the back-off is 1 s, then 2 s.
    let status = (await world.cli(['status', '--tenant', 'lincoln'])).stdout;
    expect(status).toMatch(/mail: 1 queued since .*; last error: .*550/);
    for (let i = 0; i < 6 && !/mail: 1 failed/.test(status); i++) {
      await new Promise((res) => setTimeout(res, 2100));
      await world.cli(['run', '--tenant', 'lincoln', '--now']);
      status = (await world.cli(['status', '--tenant', 'lincoln'])).stdout;
    }
    expect(status).toMatch(/mail: 1 failed \(the mail server refused it: .*550.*\)/);
    expect(status).not.toMatch(/mail: \d+ queued/);
    expect(world.query<{ status: string; attempts: number }>('SELECT status, attempts FROM mail_queue')).toEqual([{ status: 'failed', attempts: PERMANENT_TRIES }]);
    const [json] = JSON.parse((await world.cli(['status', '--tenant', 'lincoln', '--json'])).stdout);
    expect(json.queuedMail).toMatchObject({ queued: 0, failed: 1, lastError: expect.stringContaining('550') });

    // Given up for good: later runs do not try again.
    await new Promise((res) => setTimeout(res, 2100));
    await world.cli(['run', '--tenant', 'lincoln', '--now']);
    expect(world.query<{ attempts: number }>('SELECT attempts FROM mail_queue')[0].attempts).toBe(PERMANENT_TRIES);
    expect(smtp.messages).toHaveLength(0);
  }, 60_000);
});
