// `npm run demo -- --console` as a new user runs it (the built dist/src/demo.js, in a folder of
// its own): the demo's import, then the daemon with the console: the printed address answers
// /healthz, /readyz and /metrics with the demo's numbers, the printed account signs in and sees
// the demo tenant, and Ctrl-C (SIGINT) stops it cleanly.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { waitFor } from './harness/daemon.js';
import { HttpClient, parsePrometheus, sample } from './harness/http.js';

const DEMO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../dist/src/demo.js');

describe('npm run demo -- --console', () => {
  let dir: string | undefined;
  let child: ChildProcess | undefined;
  afterEach(() => {
    if (child && child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('runs the demo, then serves the console, /healthz and /metrics at the address it prints, until Ctrl-C', async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'provisioner-demo-'));
    const demo = spawn(process.execPath, [DEMO, '--console'], { cwd: dir, env: { ...process.env, NO_COLOR: '1' }, stdio: ['ignore', 'pipe', 'pipe'] });
    child = demo;
    let out = '';
    demo.stdout!.on('data', (d) => (out += d));
    demo.stderr!.on('data', (d) => (out += d));
    const exited = new Promise<number | string>((resolve) => demo.on('close', (code, signal) => resolve(code ?? signal ?? -1)));
    try {
      const printed = await waitFor('the console address', () => /console {2}(http:\/\/127\.0\.0\.1:\d+)\/ {3}sign in as demo \/ (\S+)/.exec(out) ?? (demo.exitCode !== null ? Promise.reject(new Error('the demo exited')) : null), 40_000, 100);
      const [, base, password] = printed;
      expect(out).toContain('(exit code 1: 1 means some rows were rejected, as intended in this demo)');
      expect(out).toContain(`metrics  curl -s ${base}/metrics`);
      const anon = new HttpClient(base);
      await waitFor('the daemon to be ready', async () => (await anon.get('/readyz').catch(() => null))?.status === 200, 15_000, 100);

      const health = await anon.get('/healthz');
      expect(health.status).toBe(200);
      expect(health.text).toBe('ok\n');
      const { samples } = parsePrometheus((await anon.get('/metrics')).text);
      expect(sample(samples, 'provisioner_imports_total', { status: 'applied with errors' })).toBe(1);
      expect(sample(samples, 'provisioner_rows_total', { action: 'failed' })).toBe(3);
      expect(sample(samples, 'provisioner_tenant_last_success_timestamp_seconds', { tenant: 'lincoln-usd' })).toBeGreaterThan(0);
      expect(sample(samples, 'provisioner_tenants_overdue')).toBe(0);

      // The printed account signs in, and the demo tenant is there with its import.
      const demoUser = new HttpClient(base);
      expect((await demoUser.login('demo', password)).status).toBe(303);
      const home = await demoUser.get('/');
      expect(home.status).toBe(200);
      expect(home.text).toContain('lincoln-usd');
      expect(home.text).toContain('Lincoln Unified School District');
      expect((await demoUser.get('/tenants/lincoln-usd')).text).toContain('applied with errors');

      demo.kill('SIGINT');
      expect(await exited).toBe(0);
    } catch (err) {
      process.stderr.write(`\n--- demo output ---\n${out}\n`);
      throw err;
    }
  });
});
