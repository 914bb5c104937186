// `npm run demo`: the main job end to end on embedded defaults. Starts an SFTP server on
// 127.0.0.1 (the pure-JS one shipped with provisioner), plays a district's IT job uploading
// an epoch with a few bad rows, runs the worker against it exactly as `run --now` does, and
// shows what happened and where to look. Everything lands in ./data/demo (recreated each time).
// `npm run demo -- --console` then keeps the SFTP server up and runs the daemon with its web
// console and metrics, with the district's corrected file waiting for tier-2's "Run now".
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { parseYaml, toYaml } from './yaml.js';
import { runNow } from './commands/run-now.js';
import { SqliteStore } from './store/sqlite/store.js';
import { usersCommand } from './commands/users.js';
import { startEmbeddedSftpServer } from './sftp/embedded-server.js';
import { epochName } from './worker/uploads.js';
import { hashPassword } from './import/passwords.js';

const DEMO_DIR = path.resolve('data/demo');
const TENANT = 'lincoln-usd';

const SAMPLE_USERS = [
  'user_id,first_name,last_name,email,role,school_id,active',
  'T1001,Ada,Lovelace,ada.lovelace@lincoln.example,teacher,100,1',
  'T1002,Alan,Turing,alan.turing@lincoln.example,teacher,100,1',
  'T1003,Grace,Hopper,grace.hopper@lincoln,admin,200,1',
  'T1004,Katherine,"Smith, Jr.",katherine.smith@lincoln.example,staff,200,yes',
  'T1005,Edsger,Dijkstra,edsger.dijkstra@lincoln.example,principal,300,1',
  'T1002,Alan,Turing,alan.t@lincoln.example,teacher,100,1',
  'T1006,Barbara,Liskov,barbara.liskov@lincoln.example,case_manager,300,0',
].join('\r\n') + '\r\n';

async function main(): Promise<number> {
  fs.rmSync(DEMO_DIR, { recursive: true, force: true });
  const root = path.join(DEMO_DIR, 'sftp-root');
  fs.mkdirSync(path.join(root, 'upload'), { recursive: true });
  const password = 'demo-password';
  const server = await startEmbeddedSftpServer({ root, username: 'lincoln', password });
  try {
    const configPath = path.join(DEMO_DIR, 'config.yaml');
    fs.writeFileSync(
      configPath,
      toYaml({
        database: './provisioner.db',
        log: { level: 'warn', format: 'pretty' },
        mail: { from: 'Account Provisioning <provisioning@vendor.example>', outbox: './outbox' },
        tenants: {
          [TENANT]: {
            name: 'Lincoln Unified School District',
            sftp: { host: server.host, port: server.port, username: 'lincoln', password: '${DEMO_SFTP_PASSWORD}', hostKey: server.hostKeyFingerprint },
            paths: { upload: '/upload', bak: '/upload/bak', tmp: '/tmp', log: '/log/import.log' },
            files: { 'users.csv': 'samegoal-users' },
            options: { actor: 'ftp-user@lincoln.example' },
            notify: { to: ['it@lincoln.example'], replyTo: 'support@vendor.example', when: 'always' },
          },
        },
      }),
    );
    process.env.DEMO_SFTP_PASSWORD = password;

    const epoch = epochName(new Date());
    const epochDir = path.join(root, 'upload', epoch);
    fs.mkdirSync(epochDir);
    fs.writeFileSync(path.join(epochDir, 'users.csv'), SAMPLE_USERS);
    fs.writeFileSync(path.join(epochDir, 'COMPLETE'), '');
    say(`SFTP server (embedded) on sftp://lincoln@${server.host}:${server.port}, host key ${server.hostKeyFingerprint}`);
    say(`The district uploaded /upload/${epoch}/users.csv (7 rows, 3 of them wrong) and /upload/${epoch}/COMPLETE.\n`);
    say(`$ provisioner --config ${rel(configPath)} run --tenant ${TENANT} --now`);
    const code = await runNow({ config: configPath, tenant: [TENANT] });
    say(`\n(exit code ${code}: 1 means some rows were rejected, as intended in this demo)\n`);

    say(`$ provisioner --config ${rel(configPath)} users --tenant ${TENANT}`);
    await usersCommand({ config: configPath, tenant: TENANT });

    const bak = path.join(root, 'upload', 'bak', epoch);
    const outbox = path.join(DEMO_DIR, 'outbox');
    const eml = fs.existsSync(outbox) ? fs.readdirSync(outbox).filter((f) => f.endsWith('.eml')) : [];
    say('\nWhere to look:');
    say(`  database          ${rel(path.join(DEMO_DIR, 'provisioner.db'))}   (sqlite3 it: SELECT * FROM imports; SELECT * FROM user_changes;)`);
    say(`  processed upload  ${rel(bak)}/  (${fs.existsSync(bak) ? fs.readdirSync(bak).sort().join(', ') : 'missing!'})`);
    say(`  errors.csv        ${rel(path.join(bak, 'errors.csv'))}  (fix these rows and upload the file again as it is)`);
    say(`  remote log        ${rel(path.join(root, 'log', 'import.log'))}`);
    for (const f of eml) say(`  report e-mail     ${rel(path.join(outbox, f))}`);
    const html = await writeReportHtml(path.join(DEMO_DIR, 'provisioner.db'), path.join(DEMO_DIR, 'report.html'));
    if (html) say(`  report as HTML    ${rel(html)}  (open it in a browser)`);
    if (fs.existsSync(path.join(bak, 'errors.csv'))) {
      say('\nerrors.csv:');
      process.stdout.write(fs.readFileSync(path.join(bak, 'errors.csv'), 'utf8').replace(/\r\n/g, '\n').replace(/^(?=.)/gm, '  '));
    }
    const ok = code === 1 && fs.existsSync(bak) && eml.length === 1;
    if (process.argv.includes('--console')) return ok ? await serveConsole(configPath, root) : 1;
    say(`\nTry: node dist/src/cli.js --config ${rel(configPath)} status`);
    say('Or:  npm run demo -- --console   (the daemon with its web console and metrics)');
    return ok ? 0 : 1;
  } finally {
    await server.stop();
  }
}

