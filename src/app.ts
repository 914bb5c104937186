// Everything a command needs, opened once from the configuration: the typed config, the store,
// the file kinds and a logger; the password hashing pool and digest key when a run needs them.
// Commands close it when they finish (idempotent).
import { loadConfig, resolveConfigPath, resolveDigestKey, type Config, type TenantConfig } from './config.js';
import { ConfigError } from './errors.js';
import { ScryptPool, type Hasher } from './import/hash-pool.js';
import { KindRegistry } from './import/kinds.js';
import { loadDigestKey } from './import/passwords.js';
import { createLogger, type Logger } from './log.js';
import { compactHeap } from './memory.js';
import { openStore } from './store/open.js';
import type { Store } from './store/types.js';
import type { RunDeps } from './worker/context.js';

export interface App {
  config: Config;
  store: Store;
  kinds: KindRegistry;
  log: Logger;
  /** The dependencies of a tenant's run (the hashing pool starts on first use). */
  runDeps(opts?: Pick<RunDeps, 'processing' | 'keptSessions'>): RunDeps;
  close(): Promise<void>;
}

const COMPACT_AFTER_TENANTS = 500;

export async function openApp(configFlag: string | undefined, opts: { logLevel?: string; migrate?: boolean } = {}): Promise<App> {
  const config = loadConfig(resolveConfigPath(configFlag));
  if (opts.logLevel) config.log.level = opts.logLevel;
  const log = createLogger(config.log);
  const store = await openStore(config.database, { log, migrate: opts.migrate });
  const kinds = new KindRegistry();
  // Loading a configuration of many tenants grows the heap well past what the run needs (see
  // memory.ts); a small one costs the collection (30 ms) more than it gives back.
  if (config.tenants.length >= COMPACT_AFTER_TENANTS) compactHeap();
  let hasher: Hasher | undefined;
  let digestKey: Buffer | null | undefined;
  let closed = false;
  return {
    config,
    store,
    kinds,
    log,
    runDeps(o = {}) {
      hasher ??= new ScryptPool();
      digestKey ??= loadDigestKey({ ...config.passwordDigest, key: config.passwordDigest.key === undefined ? undefined : resolveDigestKey(config.passwordDigest.key) });
      return { config, store, kinds, log, hasher, digestKey, processing: o.processing, keptSessions: o.keptSessions };
    },
    async close() {
      if (closed) return;
      closed = true;
      await hasher?.close();
      await store.close();
    },
  };
}

/** The tenants named with --tenant (all enabled ones when none), or a usage error. */
export function selectTenants(config: Config, ids: string[] | undefined): TenantConfig[] {
  if (!ids || ids.length === 0) return config.tenants.filter((t) => t.enabled);
  const known = new Map(config.tenants.map((t) => [t.id, t]));
  const unknown = ids.filter((id) => !known.has(id));
  if (unknown.length) {
    throw new ConfigError(`unknown tenant ${unknown.map((u) => `"${u}"`).join(', ')}; configured tenants: ${[...known.keys()].join(', ')}`);
  }
  return ids.map((id) => known.get(id)!);
}
