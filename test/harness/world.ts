/**
 * An end-to-end world: a real SFTP server, a temp folder with config.yaml and the SQLite file,
 * and helpers to upload what a district would upload and to run the real CLI (dist/src/cli.js,
 * built by `npm test`) as a separate process. On a failed test the folder is kept under
 * test-artifacts/ and its path printed, so the database, config and server files can be read.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { toYaml } from '../../src/yaml.js';
import { fileURLToPath } from 'node:url';
import { availableSftpServerKinds, startTestSftpServer, type SftpServerKind, type TestSftpServer, type TestSftpServerOptions } from './sftp-server.js';
import { availableStores, createPgDatabase, querySync, type StoreKind } from './stores.js';

/**
 * What the end-to-end suites run on: every SFTP server with SQLite, and PostgreSQL with the first
 * SFTP server (OpenSSH where it runs): the store does not change how SFTP is spoken.
 */
export function worlds(): [string, SftpServerKind, StoreKind][] {
  const kinds = availableSftpServerKinds();
  return availableStores().flatMap((store): [string, SftpServerKind, StoreKind][] =>
    store === 'sqlite' ? kinds.map((k): [string, SftpServerKind, StoreKind] => [`${k} sftp, sqlite`, k, store]) : [[`${kinds[0]} sftp, postgres`, kinds[0], store]],
  );
}

const here = path.dirname(fileURLToPath(import.meta.url));
export const CLI = path.resolve(here, '../../dist/src/cli.js');

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface TenantSpec {
  /** Folder on the SFTP server under which this tenant's paths live (several tenants share a server). */
  home?: string;
  [key: string]: unknown;
}

export class World {
  readonly dir: string;
  readonly configPath: string;
  /** The SQLite file (with the sqlite store). */
  readonly dbPath: string;
  /** What the config's `database` says: the SQLite file, or the PostgreSQL URL. */
  readonly database: string;
  private config: Record<string, unknown>;

