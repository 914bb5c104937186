// The PostgreSQL store as an operator meets it, through the real CLI: the password from the URL's
// `${ENV}` (any character), from PGPASSWORD or from a password file, a wrong one refused with a
// clear message (on a server of the test's own that asks for passwords: the shared test server
// trusts everyone); workers migrating an empty database at once (under the advisory lock: each
// migration applied once, every process fine); doctor on a schema older than this provisioner
// (reported, not migrated) and on a server older than it needs.
import fs from 'node:fs';
import path from 'node:path';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { LATEST } from '../src/store/postgres/migrations.js';
import { serverVersionProblem } from '../src/store/postgres/store.js';
import { canStartPasswordPg, startPasswordPg, type PasswordPg } from './harness/pg-server.js';
import { availableStores, execute } from './harness/stores.js';
import { World } from './harness/world.js';

/** The environment of a machine that has only what the test gives it of PostgreSQL's variables. */
function envWith(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env = { ...process.env };
  for (const k of Object.keys(env)) if (k.startsWith('PG')) delete env[k];
  return { ...env, ...extra };
}

describe.skipIf(!canStartPasswordPg())('a PostgreSQL server that asks for a password', () => {
  let server: PasswordPg;
  let world: World;
  // Everything a URL or a password file must escape.
  const password = 'p@ss:w/rd%1 #x\\y';

  beforeAll(async () => {
    server = await startPasswordPg();
    const admin = new pg.Client({ host: server.host, port: server.port, user: server.user, password: server.password, database: 'postgres' });
    await admin.connect();
    try {
      await admin.query(`CREATE ROLE provisioner LOGIN PASSWORD '${password.replace(/'/g, "''")}'`);
      await admin.query('CREATE DATABASE provisioning OWNER provisioner');
    } finally {
      await admin.end();
    }
    world = await World.start('embedded', 'pg-password');
    world.addTenant('lincoln');
  }, 120_000);
  afterAll(async () => {
    await world?.stop(false);
    server?.stop();
  });

  const url = (userinfo: string) => `postgres://${userinfo}@${server.host}:${server.port}/provisioning`;

  it('takes the password from ${ENV} in the URL, whatever characters it holds', async () => {
    world.set('database', url('provisioner:${PROVISIONER_DB_PASSWORD}'));
    const ok = await world.cliWithEnv(['status'], envWith({ PROVISIONER_DB_PASSWORD: password }));
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.stdout).toContain('lincoln');
    const unset = await world.cliWithEnv(['status'], envWith({}));
    expect(unset.code).toBe(2);
    expect(unset.stderr).toContain('database: environment variable PROVISIONER_DB_PASSWORD is not set');
  });

  it('takes it from PGPASSWORD, or a password file, when the URL has none; a wrong one is refused and doctor says what to check', async () => {
    world.set('database', url('provisioner'));
    const ok = await world.cliWithEnv(['status'], envWith({ PGPASSWORD: password }));
    expect(ok.code, ok.stderr).toBe(0);

    const passfile = path.join(world.dir, 'pgpass');
    fs.writeFileSync(passfile, `${server.host}:${server.port}:provisioning:provisioner:${password.replace(/[\\:]/g, '\\$&')}\n`, { mode: 0o600 });
    const fromFile = await world.cliWithEnv(['status'], envWith({ PGPASSFILE: passfile }));
    expect(fromFile.code, fromFile.stderr).toBe(0);

    const wrong = await world.cliWithEnv(['status'], envWith({ PGPASSWORD: 'not it' }));
    expect(wrong.code).not.toBe(0);
    expect(wrong.stderr).toMatch(/cannot connect to the database postgres:\/\/provisioner@127\.0\.0\.1:\d+\/provisioning: password authentication failed for user "provisioner"/);
    const doctor = await world.cliWithEnv(['doctor'], envWith({ PGPASSWORD: 'not it' }));
    expect(doctor.code).toBe(1);
    expect(doctor.stdout).toMatch(/✗ database\s+.*password authentication failed/);
    expect(doctor.stdout).toContain('fix: check that the server is up, the URL (user, host, port, database) and the password');
    expect(doctor.stdout + doctor.stderr).not.toContain(password);
  });
});

describe.skipIf(!availableStores().includes('postgres'))('PostgreSQL schema and server', () => {
  let world: World;
  afterEach(async (ctx) => {
    await world.stop(ctx.task.result?.state === 'fail');
  });

  it('four workers starting on an empty database at once all start; each migration is applied once', async () => {
    world = await World.start('embedded', 'pg-migrate-at-once', { store: 'postgres' });
    world.addTenant('lincoln');
    const results = await Promise.all([1, 2, 3, 4].map(() => world.cli(['status'])));
    for (const r of results) expect(r.code, r.stderr).toBe(0);
    expect(world.query<{ version: number; n: number }>('SELECT version, count(*) AS n FROM schema_migrations GROUP BY version ORDER BY version').map((r) => [r.version, Number(r.n)])).toEqual(
      Array.from({ length: LATEST }, (_, i) => [i + 1, 1]),
    );
  });

  it('doctor reports a schema older than this provisioner without upgrading it, and the server version', async () => {
    world = await World.start('embedded', 'pg-doctor-schema', { store: 'postgres' });
    world.addTenant('lincoln');
    const current = await world.cli(['doctor']);
    expect(current.stdout).toMatch(/✓ database\s+postgres:\/\/.* \(PostgreSQL \d+(\.\d+)?.*\) is (new and writable|writable, schema version)/);
    expect((await world.cli(['status'])).code).toBe(0); // made and migrated
    await execute(world.database, 'DELETE FROM schema_migrations WHERE version = ?', LATEST);

    const r = await world.cli(['doctor']);
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(new RegExp(`✗ database\\s+postgres://.* \\(PostgreSQL .*\\) is at schema version ${LATEST - 1}; this provisioner needs ${LATEST}`));
    expect(r.stdout).toContain('fix: it is upgraded the next time `provisioner run` (or any command) opens it; stop older workers first');
    expect(world.query('SELECT version FROM schema_migrations WHERE version = ?', LATEST)).toEqual([]);
  });

  it('doctor refuses a server older than PostgreSQL 12, saying which version it needs', () => {
    expect(serverVersionProblem(110_005, '11.5')).toEqual({
      problem: 'the server is PostgreSQL 11.5; provisioner needs PostgreSQL 12 or newer',
      fix: expect.stringContaining('upgrade the server to PostgreSQL 12 or newer'),
    });
    expect(serverVersionProblem(120_000, '12.0')).toBeNull();
    expect(serverVersionProblem(150_020, '15.20 (Debian 15.20-0+deb12u1)')).toBeNull();
  });
});
