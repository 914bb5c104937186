// `provisioner validate`: check a CSV file locally with the same messages and errors.csv as the
// worker. Nothing is applied; staging happens in a throw-away in-memory database, and the
// tenant's SFTP secrets are never needed.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { selectTenants } from '../app.js';
import { DEFAULT_OPTIONS, loadConfig, resolveConfigPath, type ImportOptions } from '../config.js';
import { ConfigError, ExitCode } from '../errors.js';
import { importFile } from '../import/import-file.js';
import { KindRegistry } from '../import/kinds.js';
import { SqliteStore } from '../store/sqlite/store.js';
import { printable } from '../text.js';
import { kindForFile } from '../worker/uploads.js';

export interface ValidateFlags {
  config?: string;
  kind?: string;
  tenant?: string;
  errors?: string;
  json?: boolean;
}

const PLAIN_OPTIONS: ImportOptions = { ...DEFAULT_OPTIONS, siteMap: {}, actor: 'validate' };

export async function validateCommand(file: string, flags: ValidateFlags): Promise<number> {
  if (!flags.kind && !flags.tenant) throw new ConfigError('validate needs --kind KIND or --tenant ID (see provisioner validate --help)');
  let stat: fs.Stats;
  try {
    stat = fs.statSync(file);
  } catch {
    throw new ConfigError(`file not found: ${file}`);
  }
  if (!stat.isFile()) throw new ConfigError(`${file} is not a file`);
  const kinds = new KindRegistry();
  let options = PLAIN_OPTIONS;
  let encoding = 'utf-8';
  let maxRecordBytes = 1 << 20;
  let kind = flags.kind;
  if (flags.tenant) {
    const config = loadConfig(resolveConfigPath(flags.config));
    const [tenant] = selectTenants(config, [flags.tenant]);
    options = tenant.options;
    encoding = tenant.encoding;
    maxRecordBytes = config.limits.maxRecordBytes;
    const distinct = [...new Set(Object.values(tenant.files))];
    kind ??= kindForFile(tenant, path.basename(file)) ?? (distinct.length === 1 ? distinct[0] : undefined);
    if (!kind) {
      throw new ConfigError(`cannot tell the kind of ${path.basename(file)} for tenant ${tenant.id}: its file names are ${Object.keys(tenant.files).join(', ')}; pass --kind`);
    }
  }
  if (!kinds.has(kind!)) throw new ConfigError(`unknown kind "${kind}"; known kinds: ${kinds.names().join(', ')}`);
  const errorsCsvPath = flags.errors ?? path.join(path.dirname(file), `${path.basename(file, path.extname(file))}.errors.csv`);
  const store = new SqliteStore(':memory:');
  try {
    await store.schema.migrate();
    const result = await importFile({
      store, kinds, hasher: null, tenant: flags.tenant ?? 'validate', kind: kind!, options, encoding, maxRecordBytes, digestKey: null,
      localPath: file, scratchDir: os.tmpdir(), errorsCsvPath, epoch: 'validate', file: path.basename(file), runId: null, mode: 'check',
    });
    if (flags.json) process.stdout.write(JSON.stringify(result, null, 2) + '\n');
    else {
      const c = result.counts;
      const lines = [`${file} (${kind}): ${result.status === 'applied' ? 'valid' : result.status === 'rejected' ? 'rejected' : 'has row errors'}`];
      if (result.message) lines.push(`  ${printable(result.message)}`);
      if (result.status !== 'rejected') lines.push(`  ${c.rows} row(s): ${c.rows - c.failed} valid, ${c.failed} with errors`);
      for (const e of result.sampleErrors) lines.push(`  ${printable(e)}`);
      if (c.failed > result.sampleErrors.length) lines.push(`  … and ${c.failed - result.sampleErrors.length} more`);
      if (result.errorsCsv) lines.push(`  errors.csv written to ${result.errorsCsv}: fix the rows there and upload it as it is`);
      process.stdout.write(lines.join('\n') + '\n');
    }
    return result.status === 'applied' ? ExitCode.ok : ExitCode.problems;
  } finally {
    await store.close();
  }
}
