// Configuration: one YAML file, `${NAME}` filled from the environment, checked against
// schemas/config.schema.json, defaults applied, turned into one typed object. Every problem is
// collected and reported at once as `path: message`, so an operator fixes them in one go.
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import type { ErrorObject, ValidateFunction } from './ajv.js';
import cron from 'node-cron';
import { parseYaml } from './yaml.js';
import { ConfigError } from './errors.js';
import { KindRegistry } from './import/kinds.js';
import { parseConfigInChild, type ChildAnswer } from './config-child.js';
import { loadConfigValidator } from './config-validator.js';
import { expandEnv, hasEnvRef } from './config-env.js';
import { DEFAULT_OPTIONS, DEFAULTS, type Config, type ConsoleRole, type HttpConfig, type ImportOptions, type SftpSettings, type TenantConfig } from './config-types.js';

export { expandSecret, resolveDigestKey, resolveSftp } from './config-env.js';
export * from './config-types.js';

/** The config path: --config, then $PROVISIONER_CONFIG, then ./config.yaml. */
export function resolveConfigPath(flag?: string): string {
  return path.resolve(flag ?? process.env.PROVISIONER_CONFIG ?? 'config.yaml');
}

export function loadConfig(file: string, env: NodeJS.ProcessEnv = process.env): Config {
  const cannotRead = (err: unknown) =>
    new ConfigError(
      `cannot read the configuration file ${file} (${(err as NodeJS.ErrnoException).code ?? String(err)}). ` +
        `Pass --config FILE, set PROVISIONER_CONFIG, or copy config.example.yaml to config.yaml.`,
    );
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch (err) {
    throw cannotRead(err);
  }
  try {
    const bytes = fs.fstatSync(fd).size;
    // A large file goes to the child as the file itself (see CHILD_LOAD_BYTES).
    if (bytes >= CHILD_LOAD_BYTES) {
      const answer = childAnswer(() => parseConfigInChild({ fd, bytes }, file, env));
      if (answer) return answer;
    }
    let text: string;
    try {
      // (By name after a child: it read the descriptor to its end.)
      text = fs.readFileSync(bytes >= CHILD_LOAD_BYTES ? file : fd, 'utf8');
    } catch (err) {
      throw cannotRead(err);
    }
    return parseConfigHere(text, file, env);
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * From this size (about 500 tenants) a configuration is loaded in a child process. Loading makes
 * many times the text in garbage (js-yaml alone 78 MB for a 10,000-tenant, 4.5 MB file, then
 * the checks and the defaults), and V8 keeps the heap it grew for that until the process ends:
 * a daemon would carry some 100 MiB it never uses again, and a run peaked at loading. The child's
 * memory goes when it exits; the finished configuration comes back as JSON, which V8 reads
 * with next to no garbage. The child costs about 0.2 s to start.
 */
export const CHILD_LOAD_BYTES = 256 * 1024;

export function parseConfig(text: string, file: string, env: NodeJS.ProcessEnv = process.env): Config {
  if (Buffer.byteLength(text) >= CHILD_LOAD_BYTES) {
    const answer = childAnswer(() => parseConfigInChild(text, file, env));
    if (answer) return answer;
  }
  return parseConfigHere(text, file, env);
}

/**
 * The configuration the child loaded, its problems thrown as here; null where it must be loaded
 * here instead: no child could run (resources, a sandbox), or the child broke (the error, if
 * any, is told by the load here).
 */
function childAnswer(load: () => ChildAnswer): Config | null {
  let answer: ChildAnswer;
  try {
    answer = load();
  } catch {
    return null;
  }
  if ('problems' in answer) throw new ConfigError(answer.summary, answer.problems);
  if ('failed' in answer) return null;
  return answer.config;
}

/** The load itself (here, or in the child). */
export function parseConfigHere(text: string, file: string, env: NodeJS.ProcessEnv): Config {
  let raw: unknown;
  try {
    raw = parseYaml(text);
  } catch (err) {
    throw new ConfigError(`${file} is not valid YAML: ${(err as Error).message}`);
  }
  const problems: string[] = [];
  const expanded = expandEnv(raw, env, problems);
  problems.push(...schemaProblems(expanded));
  if (problems.length) throw new ConfigError(`${file} has ${problems.length} problem(s):`, problems);
  const config = normalize(expanded as RawConfig, file);
  problems.push(...semanticProblems(config));
  if (problems.length) throw new ConfigError(`${file} has ${problems.length} problem(s):`, problems);
  return config;
}

let validateSchema: ValidateFunction | undefined;

function schemaProblems(value: unknown): string[] {
  validateSchema ??= loadConfigValidator().validate;
  if (validateSchema(value)) return [];
  return (validateSchema.errors ?? []).map(formatSchemaError);
}

function formatSchemaError(err: ErrorObject): string {
  const at = err.instancePath.replace(/^\//, '').split('/').filter(Boolean).join('.') || '(root)';
  const p = err.params as Record<string, unknown>;
  switch (err.keyword) {
    case 'additionalProperties':
      return `${at}: unknown key "${String(p.additionalProperty)}"`;
    case 'required':
      return `${at}: missing required key "${String(p.missingProperty)}"`;
    case 'propertyNames':
      return `${at}: key "${String(p.propertyName)}" is not allowed (tenant ids are lower-case letters, digits and dashes)`;
    case 'enum':
      return `${at}: must be one of ${(p.allowedValues as unknown[]).join(', ')}`;
    case 'pattern':
      return at.endsWith('hostKey')
        ? `${at}: must be a SHA256 fingerprint like "SHA256:abc…" (run \`provisioner doctor --tenant ID\` to see the server's)`
        : `${at}: must match ${String(p.pattern)}`;
    default:
      return `${at}: ${err.message ?? 'is invalid'}`;
  }
}

interface RawConfig {
  database: string;
  workDir?: string;
  concurrency?: number;
  discoveryConcurrency?: number;
  leaseSeconds?: number;
  settleRecheckSeconds?: number;
  limits?: { maxRecordBytes?: number; parseThreads?: number };
  passwordDigestKey?: string;
  passwordDigestKeyFile?: string;
  log?: { level?: string; format?: 'auto' | 'pretty' | 'json' };
  mail?: { from: string; smtp?: string; outbox?: string; operators?: string[]; timeoutSeconds?: number; retrySeconds?: number };
  http?: { listen: string; users?: HttpConfig['users']; proxyHeader?: string; proxyRole?: ConsoleRole; trustedProxies?: string[]; sessionHours?: number };
  defaults?: Partial<Record<keyof typeof DEFAULTS, string | number>> & { expectEveryHours?: number };
  tenants: Record<string, RawTenant>;
}

interface RawTenant {
  name?: string;
  enabled?: boolean;
  schedule?: string;
  timezone?: string;
  settleSeconds?: number;
  staleAfterHours?: number;
  expectEveryHours?: number;
  sftp: Omit<SftpSettings, 'port' | 'timeoutSeconds'> & { port?: number; timeoutSeconds?: number };
  paths?: Partial<TenantConfig['paths']>;
  files: Record<string, string>;
  loose?: TenantConfig['loose'];
  encoding?: string;
  options?: Partial<ImportOptions>;
  notify?: Partial<TenantConfig['notify']>;
}

/** A placeholder such as the README's `"SHA256:…"` means "not pinned yet". */
const isFingerprint = (v: string | undefined): v is string => v !== undefined && /^SHA256:[A-Za-z0-9+/]{43}=?$/.test(v);

function normalize(raw: RawConfig, file: string): Config {
  const base = path.dirname(path.resolve(file));
  const rel = (p: string) => path.resolve(base, p);
  const postgres = /^postgres(ql)?:\/\//i.test(raw.database);
  const database = postgres ? raw.database : rel(raw.database);
  const localBase = postgres ? path.join(base, 'data') : path.dirname(database);
  const d = { ...DEFAULTS, ...raw.defaults } as typeof DEFAULTS;
  const tenants = Object.entries(raw.tenants).map(([id, t]): TenantConfig => {
    const upload = t.paths?.upload ?? '/upload';
    return {
      id,
      name: t.name ?? id,
      enabled: t.enabled ?? true,
      schedule: t.schedule ?? d.schedule,
      timezone: t.timezone ?? d.timezone,
      settleSeconds: t.settleSeconds ?? d.settleSeconds,
      staleAfterHours: t.staleAfterHours ?? d.staleAfterHours,
      expectEveryHours: t.expectEveryHours ?? raw.defaults?.expectEveryHours,
      sftp: {
        ...t.sftp,
        port: t.sftp.port ?? 22,
        privateKey: t.sftp.privateKey ? (t.sftp.privateKey.includes('${') ? t.sftp.privateKey : rel(t.sftp.privateKey)) : undefined,
        hostKey: isFingerprint(t.sftp.hostKey) ? t.sftp.hostKey : undefined,
        timeoutSeconds: t.sftp.timeoutSeconds ?? d.timeoutSeconds,
        keepOpenSeconds: t.sftp.keepOpenSeconds ?? d.keepOpenSeconds,
      },
      paths: {
        upload,
        bak: t.paths?.bak ?? path.posix.join(upload, 'bak'),
        tmp: t.paths?.tmp ?? '/tmp',
        failed: t.paths?.failed ?? path.posix.join(upload, 'failed'),
        log: t.paths?.log,
      },
      files: t.files,
      loose: t.loose ?? 'auto',
      encoding: t.encoding ?? 'utf-8',
      options: { ...DEFAULT_OPTIONS, ...t.options, siteMap: { ...t.options?.siteMap } },
      notify: { to: t.notify?.to ?? [], replyTo: t.notify?.replyTo, when: t.notify?.when ?? 'failures', templates: t.notify?.templates ? rel(t.notify.templates) : undefined },
    };
  });
  return {
    source: path.resolve(file),
    database,
    workDir: raw.workDir ? rel(raw.workDir) : path.join(localBase, 'work'),
    concurrency: raw.concurrency ?? 4,
    discoveryConcurrency: raw.discoveryConcurrency ?? 32,
    leaseSeconds: raw.leaseSeconds ?? 60,
    settleRecheckSeconds: raw.settleRecheckSeconds ?? 1,
    limits: { maxRecordBytes: raw.limits?.maxRecordBytes ?? 1 << 20, parseThreads: raw.limits?.parseThreads ?? null },
    passwordDigest: {
      key: raw.passwordDigestKey,
      keyFile: raw.passwordDigestKeyFile ? rel(raw.passwordDigestKeyFile) : undefined,
      defaultFile: postgres ? undefined : path.join(localBase, 'provisioner.key'),
    },
    log: { level: raw.log?.level ?? 'info', format: raw.log?.format ?? 'auto' },
    mail: {
      from: raw.mail?.from ?? 'provisioner <provisioner@localhost>',
      smtp: raw.mail?.smtp,
      outbox: raw.mail?.outbox ? rel(raw.mail.outbox) : path.join(localBase, 'outbox'),
      operators: raw.mail?.operators ?? [],
      timeoutSeconds: raw.mail?.timeoutSeconds ?? 30,
      retrySeconds: raw.mail?.retrySeconds ?? 30,
    },
    http: raw.http ? httpConfig(raw.http) : undefined,
    tenants,
  };
}

function httpConfig(raw: NonNullable<RawConfig['http']>): HttpConfig {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:\s]+)):(\d{1,5})$/.exec(raw.listen)!; // the schema's pattern
  return {
    listen: { host: m[1] ?? m[2], port: Number(m[3]) },
    users: raw.users ?? {},
    proxyHeader: raw.proxyHeader?.toLowerCase(),
    proxyRole: raw.proxyRole ?? 'viewer',
    trustedProxies: raw.trustedProxies ?? [],
    sessionHours: raw.sessionHours ?? 8,
  };
}

