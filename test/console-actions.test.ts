// The console's actions on held uploads and imports in a real browser, on both stores: discarding
// a held upload; releasing one, whose confirmation says whom it would deactivate now (read again
// from the held file, not only the estimate made when it was held); an undo refused because a
// later import changed the same users, and then forced; row errors a page at a time with their
// reasons; result.json; the user lookup from the tenants page. Screenshots in test-artifacts/console/.
import fs from 'node:fs';
import type { Browser, Page } from 'playwright-core';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { dbUsers, mails } from './harness/checks.js';
import { hasChromium, launchChromium, shot as shotOf, startConsoleWorld, type ConsoleWorld } from './harness/console.js';
import { waitFor } from './harness/daemon.js';
import { availableSftpServerKinds } from './harness/sftp-server.js';
import { availableStores } from './harness/stores.js';
import { csv, type World } from './harness/world.js';

const HEADER = 'user_id,first_name,last_name,email,role,school_id,active';
const NEVER_SOON = '0 0 1 1 *';
const kind = availableSftpServerKinds()[0];
const pad = (i: number) => String(i).padStart(2, '0');

describe.skipIf(!hasChromium).each(availableStores())(`console actions in Chromium on ${kind} sftp, %s`, (store) => {
  let browser: Browser;
  let cw: ConsoleWorld;
  let world: World;
  let base: string;
  const shot = (page: Page, name: string) => shotOf(page, store, name);
  const main = (page: Page) => page.textContent('main').then((t) => t ?? '');
  const importId = (tenant: string, epoch: string) => Number(world.query<{ id: number }>('SELECT id FROM imports WHERE tenant = ? AND epoch = ? ORDER BY id', tenant, epoch)[0].id);

  beforeAll(async () => {
    browser = await launchChromium();
  });
  afterAll(async () => {
    await browser?.close();
  });
  beforeEach(async (ctx) => {
    cw = await startConsoleWorld(store, `console-actions-${store}-${ctx.task.name}`);
    ({ world, base } = cw);
    world.addTenant('lincoln', { name: 'Lincoln Unified', schedule: NEVER_SOON, options: { fullSync: true, maxDeactivatePercent: 10 }, notify: { to: ['it@lincoln.example'], when: 'failures' } });
    world.addTenant('roosevelt', { name: 'Roosevelt Academy', schedule: NEVER_SOON, notify: { to: ['it@roosevelt.example'], when: 'failures' } });
  });
  afterEach(async (ctx) => {
    await cw.stop(ctx.task.result?.state === 'fail');
  });

  it('discards one held upload; releasing another says whom it would deactivate now, the first 20 by id', async () => {
    const roster = Array.from({ length: 32 }, (_, i) => `u${pad(i)},First${i},Last${i},u${i}@lincoln.example,staff,1,1`);
    const run = async (epoch: string, rows: string[], code: number) => {
      world.putEpoch('lincoln', epoch, { 'users.csv': csv(HEADER, ...rows) });
      expect((await world.cli(['run', '--tenant', 'lincoln', '--now'])).code).toBe(code);
    };
    await run('20240101-020000', roster.slice(0, 30), 0);
    await run('20240102-020000', roster, 0); // two more: u30, u31
    await run('20240103-020000', roster.slice(0, 1), 1); // held: it would deactivate 31
    await run('20240104-020000', roster.slice(0, 2), 1); // held: it would deactivate 30
    // The two newest users are undone meanwhile (an undo is no newer upload: the holds stand).
    expect((await world.cli(['revert', '--tenant', 'lincoln', String(importId('lincoln', '20240102-020000'))])).code).toBe(0);
    const active = () => dbUsers(world, 'lincoln').filter((u) => Number(u.active)).map((u) => u.external_id);
    expect(active()).toHaveLength(30);
    await cw.startDaemon();
    const { context, page } = await cw.signedIn(browser);

    // Discarding 20240104-020000: filed away in bak, nobody deactivated, the district told.
    await page.goto(`${base}/tenants/lincoln`);
    const held = page.locator('.attention .held');
    expect(await held.count()).toBe(2);
    await held.filter({ hasText: '20240104-020000' }).locator('a:has-text("Discard…")').click();
    expect(await main(page)).toContain('Discarding files users.csv of 20240104-020000 away in bak without applying anything.');
    await page.click('button:has-text("Discard")');
    await expect.poll(() => page.textContent('#outcome')).toContain('discarded');
    expect(await main(page)).toContain('The upload is now at /lincoln/upload/bak/20240104-020000 on the SFTP host.');
    await shot(page, '11-discarded');
    expect(world.exists('/lincoln/upload/bak/20240104-020000/users.csv')).toBe(true);
    expect(active()).toHaveLength(30);

    // Releasing 20240103-020000: 29 of the 30 active users now (31 when it was held), the first 20 listed.
    await page.goto(`${base}/tenants/lincoln`);
    expect(await page.locator('.attention .held').count()).toBe(1);
    await page.click('a:has-text("Release…")');
    expect(await main(page)).toContain('29 of the 30 active user(s) are missing from it and would be deactivated now (31 when it was held).');
    expect(await page.textContent('h2')).toBe('Users it would deactivate: the first 20 of 29, by id');
    expect(await page.locator('#affected tbody tr td:first-child').allTextContents()).toEqual(Array.from({ length: 20 }, (_, i) => `u${pad(i + 1)}`));
    expect(await page.locator('#affected tbody tr').nth(4).textContent()).toContain('First5 Last5');
    expect(await main(page)).toContain('…and 9 more.');
    await shot(page, '12-release-confirm-sample');
    await page.click('button:has-text("Release and apply")');
    await expect.poll(() => page.textContent('#outcome')).toContain('applied');
    expect(active()).toEqual(['u00']);

    // Both are in the audit trail, and the district heard of both.
    await page.goto(`${base}/tenants/lincoln`);
    const audit = (await page.textContent('#audit')) ?? '';
    expect(audit).toContain('discard 20240104-020000');
    expect(audit).toContain('release 20240103-020000');
    await waitFor('the reports', () => mails(world, 'lincoln').some((m) => /discarded/.test(m.subject)) && mails(world, 'lincoln').some((m) => /20240103-020000/.test(m.subject) && /applied/.test(m.subject)), 10_000);
    await context.close();
  });

  it('an undo refused because a later import changed the same user, then forced; row errors a page at a time; result.json; the user lookup', async () => {
    const bad = Array.from({ length: 55 }, (_, i) => `b${pad(i)},Bad${i},Row${i},not-an-email-${i},staff,1,1`);
    world.putEpoch('roosevelt', '20240101-020000', { 'users.csv': csv(HEADER, 'r1,Ruth,Bader,ruth@roosevelt.example,staff,1,1', 'r2,Rosa,Parks,rosa@roosevelt.example,staff,1,1', ...bad) });
    expect((await world.cli(['run', '--tenant', 'roosevelt', '--now'])).code).toBe(1);
    world.putEpoch('roosevelt', '20240102-020000', { 'users.csv': csv(HEADER, 'r1,Ruth,Bader,ruth.b@roosevelt.example,staff,1,1') });
    expect((await world.cli(['run', '--tenant', 'roosevelt', '--now'])).code).toBe(0);
    // The later import changes r1's e-mail again, and her last name.
    world.putEpoch('roosevelt', '20240103-020000', { 'users.csv': csv(HEADER, 'r1,Ruth,Bader Ginsburg,ruth.bg@roosevelt.example,staff,1,1') });
    expect((await world.cli(['run', '--tenant', 'roosevelt', '--now'])).code).toBe(0);
    const [first, second, third] = ['20240101-020000', '20240102-020000', '20240103-020000'].map((e) => importId('roosevelt', e));
    await cw.startDaemon();
    const { context, page } = await cw.signedIn(browser);

    // Looking a user up from the tenants page: the tenant typed, then the user.
    await page.fill('#lookup-tenant', 'roosevelt');
    await page.fill('#lookup', 'ruth');
    await page.click('form[action="/users"] button');
    await page.waitForURL(`${base}/tenants/roosevelt/users?q=ruth`);
    expect(await page.locator('#users tbody tr').allTextContents()).toEqual([expect.stringContaining('ruth.bg@roosevelt.example')]);
    await shot(page, '13-users-lookup');

    // Row errors, 50 a page, each with its reason.
    await page.goto(`${base}/tenants/roosevelt/imports/${first}`);
    const errorRows = page.locator('main table:not(.counts) tbody tr');
    expect(await errorRows.count()).toBe(50);
    expect(await errorRows.first().locator('td').allTextContents()).toEqual(['4', 'email', 'not-an-email-0', 'is not a valid e-mail address']);
    expect(new Set(await page.locator('main table:not(.counts) tbody tr td:nth-child(4)').allTextContents())).toEqual(new Set(['is not a valid e-mail address']));
    await page.click('a:has-text("next ›")');
    await page.waitForURL(`${base}/tenants/roosevelt/imports/${first}?page=2`);
    expect((await errorRows.locator('td:first-child').allTextContents()).map(Number)).toEqual([54, 55, 56, 57, 58]);
    expect(await page.locator('a:has-text("‹ previous")').count()).toBe(1);
    expect(await page.locator('a:has-text("next ›")').count()).toBe(0);

    // result.json, as the worker wrote it beside the upload.
    const download = await Promise.all([page.waitForEvent('download'), page.click('a:has-text("result.json")')]).then(([d]) => d);
    expect(download.suggestedFilename()).toBe('roosevelt-20240101-020000-result.json');
    const result = JSON.parse(fs.readFileSync((await download.path())!, 'utf8'));
    expect(result).toMatchObject({
      tenant: 'roosevelt', epoch: '20240101-020000', status: 'applied with errors',
      files: [{ file: 'users.csv', status: 'applied with errors', rows: 57, created: 2, failed: 55, errorsCsv: 'errors.csv' }],
    });

    // Undoing the second import: refused, naming the user and the later import.
    await page.goto(`${base}/tenants/roosevelt/imports/${second}`);
    await page.click('a:has-text("Undo…")');
    await page.click('button:has-text("Undo this import")');
    await expect.poll(() => page.textContent('#outcome')).toContain(`Import ${second} was not undone: later imports changed 1 of the same users (first: r1 in import ${third})`);
    expect(await page.textContent('#outcome')).not.toContain('--force'); // the form below is how, here
    expect(await page.textContent('.result .badge')).toBe('refused');
    expect(await main(page)).toContain(`r1 was changed since by import ${third}.`);
    expect(await main(page)).toContain("overwriting what the later imports set there");
    await shot(page, '14-undo-refused');
    // Forced: the e-mail both changed gets its value from before; the last name only the later one changed stays.
    await page.click('button:has-text("Undo anyway")');
    await expect.poll(() => page.textContent('#outcome')).toContain(`Import ${second} was undone as import`);
    await shot(page, '15-undo-forced');
    await page.goto(`${base}/tenants/roosevelt/users/r1`);
    expect(await page.textContent('#user-email')).toBe('ruth@roosevelt.example');
    expect(await main(page)).toContain('Ruth Bader Ginsburg');
    const audit = world.query<{ action: string; result: string }>('SELECT action, result FROM audit ORDER BY id');
    expect(audit).toEqual([{ action: 'revert', result: 'refused' }, { action: 'revert', result: 'reverted' }].map((a) => expect.objectContaining(a)));
    await context.close();
  });
});
