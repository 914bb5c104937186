// The configuration's types and defaults: what the rest of provisioner reads (config.ts loads,
// checks and fills it in).
export interface ImportOptions {
  fullSync: boolean;
  maxDeactivatePercent: number;
  overwriteEmail: boolean;
  overwritePassword: boolean;
  passwordFormat: 'plain' | 'date';
  sso: 'none' | 'google';
  siteMap: Record<string, string>;
  archiveInactive: boolean;
  strictHeaders: boolean;
  actor: string;
}

export interface SftpSettings {
  host: string;
  port: number;
  username: string;
  /** As written in the file: `${NAME}` is filled in only when this tenant is connected to (resolveSftp). */
  password?: string;
  /** Absolute path of the private key file. */
  privateKey?: string;
  passphrase?: string;
  /** The pinned fingerprint; undefined until `doctor` has shown it and someone pasted it. */
  hostKey?: string;
  timeoutSeconds: number;
  /** The daemon keeps the connection open this long after a run, for the tenant's next run (0 or unset: it does not). */
  keepOpenSeconds?: number;
}

export interface TenantConfig {
  id: string;
  name: string;
  enabled: boolean;
  schedule: string;
  timezone: string;
  settleSeconds: number;
  staleAfterHours: number;
  /** An upload is expected at least this often; none applied for longer is a feed that stopped (overdue). */
  expectEveryHours?: number;
  sftp: SftpSettings;
  paths: { upload: string; bak: string; tmp: string; failed: string; log?: string };
  /** File name or glob -> file kind. */
  files: Record<string, string>;
  loose: 'auto' | 'all' | 'keep';
  encoding: string;
  options: ImportOptions;
  notify: { to: string[]; replyTo?: string; when: 'failures' | 'always' | 'never'; templates?: string };
}

export type ConsoleRole = 'viewer' | 'operator';

/** Health, metrics and the console, served by the daemon. */
export interface HttpConfig {
  listen: { host: string; port: number };
  /** Console accounts: name -> scrypt hash (`provisioner hash-password`) and role. */
  users: Record<string, { passwordHash: string; role: ConsoleRole }>;
  /** An authenticating proxy's user header (lower case), believed only from trustedProxies. */
  proxyHeader?: string;
  proxyRole: ConsoleRole;
  trustedProxies: string[];
  sessionHours: number;
}

export interface Config {
  /** Absolute path of the file this came from (or '<embedded>'). */
  source: string;
  /** A SQLite file (absolute path) or a postgres:// URL. */
  database: string;
  workDir: string;
  concurrency: number;
  /** SFTP sessions opened at once to look for work. */
  discoveryConcurrency: number;
  leaseSeconds: number;
  settleRecheckSeconds: number;
  /** parseThreads: null for the default (the cores, up to 4). */
  limits: { maxRecordBytes: number; parseThreads: number | null };
  /** The key of the password digests: given, in a file given, or (SQLite) a file made beside the database. */
  passwordDigest: { key?: string; keyFile?: string; defaultFile?: string };
  log: { level: string; format: 'auto' | 'pretty' | 'json' };
  mail: { from: string; smtp?: string; outbox: string; operators: string[]; timeoutSeconds: number; retrySeconds?: number };
  /** Absent: the daemon serves no HTTP at all. */
  http?: HttpConfig;
  tenants: TenantConfig[];
}

export const DEFAULTS = {
  schedule: '*/5 * * * *',
  timezone: 'UTC',
  settleSeconds: 60,
  staleAfterHours: 24,
  timeoutSeconds: 30,
  keepOpenSeconds: 0,
} as const;

/** Import options a tenant gets for every key it leaves out. */
export const DEFAULT_OPTIONS: Readonly<ImportOptions> = {
  fullSync: false,
  maxDeactivatePercent: 10,
  overwriteEmail: true,
  overwritePassword: false,
  passwordFormat: 'plain',
  sso: 'none',
  siteMap: {},
  archiveInactive: false,
  strictHeaders: false,
  actor: 'provisioner',
};
