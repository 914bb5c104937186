// The checks behind `provisioner doctor`: everything a new deployment or a new tenant gets
// wrong, each with a fix. The SFTP host key is checked before anything is sent: a connection
// whose key is not the pinned one is dropped during the handshake, before credentials go out,
// and its fingerprint is reported so the operator can confirm it and pin it.
import fs from 'node:fs';
import path from 'node:path';
import posix from 'node:path/posix';
import nodemailer from 'nodemailer';
import { expandSecret, loadConfig, resolveDigestKey, resolveSftp, type Config, type SftpSettings, type TenantConfig } from '../config.js';
import { ConfigError, errorMessage, HostKeyMismatchError } from '../errors.js';
import { describeDatabase, openStore } from '../store/open.js';
import { checkTemplates } from '../mail/templates.js';
import { templatesDir } from '../paths.js';
import { SftpSession } from '../sftp/client.js';

export interface Check {
  check: string;
  /** null for checks of the whole installation. */
  tenant: string | null;
  /** warn: works, but not as it should run (the hint says what to change); not a failure. */
  status: 'ok' | 'fail' | 'skip' | 'warn';
  detail: string;
  /** How to fix it (failures, and skips that need action). */
  hint?: string;
  /** The host key the server presented (host key checks). */
  fingerprint?: string;
}

const probeName = () => `.provisioner-doctor-${process.pid}-${Date.now().toString(36)}.tmp`;

/** Loads the configuration; a config that does not load is the first failed check. */
export function checkConfig(file: string): { check: Check; config?: Config } {
  try {
    const config = loadConfig(file);
    const enabled = config.tenants.filter((t) => t.enabled).length;
    return { config, check: ok(null, 'config', `${file} is valid: ${config.tenants.length} tenant(s), ${enabled} enabled`) };
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    return { check: fail(null, 'config', err.message, 'fix the keys listed above; config.example.yaml documents every key') };
  }
}

/**
 * The key of the password digests. Without one every unchanged password of a re-run roster is
 * checked with scrypt (~40 ms each); several workers need the same key, so with PostgreSQL it
 * must come from the configuration.
 */
export function checkDigestKey(config: Config): Check {
  const { key, keyFile, defaultFile } = config.passwordDigest;
  if (key) {
    try {
      resolveDigestKey(key);
    } catch (err) {
      return fail(null, 'password digests', errorMessage(err), 'set the variable in the environment of provisioner (the same key on every worker)');
    }
    return ok(null, 'password digests', 'keyed by passwordDigestKey');
  }
  const file = keyFile ?? defaultFile;
  if (file) {
    try {
      fs.accessSync(file, fs.constants.R_OK);
      return ok(null, 'password digests', `keyed by ${file}`);
    } catch {
      if (keyFile) return fail(null, 'password digests', `passwordDigestKeyFile ${file} cannot be read`, `create it (any 32 random bytes, base64: openssl rand -base64 32 > ${file}) or fix its permissions`);
      return ok(null, 'password digests', `keyed by ${file}, made on the first run`);
    }
  }
  return {
    ...fail(null, 'password digests', 'no key: every unchanged password of a re-run roster is checked with scrypt (~40 ms each)', 'set passwordDigestKey (or passwordDigestKeyFile), the same on every worker'),
    status: 'warn',
  };
}

/** Reachable, writable, and at our schema version — checked without migrating anything. */
export async function checkDatabase(config: Config): Promise<Check[]> {
  const where = describeDatabase(config.database);
  let store;
  try {
    store = await openStore(config.database, { migrate: false, busyWaitMs: 10_000 });
  } catch (err) {
    return [fail(null, 'database', `${where}: ${errorMessage(err)}`, store === undefined && /postgres/i.test(config.database) ? 'check that the server is up, the URL (user, host, port, database) and the password' : `make the folder of ${where} writable by this user, or change database: in the config`)];
  }
  try {
    const checks: Check[] = [];
    const version = await store.schema.serverVersion();
    const unsupported = await store.schema.unsupported();
    if (unsupported) return [fail(null, 'database', `${where}: ${unsupported.problem}`, unsupported.fix)];
    const { current, latest } = await store.schema.version();
    if (current > latest) {
      checks.push(fail(null, 'database', `${where} is at schema version ${current}, newer than this provisioner knows (${latest})`, 'upgrade provisioner on this machine to the version the other workers run'));
    } else if (current === 0) {
      await store.schema.probeWrite();
      checks.push(ok(null, 'database', `${where} (${version}) is new and writable; its tables are made on the first run`));
    } else if (current < latest) {
      checks.push(fail(null, 'database', `${where} (${version}) is at schema version ${current}; this provisioner needs ${latest}`, 'it is upgraded the next time `provisioner run` (or any command) opens it; stop older workers first'));
    } else {
      await store.schema.probeWrite();
      checks.push(ok(null, 'database', `${where} (${version}) is writable, schema version ${current} (up to date)`));
    }
    return checks;
  } catch (err) {
    return [fail(null, 'database', `${where}: ${errorMessage(err)}`, `make ${where} writable by this user, or change database: in the config`)];
  } finally {
    await store.close();
  }
}

