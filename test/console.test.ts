// The tier-2 console in a real browser (Debian's Chromium driven by playwright-core), against a
// real daemon (`provisioner run` with http.listen), a real SFTP server and a real SMTP server:
// sign in, find a tenant, run it now and see the import appear, release a held upload, undo an
// import and see the users restored, read a user's history; on a desktop and on a phone's screen.
// Screenshots are kept in test-artifacts/console/.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { hashPassword } from '../src/import/passwords.js';
import { dbUsers, mails } from './harness/checks.js';
import { freePort, spawnDaemon, waitFor, type DaemonProcess } from './harness/daemon.js';
import { availableSftpServerKinds } from './harness/sftp-server.js';
import { startTestSmtpServer, type TestSmtpServer } from './harness/smtp-server.js';
import { availableStores } from './harness/stores.js';
import { csv, World } from './harness/world.js';

const HEADER = 'user_id,first_name,last_name,email,role,school_id,active';
const NEVER_SOON = '0 0 1 1 *';
const CHROMIUM = process.env.PROVISIONER_TEST_CHROMIUM ?? '/usr/bin/chromium';
const SHOTS = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../test-artifacts/console');
const kind = availableSftpServerKinds()[0];
const user = (i: number) => `u${i},First${i},Last${i},u${i}@lincoln.example,staff,1,1`;
const ten = Array.from({ length: 10 }, (_, i) => user(i));

describe.skipIf(!fs.existsSync(CHROMIUM)).each(availableStores())(`console in Chromium on ${kind} sftp, %s`, (store) => {
  let browser: Browser;
  let world: World;
  let smtp: TestSmtpServer;
  let daemon: DaemonProcess | undefined;
  let base: string;
  const shot = async (page: Page, name: string) => {
    fs.mkdirSync(SHOTS, { recursive: true });
    await page.screenshot({ path: path.join(SHOTS, `${store}-${name}.png`), fullPage: true });
  };

  beforeAll(async () => {
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'] });
  });
  afterAll(async () => {
    await browser?.close();
  });
  beforeEach(async (ctx) => {
    world = await World.start(kind, `console-${store}-${ctx.task.name}`, { store });
    smtp = await startTestSmtpServer();
    const port = await freePort();
    base = `http://127.0.0.1:${port}`;
    world.set('http', { listen: `127.0.0.1:${port}`, users: { alice: { passwordHash: await hashPassword('correct horse'), role: 'operator' } } });
    world.set('mail', { from: 'Provisioning <provisioning@vendor.example>', smtp: smtp.url, operators: ['ops@vendor.example'], retrySeconds: 1 });
    world.addTenant('lincoln', { name: 'Lincoln Unified', schedule: NEVER_SOON, options: { fullSync: true, maxDeactivatePercent: 10 }, notify: { to: ['it@lincoln.example'], when: 'failures' } });
    world.addTenant('roosevelt', { name: 'Roosevelt Academy', schedule: NEVER_SOON, notify: { to: ['it@roosevelt.example'], when: 'failures' } });
  });
  afterEach(async (ctx) => {
    // (vitest runs afterEach before onTestFailed: the daemon's log is printed here.)
    if (ctx.task.result?.state === 'fail' && daemon) process.stderr.write(`\n--- daemon output ---\n${daemon.output()}\n`);
    await daemon?.stop('SIGKILL');
    daemon = undefined;
    await smtp.stop();
    await world.stop(ctx.task.result?.state === 'fail');
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
    daemon = spawnDaemon(world);
    await waitFor('the daemon to serve', async () => (await fetch(`${base}/readyz`).catch(() => null))?.status === 200, 20_000, 100);

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
    expect(await page.textContent('main')).toContain('9 user(s) missing from it would be deactivated');
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
});