/**
 * The daemon with the console, until Ctrl-C: an operator account with a fresh password, the
 * tenant's schedule out of the way, and the district's corrected rows waiting as users_auto.csv.
 */
async function serveConsole(configPath: string, root: string): Promise<number> {
  const port = await freePort(8080);
  const password = crypto.randomBytes(9).toString('base64url');
  const config = parseYaml(fs.readFileSync(configPath, 'utf8')) as { http?: unknown; tenants: Record<string, Record<string, unknown>> };
  config.http = { listen: `127.0.0.1:${port}`, users: { demo: { passwordHash: await hashPassword(password), role: 'operator' } } };
  Object.assign(config.tenants[TENANT], { schedule: '0 3 * * *', settleSeconds: 0, expectEveryHours: 26 });
  fs.writeFileSync(configPath, toYaml(config));
  fs.writeFileSync(path.join(root, 'upload', 'users_auto.csv'), FIXED_USERS);
  say(`\n$ provisioner --config ${rel(configPath)} run`);
  say(`  console  http://127.0.0.1:${port}/   sign in as demo / ${password}`);
  say(`  metrics  curl -s http://127.0.0.1:${port}/metrics | grep '^provisioner_'`);
  say(`  health   curl -s http://127.0.0.1:${port}/readyz`);
  say(`The district has fixed its two wrong rows (the duplicate it dropped) and uploaded them as /upload/users_auto.csv: open ${TENANT}`);
  say('in the console and press "Run now" (its schedule is 03:00). Ctrl-C stops the daemon.\n');
  const { runDaemon } = await import('./daemon.js');
  return runDaemon({ config: configPath });
}

const FIXED_USERS = [
  'user_id,first_name,last_name,email,role,school_id,active',
  'T1003,Grace,Hopper,grace.hopper@lincoln.example,admin,200,1',
  'T1005,Edsger,Dijkstra,edsger.dijkstra@lincoln.example,staff,300,1',
].join('\r\n') + '\r\n';

/** `preferred` when it is free on 127.0.0.1, else any free port. */
function freePort(preferred: number): Promise<number> {
  const listen = (port: number) =>
    new Promise<number>((resolve, reject) => {
      const server = net.createServer().once('error', reject);
      server.listen(port, '127.0.0.1', () => {
        const { port: bound } = server.address() as net.AddressInfo;
        server.close(() => resolve(bound));
      });
    });
  return listen(preferred).catch(() => listen(0));
}

/** The queued report's HTML part as a file, so it can be opened in a browser as it is. */
async function writeReportHtml(database: string, file: string): Promise<string | null> {
  const store = new SqliteStore(database);
  try {
    const [mail] = await store.mail.list(TENANT, 1);
    if (!mail) return null;
    fs.writeFileSync(file, mail.html);
    return file;
  } finally {
    await store.close();
  }
}

function say(line: string): void {
  process.stdout.write(line + '\n');
}

function rel(p: string): string {
  return path.relative(process.cwd(), p) || '.';
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`demo failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exitCode = 1;
  },
);