export function checkLocalFolder(check: string, dir: string, key: string): Check {
  try {
    fs.mkdirSync(dir, { recursive: true });
    const probe = path.join(dir, probeName());
    fs.writeFileSync(probe, 'provisioner doctor\n');
    fs.unlinkSync(probe);
    return ok(null, check, `${dir} is writable`);
  } catch (err) {
    return fail(null, check, `${dir}: ${errorMessage(err)}`, `make ${dir} writable by this user, or set ${key} in the config`);
  }
}

export async function checkMail(config: Config): Promise<Check> {
  const { timeoutSeconds, outbox } = config.mail;
  let smtp: string | undefined;
  try {
    smtp = config.mail.smtp ? expandSecret(config.mail.smtp, 'mail.smtp') : undefined;
  } catch (err) {
    return fail(null, 'mail', errorMessage(err), 'set the variable in the environment of provisioner');
  }
  if (!smtp) {
    const c = checkLocalFolder('mail', outbox, 'mail.outbox');
    return c.status === 'ok' ? { ...c, detail: `no mail.smtp: reports are written as .eml files to ${outbox}, which is writable` } : c;
  }
  const ms = timeoutSeconds * 1000;
  const transport = nodemailer.createTransport({ url: smtp, connectionTimeout: ms, greetingTimeout: ms, socketTimeout: ms });
  const shown = redactUrl(smtp);
  try {
    await transport.verify();
    return ok(null, 'mail', `the SMTP server ${shown} accepts connections`);
  } catch (err) {
    return fail(null, 'mail', `the SMTP server ${shown} is not usable: ${errorMessage(err)}`, 'check mail.smtp (host, port, user, password) and that the server is up; reports stay queued meanwhile');
  } finally {
    transport.close();
  }
}

export function checkTemplateFolder(tenant: string | null, folder: string, key: string): Check {
  const problems = checkTemplates(folder);
  return problems.length
    ? fail(tenant, 'templates', problems.join('; '), tenant ? `fix the files in ${folder}, or remove ${key} to use the built-in templates` : 'reinstall provisioner: a built-in template is broken')
    : ok(tenant, 'templates', `${folder} is valid`);
}

export const checkBuiltInTemplates = (): Check => checkTemplateFolder(null, templatesDir(), '');

/** SFTP: reachable, host key, login, then the folders the tenant uses (only over a verified connection). */
export async function checkTenant(tenant: TenantConfig): Promise<Check[]> {
  const id = tenant.id;
  const at = `tenants.${id}.sftp`;
  let settings: SftpSettings;
  try {
    settings = resolveSftp(tenant);
  } catch (err) {
    return [fail(id, 'sftp login', errorMessage(err), `set the variable in the environment of provisioner (e.g. the service's EnvironmentFile)`)];
  }
  const { host, port, username } = settings;
  const checks: Check[] = [];
  if (settings.hostKey === undefined) {
    // Nothing to verify the server against: only its key is read (the handshake is refused at
    // the key), so that it can be pinned; no password or key goes to an unverified server.
    try {
      const seen = await SftpSession.readHostKey(settings);
      checks.push({
        ...fail(id, 'host key', `${at}.hostKey is not set; ${host}:${port} presents ${seen}`, `confirm the fingerprint with the host's operator, then set ${at}.hostKey: "${seen}" (until then \`run\` refuses this tenant)`),
        fingerprint: seen,
      });
      checks.push(skip(id, 'sftp login', 'not tried until the host key is pinned: credentials are never sent to an unverified server'));
    } catch (err) {
      checks.push(fail(id, 'sftp login', errorMessage(err), `check ${at}.host and ${at}.port, that the server is up and that a firewall lets this machine through`));
      checks.push(skip(id, 'host key', 'not checked: no connection'));
    }
    checks.push(skip(id, 'folders', 'not checked until the host key is pinned'));
    if (tenant.notify.templates) checks.push(checkTemplateFolder(id, tenant.notify.templates, `tenants.${id}.notify.templates`));
    return checks;
  }
  let session: (SftpSession & { hostKeySeen: string }) | undefined;
  try {
    session = await SftpSession.connect(settings, id);
    checks.push({ ...ok(id, 'host key', `${host}:${port} presents the pinned key ${session.hostKeySeen}`), fingerprint: session.hostKeySeen });
    checks.push(ok(id, 'sftp login', `logged in as ${username}@${host}:${port}`));
  } catch (err) {
    if (err instanceof HostKeyMismatchError) {
      checks.push({
        ...fail(id, 'host key', `${host}:${port} presents ${err.seen}, but ${at}.hostKey pins ${err.expected}`, `if ${id}'s server key really changed (confirm the fingerprint with the host's operator), set ${at}.hostKey: "${err.seen}"`),
        fingerprint: err.seen,
      });
      checks.push(skip(id, 'sftp login', 'not tried: credentials are never sent to a server whose host key is not the pinned one'));
    } else if (/authentication/i.test(errorMessage(err))) {
      // The key is checked during the handshake, before authentication: it matched.
      checks.push({ ...ok(id, 'host key', `${host}:${port} presents the pinned key ${settings.hostKey}`), fingerprint: settings.hostKey });
      checks.push(fail(id, 'sftp login', `${username}@${host}:${port} refused the login: ${errorMessage(err)}`, `check ${at}.username and ${at}.password or ${at}.privateKey`));
    } else {
      checks.push(fail(id, 'sftp login', errorMessage(err), `check ${at}.host and ${at}.port, that the server is up and that a firewall lets this machine through`));
      checks.push(skip(id, 'host key', 'not checked: no connection'));
    }
  }
  if (!session) {
    checks.push(skip(id, 'folders', 'not checked: no verified connection'));
  } else {
    try {
      for (const f of foldersOf(tenant)) checks.push(await remoteFolder(session, id, f.check, f.dir, f.mustExist, f.key));
    } finally {
      await session.close();
    }
  }
  await session?.close();
  if (tenant.notify.templates) checks.push(checkTemplateFolder(id, tenant.notify.templates, `tenants.${id}.notify.templates`));
  return checks;
}

