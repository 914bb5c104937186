/**
 * A PostgreSQL server of a test's own that asks for passwords (scram-sha-256), for what the
 * shared test server (trust auth) cannot show: that a password from the URL, `${ENV}`, PGPASSWORD
 * or a password file is really sent, and a wrong one refused. Debian's binaries, run as the
 * `postgres` system user (initdb refuses root); null where that is not possible.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

export interface PasswordPg {
  host: string;
  port: number;
  /** The superuser and its password. */
  user: string;
  password: string;
  stop(): void;
}

function binDir(): string | null {
  try {
    const dirs = fs.readdirSync('/usr/lib/postgresql').map((v) => `/usr/lib/postgresql/${v}/bin`).filter((d) => fs.existsSync(`${d}/initdb`));
    return dirs.sort((a, b) => a.localeCompare(b, undefined, { numeric: true })).pop() ?? null;
  } catch {
    return null;
  }
}

export function canStartPasswordPg(): boolean {
  if (process.getuid?.() !== 0 || !binDir()) return false;
  try {
    execFileSync('id', ['postgres'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise((r) => server.close(r));
  return port;
}

export async function startPasswordPg(): Promise<PasswordPg> {
  const bin = binDir();
  if (!bin) throw new Error('no PostgreSQL binaries under /usr/lib/postgresql');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'provisioner-pg-'));
  const data = path.join(dir, 'data');
  const password = 'the superuser secret';
  fs.writeFileSync(path.join(dir, 'pw'), `${password}\n`);
  execFileSync('chown', ['-R', 'postgres', dir]);
  fs.chmodSync(dir, 0o755);
  const port = await freePort();
  const asPostgres = (cmd: string, args: string[]) => execFileSync('runuser', ['-u', 'postgres', '--', cmd, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  asPostgres(`${bin}/initdb`, ['-D', data, '-A', 'scram-sha-256', '-U', 'postgres', `--pwfile=${path.join(dir, 'pw')}`, '--no-sync']);
  asPostgres(`${bin}/pg_ctl`, ['-D', data, '-o', `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off`, '-l', path.join(dir, 'log'), '-w', 'start']);
  return {
    host: '127.0.0.1',
    port,
    user: 'postgres',
    password,
    stop() {
      try {
        asPostgres(`${bin}/pg_ctl`, ['-D', data, '-m', 'immediate', 'stop']);
      } finally {
        fs.rmSync(dir, { recursive: true, force: true });
      }
    },
  };
}
