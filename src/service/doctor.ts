// The checks behind `provisioner doctor`: everything a new deployment or a new tenant gets
// wrong, each with a fix. The SFTP host key is checked before anything is sent: a connection
// whose key is not the pinned one is dropped during the handshake, before credentials go out,
// and its fingerprint is reported so the operator can confirm it and pin it.
import fs from 'node:fs';
import path from 'node:path';
import posix from 'node:path/posix';
import nodemailer from 'nodemailer';
import { loadConfig, type Config, type TenantConfig } from '../config.js';
import { openDatabase } from '../db/database.js';
import { migrations } from '../db/migrations.js';
import { ConfigError, errorMessage, HostKeyMismatchError } from '../errors.js';
import { checkTemplates } from '../mail/templates.js';
import { templatesDir } from '../paths.js';
import { SftpSession } from '../sftp/client.js';

export interface Check {
  check: string;
  /** null for checks of the whole installation. */
  tenant: string | null;
  status: 'ok' | 'fail' | 'skip';
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

export function checkDatabase(config: Config): Check {
  let db;
  try {
    db = openDatabase(config.database);
    const version = db.prepare('SELECT max(version) FROM schema_migrations').pluck().get() as number;
    const latest = Math.max(...migrations.map((m) => m.version));
    if (version < latest) return fail(null, 'database', `${config.database} is at schema version ${version}, this provisioner needs ${latest}`, 'see the error above; migrations run when any command opens the database');
    // A read-only file opens without complaint; only a write shows it (rolled back).
    db.exec('BEGIN IMMEDIATE; CREATE TABLE doctor_probe (x); ROLLBACK');
    return ok(null, 'database', `${config.database} is writable, schema version ${version} (up to date)`);
  } catch (err) {
    return fail(null, 'database', `${config.database}: ${errorMessage(err)}`, `make ${path.dirname(config.database)} and the database file writable by this user, or change database: in the config`);
  } finally {
    try {
      db?.exec('ROLLBACK');
    } catch {
      /* no transaction open */
    }
    db?.close();
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
  const { smtp, timeoutSeconds, outbox } = config.mail;
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

/** SFTP: reachable, host key, login, then the folders (only over a verified connection). */
export async function checkTenant(tenant: TenantConfig): Promise<Check[]> {
  const id = tenant.id;
  const { host, port, username } = tenant.sftp;
  const at = `tenants.${id}.sftp`;
  const checks: Check[] = [];
  let session: (SftpSession & { hostKeySeen: string }) | undefined;
  try {
    session = await SftpSession.connect(tenant.sftp, id);
    checks.push({ ...ok(id, 'host key', `${host}:${port} presents the pinned key ${session.hostKeySeen}`), fingerprint: session.hostKeySeen });
    checks.push(ok(id, 'sftp login', `logged in as ${username}@${host}:${port}`));
  } catch (err) {
    if (err instanceof HostKeyMismatchError) {
      checks.push({
        ...fail(
          id,
          'host key',
          `${host}:${port} presents ${err.seen}, but ${at}.hostKey pins ${err.expected}`,
          `if ${id} is new, or its server's key was changed (confirm the fingerprint with the host's operator), set ${at}.hostKey: "${err.seen}"`,
        ),
        fingerprint: err.seen,
      });
      checks.push(skip(id, 'sftp login', 'not tried: credentials are never sent to a server whose host key is not the pinned one'));
    } else if (/authentication/i.test(errorMessage(err))) {
      // The key is checked during the handshake, before authentication: it matched.
      checks.push({ ...ok(id, 'host key', `${host}:${port} presents the pinned key ${tenant.sftp.hostKey}`), fingerprint: tenant.sftp.hostKey });
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
      const { upload, bak, tmp, log } = tenant.paths;
      checks.push(await remoteFolder(session, id, 'upload folder', upload, true, `tenants.${id}.paths.upload`));
      checks.push(await remoteFolder(session, id, 'bak folder', bak, false, `tenants.${id}.paths.bak`));
      checks.push(await remoteFolder(session, id, 'tmp folder', tmp, false, `tenants.${id}.paths.tmp`));
      if (log) checks.push(await remoteFolder(session, id, 'log folder', posix.dirname(log), false, `tenants.${id}.paths.log`));
    } finally {
      await session.close();
    }
  }
  if (tenant.notify.templates) checks.push(checkTemplateFolder(id, tenant.notify.templates, `tenants.${id}.notify.templates`));
  return checks;
}

/**
 * Exists and writable (a probe file is written, renamed — claims are renames — and deleted).
 * bak, tmp and the log folder are created on first use, so for them a writable parent will do.
 */
async function remoteFolder(session: SftpSession, tenant: string, check: string, dir: string, mustExist: boolean, key: string): Promise<Check> {
  try {
    const kind = await session.exists(dir);
    if (kind === 'file') return fail(tenant, check, `${dir} is a file, not a folder`, `remove it on the SFTP host or change ${key}`);
    if (!kind) {
      if (mustExist) return fail(tenant, check, `${dir} does not exist`, `create ${dir} on the SFTP host, or change ${key}`);
      let parent = posix.dirname(dir);
      while (parent !== '/' && !(await session.exists(parent))) parent = posix.dirname(parent);
      await probe(session, parent);
      return ok(tenant, check, `${dir} does not exist yet; it will be created on first use (${parent} is writable)`);
    }
    await probe(session, dir);
    return ok(tenant, check, `${dir} exists and is writable`);
  } catch (err) {
    return fail(tenant, check, `${dir}: ${errorMessage(err)}`, `give the SFTP user write permission on ${dir}, or change ${key}`);
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