/** Checks a JSON Schema cannot express: credentials, key files, kinds, cron, time zones. */
function semanticProblems(config: Config): string[] {
  const problems: string[] = [];
  const digestKey = config.passwordDigest.key;
  if (digestKey !== undefined && !hasEnvRef(digestKey) && digestKey.length < 16) problems.push('passwordDigestKey: must be at least 16 characters');
  const kinds = new KindRegistry();
  // Thousands of tenants share a few schedules, zones, encodings and keys: each distinct value is
  // checked once (a time zone check builds an ICU formatter: 10,000 of them were most of start-up).
  const verdicts = new Map<string, boolean>();
  const valid = (what: string, value: string, test: () => boolean): boolean => {
    const key = `${what}\u0000${value}`;
    let ok = verdicts.get(key);
    if (ok === undefined) verdicts.set(key, (ok = test()));
    return ok;
  };
  const attempt = (fn: () => unknown) => () => {
    try {
      fn();
      return true;
    } catch {
      return false;
    }
  };
  for (const t of config.tenants) {
    const at = `tenants.${t.id}`;
    if (!t.sftp.password && !t.sftp.privateKey) {
      problems.push(`${at}.sftp: set either password or privateKey`);
    }
    const key = t.sftp.privateKey;
    if (key && !key.includes('${') && !valid('key', key, () => fs.existsSync(key))) {
      problems.push(`${at}.sftp.privateKey: file ${key} does not exist`);
    }
    for (const [name, kind] of Object.entries(t.files)) {
      if (!kinds.has(kind)) {
        problems.push(`${at}.files.${name}: unknown file kind "${kind}"; known kinds: ${kinds.names().join(', ')}`);
      }
    }
    if (!valid('schedule', t.schedule, () => cron.validate(t.schedule))) {
      problems.push(`${at}.schedule: "${t.schedule}" is not a valid cron expression (e.g. "*/5 * * * *" or "0 0 * * *")`);
    }
    // UTC, the default, needs no lookup: the first time zone Intl resolves maps some 6.5 MiB of
    // ICU's data into the process (a tenth of an import's memory).
    if (t.timezone !== 'UTC' && !valid('zone', t.timezone, attempt(() => new Intl.DateTimeFormat('en-US', { timeZone: t.timezone })))) {
      problems.push(`${at}.timezone: "${t.timezone}" is not a known time zone (e.g. UTC, America/Chicago)`);
    }
    if (!valid('encoding', t.encoding, attempt(() => new TextDecoder(t.encoding)))) {
      problems.push(`${at}.encoding: "${t.encoding}" is not an encoding this machine can decode`);
    }
    if ((t.notify.when !== 'never') && t.notify.to.length === 0) {
      problems.push(`${at}.notify.to: give at least one address (or set notify.when: never)`);
    }
  }
  if (config.http) {
    const h = config.http;
    if (h.listen.port > 65535) problems.push(`http.listen: port ${h.listen.port} is not a TCP port (1-65535)`);
    for (const [i, ip] of h.trustedProxies.entries()) {
      if (!net.isIP(ip)) problems.push(`http.trustedProxies[${i}]: "${ip}" is not an IP address (the proxy's address as this machine sees it)`);
    }
    if (h.proxyHeader && h.trustedProxies.length === 0) {
      problems.push('http.proxyHeader: list the proxy\'s address in http.trustedProxies; the header is believed from nobody else');
    }
  }
  return problems;
}
