// `${NAME}` in the configuration: filled from the environment when the file is loaded, except
// the secrets that only some commands need, which are filled in when used.
import { ConfigError } from './errors.js';
import type { SftpSettings, TenantConfig } from './config.js';

/**
 * Keys whose `${NAME}` is filled in only when used: a tenant's SFTP credentials (when that tenant
 * is connected to), the SMTP URL (when mail is sent) and the password digest key (when a file is
 * imported). `status`, `users`, `trigger` or another tenant's run must not fail because one of
 * these secrets is not in this shell (an operator's machine has only the database's).
 */
const DEFERRED = [/^tenants\.[^.]+\.sftp\.(password|passphrase|privateKey)$/, /^mail\.smtp$/, /^passwordDigestKey$/];

/** The digest key as configured, `${NAME}` filled in (ConfigError when unset or too short). */
export function resolveDigestKey(key: string, env: NodeJS.ProcessEnv = process.env): string {
  const value = expandSecret(key, 'passwordDigestKey', env);
  if (value.length < 16) throw new ConfigError(`passwordDigestKey: must be at least 16 characters (\`openssl rand -base64 32\` makes one)`);
  return value;
}

const ENV_REF = /\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g;

/** Does `value` name an environment variable (`${NAME}`)? */
export const hasEnvRef = (value: string): boolean => /\$\{[A-Za-z_][A-Za-z0-9_]*\}/.test(value);

/** Fills in `${NAME}` in one deferred value; the error names the variable and the key. */
export function expandSecret(value: string, at: string, env: NodeJS.ProcessEnv = process.env): string {
  const missing: string[] = [];
  const out = value.replace(ENV_REF, (_m, name: string) => env[name] ?? (missing.push(name), ''));
  if (missing.length) throw new ConfigError(`${at}: environment variable ${missing.join(', ')} is not set`);
  return out;
}

/** A tenant's SFTP settings with its secrets filled in (ConfigError naming what is missing). */
export function resolveSftp(tenant: TenantConfig, env: NodeJS.ProcessEnv = process.env): SftpSettings {
  const at = `tenants.${tenant.id}.sftp`;
  const { password, passphrase, privateKey } = tenant.sftp;
  return {
    ...tenant.sftp,
    password: password === undefined ? undefined : expandSecret(password, `${at}.password`, env),
    passphrase: passphrase === undefined ? undefined : expandSecret(passphrase, `${at}.passphrase`, env),
    privateKey: privateKey === undefined ? undefined : expandSecret(privateKey, `${at}.privateKey`, env),
  };
}

/**
 * Replaces `${NAME}` in every string of `value`, a tree fresh from the parser, in place; an unset
 * variable is a problem naming it and its key. In place, and a value's key path is spelled out
 * only where it names a variable: copying a 10,000-tenant file with a path string for each of its
 * values made most of the garbage of loading it.
 */
export function expandEnv(value: unknown, env: NodeJS.ProcessEnv, problems: string[]): unknown {
  const keys: (string | number)[] = [];
  const at = () => keys.reduce<string>((s, k) => (typeof k === 'number' ? `${s}[${k}]` : s ? `${s}.${k}` : k), '');
  const visit = (v: unknown): unknown => {
    if (typeof v === 'string') return v.includes('${') ? expandString(v, at(), env, problems) : v;
    if (v && typeof v === 'object') {
      const node = v as Record<string, unknown>;
      const list = Array.isArray(v);
      for (const k of Object.keys(node)) {
        keys.push(list ? Number(k) : k);
        node[k] = visit(node[k]);
        keys.pop();
      }
    }
    return v;
  };
  return visit(value);
}

function expandString(value: string, at: string, env: NodeJS.ProcessEnv, problems: string[]): string {
  if (DEFERRED.some((d) => d.test(at))) return value;
  // In a PostgreSQL URL (`postgres://provisioner:${PGPASSWORD}@host/db`) a value is
  // percent-encoded: a password may hold @, :, / or % without breaking the URL.
  const inUrl = at === 'database' && /^postgres(ql)?:\/\//i.test(value);
  return value.replace(ENV_REF, (_m, name: string) => {
    const v = env[name];
    if (v === undefined) {
      problems.push(`${at || '(root)'}: environment variable ${name} is not set`);
      return '';
    }
    return inUrl ? encodeURIComponent(v) : v;
  });
}