  private constructor(
    readonly server: TestSftpServer,
    readonly name: string,
    readonly store: StoreKind,
    pg: { url: string; drop(): Promise<void> } | null,
  ) {
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'provisioner-e2e-'));
    this.configPath = path.join(this.dir, 'config.yaml');
    this.dbPath = path.join(this.dir, 'data', 'provisioner.db');
    this.database = pg ? pg.url : this.dbPath;
    this.dropDatabase = pg?.drop;
    this.config = {
      database: pg ? pg.url : './data/provisioner.db',
      leaseSeconds: 30,
      log: { level: 'info', format: 'json' },
      mail: { from: 'Provisioning <provisioning@vendor.example>', outbox: './data/outbox' },
      tenants: {},
    };
  }

  private readonly dropDatabase: (() => Promise<void>) | undefined;

  /** A world on an SFTP server of `kind`, with its own database in `opts.store` (default sqlite). */
  static async start(kind: SftpServerKind, name: string, opts: TestSftpServerOptions & { store?: StoreKind } = {}): Promise<World> {
    const store = opts.store ?? 'sqlite';
    const pg = store === 'postgres' ? await createPgDatabase() : null;
    return new World(await startTestSftpServer(kind, opts), name, store, pg);
  }

  /**
   * Hands a remote path (and everything under its top folder, e.g. `/lincoln`) to the SFTP user
   * when that is not root (an unprivileged OpenSSH login); a no-op otherwise.
   */
  own(remotePath: string): void {
    const owner = this.server.owner;
    if (!owner) return;
    const top = remotePath.split('/').filter(Boolean)[0];
    if (!top) return;
    const chown = (p: string) => {
      fs.lchownSync(p, owner.uid, owner.gid);
      if (fs.lstatSync(p).isDirectory()) for (const e of fs.readdirSync(p)) chown(path.join(p, e));
    };
    chown(this.remote(`/${top}`));
  }

  /** Adds a tenant whose SFTP account is the test server, paths under `/<id>` unless given. */
  addTenant(id: string, spec: Record<string, unknown> = {}): void {
    const home = `/${id}`;
    const s = this.server;
    const tenant = {
      name: `${id} district`,
      settleSeconds: 0,
      sftp: {
        host: s.host,
        port: s.port,
        username: s.username,
        ...(s.password ? { password: s.password } : { privateKey: s.privateKeyPath }),
        hostKey: s.hostKeyFingerprint,
        timeoutSeconds: 15,
      },
      paths: { upload: `${home}/upload`, bak: `${home}/upload/bak`, tmp: `${home}/tmp` },
      files: { 'users.csv': 'samegoal-users' },
      notify: { to: [`it@${id}.example`], replyTo: 'support@vendor.example', when: 'always' },
      ...spec,
    };
    (this.config.tenants as Record<string, unknown>)[id] = tenant;
    fs.mkdirSync(this.remote(`${home}/upload`), { recursive: true });
    this.own(home);
    this.writeConfig();
  }

  /** Sets a top-level config key; `undefined` removes it (its default applies). */
  set(key: string, value: unknown): void {
    if (value === undefined) delete this.config[key];
    else this.config[key] = value;
    this.writeConfig();
  }

  tenantConfig(id: string): Record<string, unknown> {
    return (this.config.tenants as Record<string, Record<string, unknown>>)[id];
  }

  writeConfig(): void {
    fs.writeFileSync(this.configPath, toYaml(this.config));
  }

  /** Local path of a remote path. */
  remote(p: string): string {
    return path.join(this.server.root, p);
  }

  /** Writes an epoch the way a district's nightly job does: the CSVs, then COMPLETE. */
  putEpoch(tenant: string, epoch: string, files: Record<string, string | Buffer>, complete = true): string {
    const dir = this.remote(`/${tenant}/upload/${epoch}`);
    fs.mkdirSync(dir, { recursive: true });
    for (const [name, content] of Object.entries(files)) fs.writeFileSync(path.join(dir, name), content);
    if (complete) fs.writeFileSync(path.join(dir, 'COMPLETE'), '');
    this.own(`/${tenant}`);
    return dir;
  }

  putFile(remotePath: string, content: string | Buffer): void {
    fs.mkdirSync(path.dirname(this.remote(remotePath)), { recursive: true });
    fs.writeFileSync(this.remote(remotePath), content);
    this.own(remotePath);
  }

  exists(remotePath: string): boolean {
    return fs.existsSync(this.remote(remotePath));
  }

  read(remotePath: string): string {
    return fs.readFileSync(this.remote(remotePath), 'utf8');
  }

  /** Runs the CLI with this world's config; resolves with its exit code and output. */
  cli(args: string[], env: Record<string, string> = {}): Promise<CliResult> {
    return this.cliWithEnv(args, { ...process.env, ...env });
  }

  /** The CLI with exactly this environment. */
  cliWithEnv(args: string[], env: NodeJS.ProcessEnv): Promise<CliResult> {
    return new Promise((resolve, reject) => {
      const child = spawn(process.execPath, [CLI, '--config', this.configPath, ...args], {
        cwd: this.dir,
        env,
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d) => (stdout += d));
      child.stderr.on('data', (d) => (stderr += d));
      child.on('error', reject);
      child.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
    });
  }

  spawnCli(args: string[], env: Record<string, string> = {}) {
    return spawn(process.execPath, [CLI, '--config', this.configPath, ...args], { cwd: this.dir, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  }

  async usersJson(tenant: string): Promise<Array<Record<string, unknown>>> {
    const r = await this.cli(['users', '--tenant', tenant, '--json']);
    if (r.code !== 0) throw new Error(`users failed (${r.code}): ${r.stderr}`);
    return JSON.parse(r.stdout) as Array<Record<string, unknown>>;
  }

  /** Rows from the world's database, in SQLite's shapes whatever the store (harness/stores.ts). */
  query<T = Record<string, unknown>>(sql: string, ...params: unknown[]): T[] {
    return querySync<T>(this.database, sql, ...params);
  }

  /** Stops the server; keeps everything under test-artifacts/ when the test failed. */
  async stop(failed: boolean): Promise<void> {
    if (failed) {
      const keep = path.resolve(here, '../../test-artifacts', `${this.name.replace(/[^a-z0-9-]+/gi, '_')}-${Date.now()}`);
      fs.mkdirSync(keep, { recursive: true });
      fs.cpSync(this.dir, path.join(keep, 'world'), { recursive: true });
      fs.cpSync(this.server.root, path.join(keep, 'sftp-root'), { recursive: true });
      process.stderr.write(`\n[test artifacts kept in ${keep}]\n`);
    }
    await this.server.stop();
    if (failed && this.dropDatabase) process.stderr.write(`[test database kept: ${this.database}]\n`);
    else await this.dropDatabase?.();
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

export function csv(...lines: string[]): string {
  return lines.join('\n') + '\n';
}
