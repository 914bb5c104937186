// ============================================================================================
// THE ONE PLACE where the benchmark builds provisioner's configuration (global and per tenant).
// Every row writes its config.yaml through writeConfig() with tenants from benchTenant().
//
// Fixed for every tenant: settleSeconds 0 (nothing to wait for), notify.when never (no mail),
// sftp.timeoutSeconds 60. concurrency is left at provisioner's default.
//
// Polling rows: should provisioner grow a separate key for how many tenants it looks at
// (connects and lists) at once, set it in POLLING_GLOBALS below; nothing else has to change.
// ============================================================================================
import fs from 'node:fs';
import path from 'node:path';
import { dump } from 'js-yaml';
import type { TestSftpServer } from '../test/harness/sftp-server.js';

/** Global keys added to the config of the poll rows (see the note above). */
export const POLLING_GLOBALS: Record<string, unknown> = {
  // e.g. discoveryConcurrency: 32,
};

export interface TenantOverrides {
  files?: Record<string, string>;
  loose?: 'auto' | 'all' | 'keep';
  options?: Record<string, unknown>;
  schedule?: string;
}

/** A tenant whose SFTP account is the bench server, its folders under `/<id>`. */
export function benchTenant(server: TestSftpServer, id: string, o: TenantOverrides = {}): Record<string, unknown> {
  const home = `/${id}`;
  return {
    name: `Bench ${id}`,
    settleSeconds: 0,
    ...(o.schedule ? { schedule: o.schedule } : {}),
    sftp: {
      host: server.host,
      port: server.port,
      username: server.username,
      // Key auth, as the by-hand sftp uses.
      ...(server.privateKeyPath ? { privateKey: server.privateKeyPath } : { password: server.password }),
      hostKey: server.hostKeyFingerprint,
      timeoutSeconds: 60,
    },
    paths: { upload: `${home}/upload`, bak: `${home}/upload/bak`, tmp: `${home}/tmp` },
    files: o.files ?? { 'users.csv': 'samegoal-users' },
    ...(o.loose ? { loose: o.loose } : {}),
    ...(o.options ? { options: o.options } : {}),
    notify: { to: [], when: 'never' },
  };
}

/**
 * Writes `<work>/config.yaml` (database `<work>/data/provisioner.db`, or the `database` of
 * `globals`: row 7's PostgreSQL URL); returns its path.
 */
export function writeConfig(work: string, tenants: Record<string, Record<string, unknown>>, globals: Record<string, unknown> = {}): string {
  const config = {
    database: './data/provisioner.db',
    log: { level: 'info', format: 'json' },
    mail: { from: 'Provisioning <provisioning@vendor.example>', outbox: './data/outbox' },
    ...globals,
    tenants,
  };
  const file = path.join(work, 'config.yaml');
  fs.writeFileSync(file, dump(config, { skipInvalid: true, lineWidth: -1 }));
  return file;
}