/** The folders this tenant's runs use: tmp only for keep-in-place files, the log folder only when set. */
function foldersOf(tenant: TenantConfig): { check: string; dir: string; mustExist: boolean; key: string }[] {
  const key = (k: string) => `tenants.${tenant.id}.paths.${k}`;
  const { upload, bak, tmp, failed, log } = tenant.paths;
  const folders = [
    { check: 'upload folder', dir: upload, mustExist: true, key: key('upload') },
    { check: 'bak folder', dir: bak, mustExist: false, key: key('bak') },
    { check: 'failed folder', dir: failed, mustExist: false, key: key('failed') },
  ];
  if (tenant.loose === 'keep') folders.push({ check: 'tmp folder', dir: tmp, mustExist: false, key: key('tmp') });
  if (log) folders.push({ check: 'log folder', dir: posix.dirname(log), mustExist: false, key: key('log') });
  return folders;
}

/**
 * Exists (or can be made: bak, failed, tmp and the log folder are created on first use) and is
 * writable: a probe file is written inside it, renamed (claims are renames) and deleted. The
 * folders made for the probe (every missing level of the path) are removed again.
 */
async function remoteFolder(session: SftpSession, tenant: string, check: string, dir: string, mustExist: boolean, key: string): Promise<Check> {
  const made: string[] = [];
  try {
    const kind = await session.exists(dir);
    if (kind === 'file') return fail(tenant, check, `${dir} is a file, not a folder`, `remove it on the SFTP host or change ${key}`);
    if (!kind) {
      if (mustExist) return fail(tenant, check, `${dir} does not exist`, `create ${dir} on the SFTP host, or change ${key}`);
      const missing: string[] = [];
      for (let d = dir; d !== posix.dirname(d) && !(await session.exists(d)); d = posix.dirname(d)) missing.push(d);
      await session.mkdirp(dir);
      made.push(...missing); // deepest first
    }
    await probe(session, dir);
    return ok(tenant, check, made.length ? `${dir} does not exist yet; it can be created, and written (it is made on first use)` : `${dir} exists and is writable`);
  } catch (err) {
    return fail(tenant, check, `${dir}: ${errorMessage(err)}`, `give the SFTP user write permission on ${dir} (or its parent), or change ${key}`);
  } finally {
    for (const d of made) await session.rmdir(d).catch(() => {});
  }
}

async function probe(session: SftpSession, dir: string): Promise<void> {
  const file = posix.join(dir, probeName());
  await session.write(file, 'provisioner doctor\n');
  try {
    await session.rename(file, `${file}.renamed`);
    await session.remove(`${file}.renamed`);
  } catch (err) {
    await session.remove(file).catch(() => {});
    throw err;
  }
}

/** smtp://user:secret@host -> smtp://user:***@host: the doctor's output is pasted into tickets. */
function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return url.replace(/:[^:@/]*@/, ':***@');
  }
}

const ok = (tenant: string | null, check: string, detail: string): Check => ({ check, tenant, status: 'ok', detail });
const fail = (tenant: string | null, check: string, detail: string, hint: string): Check => ({ check, tenant, status: 'fail', detail, hint });
const skip = (tenant: string | null, check: string, detail: string): Check => ({ check, tenant, status: 'skip', detail });
