// The tier-2 console in a real browser (Debian's Chromium driven by playwright-core), against a
// real daemon (`provisioner run` with http.listen), a real SFTP server and a real SMTP server:
// sign in, find a tenant, run it now and see the import appear, release a held upload, undo an
// import and see the users restored, read a user's history; on a desktop and on a phone's screen.
// Screenshots are kept in test-artifacts/console/.
import fs from 'node:fs';
import type { Browser } from 'playwright-core';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { dbUsers, mails } from './harness/checks.js';
import { waitFor } from './harness/daemon.js';
import { hasChromium, launchChromium, shot as shotOf, startConsoleWorld, type ConsoleWorld } from './harness/console.js';
import { availableSftpServerKinds } from './harness/sftp-server.js';
import { availableStores } from './harness/stores.js';
import { csv, type World } from './harness/world.js';

const HEADER = 'user_id,first_name,last_name,email,role,school_id,active';
const NEVER_SOON = '0 0 1 1 *';
const kind = availableSftpServerKinds()[0];
const user = (i: number) => `u${i},First${i},Last${i},u${i}@lincoln.example,staff,1,1`;
const ten = Array.from({ length: 10 }, (_, i) => user(i));

describe.skipIf(!hasChromium).each(availableStores())(`console in Chromium on ${kind} sftp, %s`, (store) => {
  let browser: Browser;
  let cw: ConsoleWorld;
  let world: World;
  let base: string;
  const shot = (page: Parameters<typeof shotOf>[0], name: string) => shotOf(page, store, name);

  beforeAll(async () => {
    browser = await launchChromium();
  });
  afterAll(async () => {
    await browser?.close();
  });
  beforeEach(async (ctx) => {
    cw = await startConsoleWorld(store, `console-${store}-${ctx.task.name}`);
    ({ world, base } = cw);
    world.addTenant('lincoln', { name: 'Lincoln Unified', schedule: NEVER_SOON, options: { fullSync: true, maxDeactivatePercent: 10 }, notify: { to: ['it@lincoln.example'], when: 'failures' } });
    world.addTenant('roosevelt', { name: 'Roosevelt Academy', schedule: NEVER_SOON, notify: { to: ['it@roosevelt.example'], when: 'failures' } });
  });
  afterEach(async (ctx) => {
    await cw.stop(ctx.task.result?.state === 'fail');
  });

  const active = () => dbUsers(world, 'lincoln').filter((u) => Number(u.active)).map((u) => u.external_id);

  it('sign in, find a tenant, run it now, release a held upload, undo an import, read a history', async () => {
    // Lincoln: ten users applied, then an upload of one user held (it would deactivate nine).
    world.putEpoch('lincoln', '20240101-020000', { 'users.csv': csv(HEADER, ...ten) });
    expect((await world.cli(['run', '--tenant', 'lincoln', '--now'])).code).toBe(0);
    world.putEpoch('lincoln', '20240102-020000', { 'users.csv': csv(HEADER, ten[0]) });
    expect((await world.cli(['run', '--tenant', 'lincoln', '--now'])).code).toBe(1);
    // Roosevelt: an upload waiting for its next run.
    world.putEpoch('roosevelt', '20240103-020000', { 'users.csv': csv(HEADER, 'r1,Ruth,Bader,ruth@roosevelt.example,staff,1,1', 'r2,Rosa,Parks,not-an-email,staff,1,1') });
    const daemon = await cw.startDaemon();

    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    const page = await context.newPage();
    page.setDefaultTimeout(15_000);

    // Signing in.
    await page.goto(`${base}/`);
    expect(new URL(page.url()).pathname).toBe('/login');
    await shot(page, '01-login');
    await page.fill('#username', 'alice');
    await page.fill('#password', 'wrong');
    await page.click('button[type=submit]');
    await expect.poll(() => page.textContent('[role=alert]')).toContain('Wrong user name or password');
    await page.fill('#username', 'alice');
    await page.fill('#password', 'correct horse');
    await page.click('button[type=submit]');
    await page.waitForURL(`${base}/`);
    expect(await page.textContent('header')).toContain('alice');
    await shot(page, '02-tenants');

    // Finding a tenant, and running it now.
    await page.fill('#q', 'roos');
    await page.click('form[role=search] button');
    const rows = page.locator('table.tenants tbody tr');
    await expect.poll(() => rows.count()).toBe(1);
    await page.click('table.tenants a:has-text("roosevelt")');
    await page.waitForURL(`${base}/tenants/roosevelt`);
    expect(await page.textContent('#imports')).toContain('No imports yet');
    await page.click('a:has-text("Run now")');
    await page.waitForURL(`${base}/tenants/roosevelt/run`);
    await page.click('button:has-text("Run now")');
    await page.waitForURL(/\/tenants\/roosevelt\/triggers\/\d+$/);
    // The page reloads itself until the run has finished (no JavaScript).
    await expect.poll(() => page.textContent('#trigger-status'), { timeout: 20_000 }).toContain('errors');
    expect(await page.textContent('main')).toContain('20240103-020000');
    await shot(page, '03-run-now');
    await page.click('a:has-text("Back to Roosevelt Academy")');
    const importRow = page.locator('#imports tbody tr').first();
    expect(await importRow.textContent()).toContain('applied with errors');
    await page.click('#imports tbody tr >> nth=0 >> a');
    await page.waitForURL(/\/tenants\/roosevelt\/imports\/\d+$/);
    expect(await page.textContent('main')).toContain('not-an-email');
    // Each row error says why, in words (not "[object Object]").
    const rowError = page.locator('main table tbody tr', { hasText: 'not-an-email' });
    expect(await rowError.locator('td').nth(3).textContent()).toBe('is not a valid e-mail address');
    expect(await page.textContent('main')).not.toContain('[object Object]');
    expect(await page.textContent('main')).toContain('/roosevelt/upload/bak/20240103-020000');
    const download = await Promise.all([page.waitForEvent('download'), page.click('a:has-text("errors.csv")')]).then(([d]) => d);
    const errorsCsv = fs.readFileSync((await download.path())!, 'utf8');
    expect(errorsCsv).toContain('r2,Rosa,Parks,not-an-email');
    expect(errorsCsv.split('\r\n')[0]).toBe(`\ufeff${HEADER},error`);
    await shot(page, '04-import');

    // Releasing Lincoln's held upload: the page says what it would deactivate.
    await page.goto(`${base}/tenants/lincoln`);
    expect(await page.textContent('.attention')).toContain('would deactivate 9');
    await shot(page, '05-tenant-held');
    await page.click('a:has-text("Release…")');
    // What it would deactivate now, read again from the held file: how many, and who.
    expect(await page.textContent('main')).toContain('9 of the 10 active user(s) are missing from it and would be deactivated now.');
    expect(await page.locator('#affected tbody tr td:first-child').allTextContents()).toEqual(['u1', 'u2', 'u3', 'u4', 'u5', 'u6', 'u7', 'u8', 'u9']);
    expect(await page.locator('#affected tbody tr').first().textContent()).toContain('First1 Last1');
    await shot(page, '05b-release-confirm');
    await page.click('button:has-text("Release and apply")');
    await expect.poll(() => page.textContent('#outcome')).toContain('applied');
    expect(await page.textContent('main')).toContain('/lincoln/upload/bak/20240102-020000');
    await shot(page, '06-released');
    expect(active()).toEqual(['u0']);

    // Undoing the release: the nine are back.
    await page.goto(`${base}/tenants/lincoln`);
    const released = page.locator('#imports tbody tr', { hasText: '20240102-020000' }).filter({ hasText: 'applied' }).first();
    await released.locator('a:has-text("Undo…")').click();
    expect(await page.textContent('main')).toContain('gets its previous values back');
    await shot(page, '06b-undo-confirm');
    await page.click('button:has-text("Undo this import")');
    await expect.poll(() => page.textContent('#outcome')).toContain('9 user(s) got their previous values back');
    await shot(page, '07-undone');
    expect(active()).toHaveLength(10);

    // Why is u3 active again? Its history says.
    await page.goto(`${base}/tenants/lincoln`);
    await page.fill('#uq', 'Last3');
    await page.click('#uq ~ button');
    await page.click('#users a:has-text("u3")');
    expect(await page.textContent('#user-active')).toContain('yes');
    const history = await page.textContent('ol.history');
    expect(history).toContain('revert');
    expect(history).toContain('console:alice');
    expect(history).toContain('deactivate');
    await shot(page, '08-user-history');

    // Every action is in the audit trail, on the page and in status --json.
    await page.goto(`${base}/tenants/lincoln`);
    const audit = await page.textContent('#audit');
    expect(audit).toContain('release 20240102-020000');
    expect(audit).toContain('revert import');
    const status = JSON.parse((await world.cli(['status', '--tenant', 'lincoln', '--json'])).stdout)[0];
    expect(status.audit.map((a: { action: string; actor: string }) => `${a.actor} ${a.action}`)).toEqual(['console:alice revert', 'console:alice release']);
    // The district heard of the release and of the undo.
    await waitFor('the reports', () => mails(world, 'lincoln').length >= 3, 10_000);
    expect(mails(world, 'lincoln').map((m) => m.subject)).toEqual([
      expect.stringContaining('users.csv held'),
      expect.stringContaining('users.csv applied'),
      '[provisioner] Lincoln Unified: users.csv undone (20240102-020000)',
    ]);
    await context.close();

    // The same pages on a phone's screen.
    const phone = await browser.newContext({ viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true });
    const small = await phone.newPage();
    await small.goto(`${base}/login`);
    await small.fill('#username', 'alice');
    await small.fill('#password', 'correct horse');
    await small.click('button[type=submit]');
    await small.waitForURL(`${base}/`);
    await shot(small, '09-phone-tenants');
    await small.goto(`${base}/tenants/lincoln`);
    const width = await small.evaluate(() => document.documentElement.scrollWidth);
    expect(width).toBeLessThanOrEqual(390); // wide tables scroll inside their box, not the page
    await shot(small, '10-phone-tenant');
    await phone.close();
    expect(await daemon.stop('SIGTERM')).toBe(0);
  });

  it('shows an overdue feed (list and page), why uploads wait, and a configuration without its secrets', async () => {
    // Quiet Valley expects an upload every 0.36 s, and has none: once it has run, it is overdue.
    world.addTenant('quiet', { name: 'Quiet Valley', schedule: NEVER_SOON, settleSeconds: 3600, expectEveryHours: 0.0001, notify: { to: ['it@quiet.example'], when: 'failures' } });
    // A link that is never followed, and a file still settling (it changed less than an hour ago).
    world.putFile('/quiet/upload/users_auto.csv', csv(HEADER, 'q1,Quinn,Vale,quinn@quiet.example,staff,1,1'));
    fs.symlinkSync('users_auto.csv', world.remote('/quiet/upload/staff_auto.csv'));
    await world.cli(['run', '--tenant', 'quiet', '--now']);
    // Roosevelt's secrets, as written in the configuration.
    Object.assign(world.tenantConfig('roosevelt').sftp as object, { password: 'hunter2-never-shown', passphrase: 'correct-horse-never-shown' });
    world.writeConfig();
    await new Promise((r) => setTimeout(r, 500));
    await cw.startDaemon();
    const { context, page } = await cw.signedIn(browser);

    // The list counts it and says which; the overdue ones can be listed alone.
    expect(await page.textContent('.head')).toContain('1 overdue');
    const quietRow = page.locator('table.tenants tbody tr', { hasText: 'quiet' });
    expect(await quietRow.locator('td').nth(6).textContent()).toContain('overdue');
    expect(await page.locator('table.tenants tbody tr', { hasText: 'lincoln' }).locator('td').nth(6).textContent()).toBe('–');
    await page.click('a:has-text("1 overdue")');
    await page.waitForURL(`${base}/?overdue=1`);
    expect(await page.locator('table.tenants tbody tr strong').allTextContents()).toEqual(['quiet']);
    await shot(page, '16-tenants-overdue');

    // Its page: the feed overdue, and each waiting upload with its reason in words.
    await page.click('table.tenants a:has-text("quiet")');
    await page.waitForURL(`${base}/tenants/quiet`);
    const feed = (await page.locator('.card', { hasText: 'Feed' }).first().textContent()) ?? '';
    expect(feed).toContain('overdue');
    expect(feed).toContain('expected every 0.0001 hours; due by');
    const waiting = (await page.locator('.card', { hasText: 'Waiting uploads' }).textContent()) ?? '';
    expect(waiting).toContain('Set aside: /quiet/upload/staff_auto.csv — staff_auto.csv is a symbolic link; links are never followed. Upload the file or folder itself.');
    expect(waiting).toMatch(/Settling: users_auto\.csv \(changed less than 3600 s ago\); taken after \d{4}-\d\d-\d\d \d\d:\d\d UTC/);
    expect(await page.textContent('main')).not.toContain('[object Object]');
    await shot(page, '17-tenant-overdue');

    // Roosevelt's configuration, secrets hidden.
    await page.goto(`${base}/tenants/roosevelt`);
    await page.click('summary:has-text("Configuration (secrets hidden)")');
    const shown = (await page.textContent('details pre')) ?? '';
    expect(shown).toMatch(/password: \(hidden\)/);
    expect(shown).toMatch(/passphrase: \(hidden\)/);
    expect(shown).toContain('host: 127.0.0.1');
    const html = await page.content();
    for (const secret of ['hunter2-never-shown', 'correct-horse-never-shown']) expect(html).not.toContain(secret);
    await shot(page, '18-tenant-config');
    await context.close();
  });
});
