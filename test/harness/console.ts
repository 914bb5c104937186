/**
 * The console in a real browser, for the browser tests: Debian's Chromium driven by playwright-core
 * (with the flags CI uses), a world whose config serves HTTP with an operator `alice` and sends
 * mail to a test SMTP server, the daemon (`provisioner run`) serving it, signing in, and
 * screenshots kept in test-artifacts/console/ for people to look at.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { hashPassword } from '../../src/import/passwords.js';
import { freePort, spawnDaemon, waitFor, type DaemonProcess } from './daemon.js';
import { availableSftpServerKinds } from './sftp-server.js';
import { startTestSmtpServer, type TestSmtpServer } from './smtp-server.js';
import type { StoreKind } from './stores.js';
import { World } from './world.js';

export const CHROMIUM = process.env.PROVISIONER_TEST_CHROMIUM ?? '/usr/bin/chromium';
export const hasChromium = fs.existsSync(CHROMIUM);
export const SHOTS = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../test-artifacts/console');
export const OPERATOR = { name: 'alice', password: 'correct horse' };

export function launchChromium(): Promise<Browser> {
  return chromium.launch({ executablePath: CHROMIUM, args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'] });
}

/** A full-page screenshot, `<store>-<name>.png`. */
export async function shot(page: Page, store: StoreKind, name: string): Promise<void> {
  fs.mkdirSync(SHOTS, { recursive: true });
  await page.screenshot({ path: path.join(SHOTS, `${store}-${name}.png`), fullPage: true });
}

export interface ConsoleWorld {
  world: World;
  smtp: TestSmtpServer;
  /** http://127.0.0.1:<port> */
  base: string;
  daemon: DaemonProcess | undefined;
  /** Starts the daemon and waits until it is ready. */
  startDaemon(): Promise<DaemonProcess>;
  /** A desktop-sized page, signed in as the operator. */
  signedIn(browser: Browser): Promise<{ context: BrowserContext; page: Page }>;
  /** Stops the daemon (printing its output when the test failed), the SMTP server and the world. */
  stop(failed: boolean): Promise<void>;
}

export async function startConsoleWorld(store: StoreKind, name: string): Promise<ConsoleWorld> {
  const world = await World.start(availableSftpServerKinds()[0], name, { store });
  const smtp = await startTestSmtpServer();
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  world.set('http', { listen: `127.0.0.1:${port}`, users: { [OPERATOR.name]: { passwordHash: await hashPassword(OPERATOR.password), role: 'operator' } } });
  world.set('mail', { from: 'Provisioning <provisioning@vendor.example>', smtp: smtp.url, operators: ['ops@vendor.example'], retrySeconds: 1 });
  const cw: ConsoleWorld = {
    world,
    smtp,
    base,
    daemon: undefined,
    async startDaemon() {
      const daemon = spawnDaemon(world);
      cw.daemon = daemon;
      await waitFor('the daemon to serve', async () => (await fetch(`${base}/readyz`).catch(() => null))?.status === 200, 20_000, 100);
      return daemon;
    },
    async signedIn(browser) {
      const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
      const page = await context.newPage();
      page.setDefaultTimeout(15_000);
      await page.goto(`${base}/login`);
      await page.fill('#username', OPERATOR.name);
      await page.fill('#password', OPERATOR.password);
      await page.click('button[type=submit]');
      await page.waitForURL(`${base}/`);
      return { context, page };
    },
    async stop(failed) {
      // (vitest runs afterEach before onTestFailed: the daemon's log is printed here.)
      if (failed && cw.daemon) process.stderr.write(`\n--- daemon output ---\n${cw.daemon.output()}\n`);
      await cw.daemon?.stop('SIGKILL');
      await smtp.stop();
      await world.stop(failed);
    },
  };
  return cw;
}
