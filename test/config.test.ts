import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { CHILD_LOAD_BYTES, loadConfig, parseConfig, parseConfigHere, resolveDigestKey, resolveSftp, type Config } from '../src/config.js';
import { parseConfigInChild, readAnswer, writeAnswer, type ChildAnswer } from '../src/config-child.js';
import { ConfigError } from '../src/errors.js';
import { packageRoot } from '../src/paths.js';

const example = path.join(packageRoot(), 'config.example.yaml');

function configErrorOf(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (err) {
    if (err instanceof ConfigError) return err;
    throw err;
  }
  throw new Error('expected a ConfigError');
}
const problemsOf = (fn: () => unknown): string[] => configErrorOf(fn).problems;
const messageOf = (fn: () => unknown): string => configErrorOf(fn).message;

describe('configuration', () => {
  it('config.example.yaml validates and documents every tenant key', () => {
    const env = { LINCOLN_SFTP_PASSWORD: 'x', JEFFERSON_SFTP_PASSWORD: 'x', ACME_SFTP_PASSWORD: 'x', UNIPARKING_SFTP_PASSWORD: 'x' };
    const config = loadConfig(example, env);
    expect(config.tenants.map((t) => t.id)).toEqual(['lincoln-usd', 'jefferson-sd', 'acme-learning', 'uni-parking']);
    const lincoln = config.tenants.find((t) => t.id === 'lincoln-usd')!;
    expect(resolveSftp(lincoln, env).password).toBe('x');
    expect(lincoln.paths).toEqual({ upload: '/upload', bak: '/upload/bak', tmp: '/tmp', failed: '/upload/failed', log: undefined });
    expect(lincoln.options.actor).toBe('ftp-user@lincoln.example');
    const text = fs.readFileSync(example, 'utf8');
    const schema = JSON.parse(fs.readFileSync(path.join(packageRoot(), 'schemas/config.schema.json'), 'utf8'));
    const keys = [
      ...Object.keys(schema.properties),
      ...Object.keys(schema.definitions.tenant.properties),
      ...Object.keys(schema.definitions.tenant.properties.sftp.properties),
      ...Object.keys(schema.definitions.options.properties),
      ...Object.keys(schema.definitions.tenantDefaults.properties),
      ...Object.keys(schema.properties.mail.properties),
      ...Object.keys(schema.definitions.tenant.properties.notify.properties),
      ...Object.keys(schema.properties.http.properties),
      ...Object.keys(schema.properties.http.properties.users.additionalProperties.properties),
    ];
    for (const key of keys) expect(text, `config.example.yaml should mention ${key}`).toMatch(new RegExp(`\\b${key}:`));
  });

  it('fills ${NAME} from the environment; a tenant\'s SFTP secret only when that tenant is connected to', () => {
    const yaml = fs.readFileSync(example, 'utf8').replace('database: ./data/provisioner.db', 'database: ${DB_FILE}');
    const problems = problemsOf(() => parseConfig(yaml, 'config.yaml', {}));
    expect(problems).toContain('database: environment variable DB_FILE is not set');
    expect(problems.join('\n')).not.toContain('SFTP_PASSWORD');
    // status, users, trigger and another tenant's run load the file without any tenant's secret.
    const config = parseConfig(yaml, 'config.yaml', { DB_FILE: './x.db' });
    const lincoln = config.tenants.find((t) => t.id === 'lincoln-usd')!;
    expect(() => resolveSftp(lincoln, {})).toThrow('tenants.lincoln-usd.sftp.password: environment variable LINCOLN_SFTP_PASSWORD is not set');
    expect(resolveSftp(lincoln, { LINCOLN_SFTP_PASSWORD: 's3cret' }).password).toBe('s3cret');
  });

  it('loads without the digest key in the environment (an operator\'s machine), fills it in when a file is imported, and percent-encodes values in a PostgreSQL URL', () => {
    const yaml = [
      'database: postgres://provisioner:${PGPASSWORD}@db.vendor.example/provisioning',
      'passwordDigestKey: ${PROVISIONER_DIGEST_KEY}',
      'mail: { from: "p@vendor.example" }',
      'tenants:',
      '  lincoln: { sftp: { host: sftp.example, username: l, password: "${L_PW}" }, files: { users.csv: samegoal-users }, notify: { when: never } }',
    ].join('\n');
    const config = parseConfig(yaml, 'config.yaml', { PGPASSWORD: 'p@ss:w/rd%' });
    expect(config.database).toBe('postgres://provisioner:p%40ss%3Aw%2Frd%25@db.vendor.example/provisioning');
    expect(() => resolveDigestKey(config.passwordDigest.key!, {})).toThrow('passwordDigestKey: environment variable PROVISIONER_DIGEST_KEY is not set');
    expect(() => resolveDigestKey(config.passwordDigest.key!, { PROVISIONER_DIGEST_KEY: 'short' })).toThrow('passwordDigestKey: must be at least 16 characters');
    expect(resolveDigestKey(config.passwordDigest.key!, { PROVISIONER_DIGEST_KEY: 'a key of sixteen or more' })).toBe('a key of sixteen or more');
    expect(problemsOf(() => parseConfig(yaml.replace('${PROVISIONER_DIGEST_KEY}', 'too short'), 'config.yaml', { PGPASSWORD: 'x' }))).toEqual([
      'passwordDigestKey: must be at least 16 characters',
    ]);
  });

  it('takes a tenant without a host key (or with the README\'s placeholder) as not pinned yet', () => {
    const yaml = (hostKey: string) => `
database: ./x.db
tenants:
  fresh:
    sftp: { host: h, username: u, password: p${hostKey} }
    files: { users.csv: samegoal-users }
    notify: { when: never }
`;
    expect(parseConfig(yaml(''), 'c.yaml', {}).tenants[0].sftp.hostKey).toBeUndefined();
    expect(parseConfig(yaml(', hostKey: "SHA256:…"'), 'c.yaml', {}).tenants[0].sftp.hostKey).toBeUndefined();
    expect(parseConfig(yaml(`, hostKey: "SHA256:${'a'.repeat(43)}"`), 'c.yaml', {}).tenants[0].sftp.hostKey).toBe(`SHA256:${'a'.repeat(43)}`);
  });

  it('takes the number of threads that read one large file, default none set (the cores)', () => {
    const tenant = `
tenants:
  ok:
    sftp: { host: h, username: u, password: p, hostKey: "SHA256:${'a'.repeat(43)}" }
    files: { users.csv: samegoal-users }
    notify: { when: never }
`;
    expect(parseConfig(`database: ./x.db\n${tenant}`, 'c.yaml', {}).limits).toEqual({ maxRecordBytes: 1 << 20, parseThreads: null });
    expect(parseConfig(`database: ./x.db\nlimits: { parseThreads: 1 }\n${tenant}`, 'c.yaml', {}).limits.parseThreads).toBe(1);
    expect(problemsOf(() => parseConfig(`database: ./x.db\nlimits: { parseThreads: 0 }\n${tenant}`, 'c.yaml', {}))).toEqual([expect.stringMatching(/^limits\.parseThreads: must be >= 1/)]);
  });

  it('reports every schema problem at once as path: message', () => {
    const yaml = `
database: ./x.db
colour: blue
tenants:
  Bad_Id:
    sftp: { host: h, username: u, password: p, hostKey: "SHA256:${'a'.repeat(43)}" }
    files: { users.csv: samegoal-users }
  ok:
    sftp: { host: h, username: u, password: p, hostKey: nope }
    files: { users.csv: samegoal-users }
    loose: sometimes
`;
    const problems = problemsOf(() => parseConfig(yaml, 'c.yaml', {}));
    expect(problems).toEqual(
      expect.arrayContaining([
        '(root): unknown key "colour"',
        expect.stringMatching(/^tenants: key "Bad_Id" is not allowed/),
        expect.stringMatching(/^tenants\.ok\.sftp\.hostKey: must be a SHA256 fingerprint/),
        'tenants.ok.loose: must be one of auto, all, keep',
      ]),
    );
  });

  it('loads a large configuration (thousands of tenants) in a child process, with the same result and the same messages', () => {
    const tenant = (i: number) =>
      `  district-${i}:\n    name: "District ${i} — Zoë's"\n    schedule: "0 2 * * *"\n    sftp: { host: sftp${i}.example.org, username: d${i}, password: "\${D${i}_PW}" }\n    files: { users.csv: samegoal-users }\n    options: { maxDeactivatePercent: 12.5, overwriteEmail: false }\n    notify: { to: [it@d${i}.example.org] }\n`;
    const tenants = Array.from({ length: 2500 }, (_, i) => tenant(i)).join('');
    const yaml = `database: ./x.db\nlog: { level: "\${LEVEL}" }\ntenants:\n${tenants}`;
    expect(Buffer.byteLength(yaml)).toBeGreaterThan(CHILD_LOAD_BYTES);
    // The child sees the environment it is given, not this process's.
    const env = { LEVEL: 'debug' };
    expect(parseConfigInChild(yaml, 'big.yaml', env)).toEqual({ config: JSON.parse(JSON.stringify(parseConfigHere(yaml, 'big.yaml', env))) });
    const config = parseConfig(yaml, 'big.yaml', env);
    expect(config.log.level).toBe('debug');
    expect(config.tenants).toHaveLength(2500);
    expect(config.tenants[2499]).toMatchObject({ id: 'district-2499', name: "District 2499 — Zoë's", schedule: '0 2 * * *' });
    expect(config.tenants[7].options.maxDeactivatePercent).toBe(12.5);
    expect(config.tenants[7].sftp.password).toBe('${D7_PW}'); // a secret is filled in only when used

    // A mistake deep in a large file: the parser's own message, with its place, either way.
    const broken = yaml.replace('  district-2000:\n', '  district-2000:\n   bad indent: [\n');
    const here = messageOf(() => parseConfigHere(broken, 'big.yaml', env));
    expect(here).toMatch(/^big\.yaml is not valid YAML: .*\(1400\d:\d+\)/s); // line and column
    expect(messageOf(() => parseConfig(broken, 'big.yaml', env))).toBe(here);

    // Problems found by the checks come back as the same list.
    const wrong = yaml.replace('district-1999:\n    name:', 'district-1999:\n    loose: sometimes\n    name:').replace('"\${LEVEL}"', '"\${NOT_SET_ANYWHERE}"');
    const problems = problemsOf(() => parseConfig(wrong, 'big.yaml', env));
    expect(problems).toEqual([
      'log.level: environment variable NOT_SET_ANYWHERE is not set',
      'log.level: must be one of trace, debug, info, warn, error, fatal, silent',
      'tenants.district-1999.loose: must be one of auto, all, keep',
    ]);
    expect(problems).toEqual(problemsOf(() => parseConfigHere(wrong, 'big.yaml', env)));

    // From a file, the child reads the file itself: the same configuration and the same messages,
    // and no scratch file is left behind.
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'provisioner-config-test-'));
    const scratch = () => fs.readdirSync(os.tmpdir()).filter((n) => n.startsWith('provisioner-config-') && !n.startsWith('provisioner-config-test-'));
    const before = scratch();
    try {
      const file = path.join(dir, 'big.yaml');
      fs.writeFileSync(file, yaml);
      const loaded = loadConfig(file, env);
      expect(JSON.parse(JSON.stringify(loaded))).toEqual(JSON.parse(JSON.stringify(parseConfigHere(yaml, file, env))));
      // Settings alike are one frozen object; settings that differ are each tenant's own.
      expect(loaded.tenants[1].options).toBe(loaded.tenants[2].options);
      expect(Object.isFrozen(loaded.tenants[1].options.siteMap)).toBe(true);
      expect(loaded.tenants[1].notify).not.toBe(loaded.tenants[2].notify);
      expect(loaded.tenants[2].notify.to).toEqual(['it@d2.example.org']);
      fs.writeFileSync(file, broken);
      expect(messageOf(() => loadConfig(file, env))).toBe(messageOf(() => parseConfigHere(broken, file, env)));
      fs.writeFileSync(file, wrong);
      expect(problemsOf(() => loadConfig(file, env))).toEqual(problems);
      expect(scratch()).toEqual(before);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('writes the child\'s answer as the JSON of the whole, a tenant at a time in chunks', () => {
    const written = (answer: ChildAnswer) => {
      const chunks: string[] = [];
      writeAnswer((c) => chunks.push(c), answer);
      return chunks;
    };
    const yaml = `database: ./x.db\ntenants:\n${Array.from({ length: 300 }, (_, i) => `  d-${i}:\n    sftp: { host: h${i}.example.org, username: "u\\n${i}", password: p }\n    files: { users.csv: samegoal-users }\n    notify: { when: never }\n`).join('')}`;
    const big: ChildAnswer = { config: parseConfigHere(yaml, 'c.yaml', {}) };
    const chunks = written(big);
    expect(chunks.length).toBeGreaterThan(1); // not one string of the whole
    const read = readAnswer(chunks.join(''));
    expect(read).toEqual(JSON.parse(JSON.stringify(big)));
    // The blocks the tenants have alike are written once and read back as one frozen object.
    expect(chunks.join('').split('samegoal-users')).toHaveLength(2);
    const tenants = (read as { config: Config }).config.tenants;
    expect(tenants[299].files).toBe(tenants[0].files);
    expect(tenants[299].options).toBe(tenants[0].options);
    expect(Object.isFrozen(tenants[0].options.siteMap)).toBe(true);
    expect(tenants[299].sftp).not.toBe(tenants[0].sftp);
    expect(tenants[299].sftp.username).toBe('u\n299');
    const one: ChildAnswer = { config: parseConfigHere(yaml.split('  d-1:')[0], 'c.yaml', {}) };
    expect(written(one)).toHaveLength(1);
    expect(readAnswer(written(one).join(''))).toEqual(JSON.parse(JSON.stringify(one)));
    for (const answer of [{ summary: 'c.yaml has 1 problem(s):', problems: ['x: y'] }, { failed: 'out of memory' }] as ChildAnswer[]) {
      expect(JSON.parse(written(answer).join(''))).toEqual(answer);
      expect(readAnswer(written(answer).join(''))).toEqual(answer);
    }
  });

  it('reads the http section: listen, accounts, the proxy, and what is wrong with them', () => {
    const base = `
database: ./x.db
tenants:
  a:
    expectEveryHours: 26
    sftp: { host: h, username: u, password: p }
    files: { users.csv: samegoal-users }
    notify: { when: never }
`;
    const none = parseConfig(base, 'c.yaml', {});
    expect(none.http).toBeUndefined();
    expect(none.tenants[0].expectEveryHours).toBe(26);
    const hash = '$scrypt$ln=14,r=8,p=1$c2FsdA$aGFzaA';
    const config = parseConfig(
      `${base}http:\n  listen: "127.0.0.1:8080"\n  users: { alice: { passwordHash: "${hash}", role: operator } }\n  proxyHeader: X-Forwarded-User\n  trustedProxies: [10.0.0.5]\n`,
      'c.yaml',
      {},
    );
    expect(config.http).toEqual({
      listen: { host: '127.0.0.1', port: 8080 },
      users: { alice: { passwordHash: hash, role: 'operator' } },
      proxyHeader: 'x-forwarded-user',
      proxyRole: 'viewer',
      trustedProxies: ['10.0.0.5'],
      sessionHours: 8,
    });
    expect(parseConfig(`${base}http: { listen: "[::1]:9090" }\n`, 'c.yaml', {}).http?.listen).toEqual({ host: '::1', port: 9090 });
    const problems = problemsOf(() =>
      parseConfig(`${base}http:\n  listen: "8080"\n  users: { bob: { passwordHash: secret, role: admin } }\n  proxyHeader: X-User\n`, 'c.yaml', {}),
    );
    expect(problems).toEqual(
      expect.arrayContaining([
        'http.listen: must match ^(\\[[0-9a-fA-F:.]+\\]|[^:\\s]+):[0-9]{1,5}$',
        'http.users.bob.passwordHash: must match ^\\$scrypt\\$',
        'http.users.bob.role: must be one of viewer, operator',
      ]),
    );
    const semantic = problemsOf(() => parseConfig(`${base}http:\n  listen: "0.0.0.0:99999"\n  proxyHeader: X-User\n  trustedProxies: [proxy.example]\n`, 'c.yaml', {}));
    expect(semantic).toEqual([
      'http.listen: port 99999 is not a TCP port (1-65535)',
      'http.trustedProxies[0]: "proxy.example" is not an IP address (the proxy\'s address as this machine sees it)',
    ]);
    expect(problemsOf(() => parseConfig(`${base}http:\n  listen: "0.0.0.0:8080"\n  proxyHeader: X-User\n`, 'c.yaml', {}))).toEqual([
      "http.proxyHeader: list the proxy's address in http.trustedProxies; the header is believed from nobody else",
    ]);
  });

  it('checks cron expressions, time zones, kinds and credentials', () => {
    const yaml = `
database: ./x.db
tenants:
  a:
    schedule: "61 * * * *"
    timezone: Mars/Olympus
    sftp: { host: h, username: u, hostKey: "SHA256:${'a'.repeat(43)}" }
    files: { users.csv: nope }
    notify: { to: [] }
`;
    const problems = problemsOf(() => parseConfig(yaml, 'c.yaml', {}));
    expect(problems).toEqual(
      expect.arrayContaining([
        'tenants.a.sftp: set either password or privateKey',
        expect.stringMatching(/^tenants\.a\.files\.users\.csv: unknown file kind "nope"/),
        expect.stringMatching(/^tenants\.a\.schedule: "61 \* \* \* \*" is not a valid cron expression/),
        expect.stringMatching(/^tenants\.a\.timezone: "Mars\/Olympus" is not a known time zone/),
        'tenants.a.notify.to: give at least one address (or set notify.when: never)',
      ]),
    );
  });
});
