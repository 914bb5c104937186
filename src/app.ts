// Everything a command needs, opened once from the configuration: the typed config, the
// database, the file kinds and a logger. Commands close it when they finish.
import { loadConfig, resolveConfigPath, type Config, type TenantConfig } from './config.js';
import { openDatabase, type Db } from './db/database.js';
import { ConfigError } from './errors.js';
import { KindRegistry } from './import/kinds.js';
import { createLogger, type Logger } from './log.js';

export interface App {
  config: Config;
  db: Db;
  kinds: KindRegistry;
  log: Logger;
  close(): void;
}

export function openApp(configFlag: string | undefined, logLevel?: string): App {
  const config = loadConfig(resolveConfigPath(configFlag));
  if (logLevel) config.log.level = logLevel;
  const db = openDatabase(config.database);
  let closed = false;
  return {
    config,
    db,
    kinds: new KindRegistry(),
    log: createLogger(config.log),
    close() {
      if (closed) return;
      closed = true;
      db.close();
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
