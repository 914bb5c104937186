// `sftp.keepOpenSeconds`: the daemon keeps a tenant's SFTP connection open between its runs and
// logs in once instead of once per run. Counted on the server (the embedded one counts the
// connections it accepts and holds): runs reuse one login, a connection the server dropped
// meanwhile is replaced without failing the run, an unused one is closed in time, and stopping
// the daemon closes what it kept. Without the setting every run logs in and out, as before.
import { afterEach, describe, expect, it } from 'vitest';
import { openApp } from '../src/app.js';
import { resolveSftp } from '../src/config.js';
import { Daemon } from '../src/service/daemon.js';
import { SftpSession } from '../src/sftp/client.js';
import { KeptSessions } from '../src/sftp/kept-sessions.js';
import { waitFor } from './harness/daemon.js';
import { csv, World } from './harness/world.js';

const YEARLY = '0 0 1 1 *'; // runs come from triggers only

describe('SFTP connections kept open between runs', () => {
  let world: World | undefined;
  afterEach(async () => {
    await world?.stop(false);
    world = undefined;
  });

  async function withDaemon(keepOpenSeconds: number | undefined, fn: (run: (epoch: string) => Promise<string>, daemon: Daemon) => Promise<void>): Promise<void> {
    world = await World.start('embedded', `kept-${keepOpenSeconds ?? 'off'}`);
    const w = world;
    w.addTenant('lincoln', { schedule: YEARLY, notify: { when: 'never' }, sftp: { ...tenantSftp(w), ...(keepOpenSeconds === undefined ? {} : { keepOpenSeconds }) } });
    const app = await openApp(w.configPath, { logLevel: 'silent' });
    const daemon = new Daemon(app, { triggerPollMs: 50 });
    try {
      await daemon.start();
      let n = 0;
      const run = async (epoch: string): Promise<string> => {
        w.putEpoch('lincoln', epoch, { 'users.csv': csv('user_id,first_name,last_name,email', `u${++n},Ada,Lovelace,ada${n}@lincoln.example`) });
        const id = await app.store.triggers.request('lincoln', 'test@here');
        await waitFor(`the run of ${epoch}`, async () => (await app.store.triggers.get(id))?.finishedAt, 15_000, 20);
        expect(w.exists(`/lincoln/upload/bak/${epoch}/users.csv`)).toBe(true);
        return (await app.store.triggers.get(id))!.status!;
      };
      await fn(run, daemon);
    } finally {
      await daemon.stop();
      await app.close();
    }
  }

  const tenantSftp = (w: World) => {
    const s = w.server;
    return { host: s.host, port: s.port, username: s.username, password: s.password, hostKey: s.hostKeyFingerprint, timeoutSeconds: 15 };
  };
  const connections = () => world!.server.connections!();

  it('logs in once for several runs, replaces a connection the server dropped, and closes it when the daemon stops', async () => {
    await withDaemon(300, async (run, daemon) => {
      expect(await run('20240101-020000')).toBe('ok');
      expect(connections()).toEqual({ accepted: 1, open: 1 }); // kept after the run
      expect(await run('20240102-020000')).toBe('ok');
      expect(await run('20240103-020000')).toBe('ok');
      expect(connections()).toEqual({ accepted: 1, open: 1 });

      // The server drops idle clients: the next run finds the kept connection gone, logs in
      // again and succeeds; the run is not failed for it.
      world!.server.disconnectAll!();
      await waitFor('the drop', async () => connections().open === 0, 5000, 20);
      expect(await run('20240104-020000')).toBe('ok');
      expect(connections()).toEqual({ accepted: 2, open: 1 });

      await daemon.stop();
      await waitFor('the kept connection to close', async () => connections().open === 0, 5000, 20);
    });
  });

  it('without keepOpenSeconds, logs in and out for every run', async () => {
    await withDaemon(undefined, async (run) => {
      expect(await run('20240101-020000')).toBe('ok');
      await waitFor('the connection to close', async () => connections().open === 0, 5000, 20);
      expect(await run('20240102-020000')).toBe('ok');
      await waitFor('the connection to close', async () => connections().open === 0, 5000, 20);
      expect(connections().accepted).toBe(2);
    });
  });

  it('closes a kept connection nobody took within keepOpenSeconds', async () => {
    await withDaemon(1, async (run) => {
      expect(await run('20240101-020000')).toBe('ok');
      expect(connections().open).toBe(1);
      await waitFor('the kept connection to close', async () => connections().open === 0, 5000, 50);
      expect(await run('20240102-020000')).toBe('ok');
      expect(connections().accepted).toBe(2);
    });
  });

  it('never hands a kept connection to settings other than the ones it was opened with', async () => {
    world = await World.start('embedded', 'kept-settings');
    world.addTenant('lincoln', { schedule: YEARLY });
    const app = await openApp(world.configPath, { logLevel: 'silent' });
    const kept = new KeptSessions();
    try {
      const settings = resolveSftp(app.config.tenants[0]);
      const session = await SftpSession.connect(settings, 'lincoln');
      await kept.keep('lincoln', settings, session, 60);
      expect(kept.size).toBe(1);
      // Other settings (another user name) never get it: the kept connection is closed instead.
      expect(await kept.take('lincoln', { ...settings, username: 'someone-else' })).toBeNull();
      expect(session.isOpen).toBe(false);
      expect(kept.size).toBe(0);
      await waitFor('the connection to close', async () => connections().open === 0, 5000, 20);

      // The same settings get the same connection, once.
      const again = await SftpSession.connect(settings, 'lincoln');
      await kept.keep('lincoln', settings, again, 60);
      expect(await kept.take('lincoln', settings)).toBe(again);
      expect(await kept.take('lincoln', settings)).toBeNull();
      await again.close();

      // A closed keep keeps nothing: what it is given is closed at once.
      await kept.close();
      const late = await SftpSession.connect(settings, 'lincoln');
      await kept.keep('lincoln', settings, late, 60);
      expect(late.isOpen).toBe(false);
      expect(kept.size).toBe(0);
    } finally {
      await kept.close();
      await app.close();
    }
  });
});
