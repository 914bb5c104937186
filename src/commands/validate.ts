// `provisioner validate`: check a CSV file locally with the same messages and errors.csv as
// the worker. Nothing is applied; the database is a throw-away one in memory.
import path from 'node:path';
import { openApp, selectTenants } from '../app.js';
import { DEFAULT_OPTIONS, type ImportOptions } from '../config.js';
import { openDatabase } from '../db/database.js';
import { ConfigError, ExitCode } from '../errors.js';
import { importFile } from '../import/import-file.js';
import { KindRegistry } from '../import/kinds.js';
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
  let kinds = new KindRegistry();
  let options = PLAIN_OPTIONS;
  let encoding = 'utf-8';
  let kind = flags.kind;
  if (flags.tenant) {
    const app = openApp(flags.config);
    try {
      const [tenant] = selectTenants(app.config, [flags.tenant]);
      kinds = app.kinds;
      options = tenant.options;
      encoding = tenant.encoding;
      const distinct = [...new Set(Object.values(tenant.files))];
      kind ??= kindForFile(tenant, path.basename(file)) ?? (distinct.length === 1 ? distinct[0] : undefined);
      if (!kind) {
        throw new ConfigError(
          `cannot tell the kind of ${path.basename(file)} for tenant ${tenant.id}: its file names are ${Object.keys(tenant.files).join(', ')}; pass --kind`,
        );
      }
    } finally {
      app.close();
    }
  }
  if (!kinds.has(kind!)) throw new ConfigError(`unknown kind "${kind}"; known kinds: ${kinds.names().join(', ')}`);
  const errorsCsvPath = flags.errors ?? path.join(path.dirname(file), `${path.basename(file, path.extname(file))}.errors.csv`);
  const db = openDatabase(':memory:');
  try {
    const result = await importFile({
      db, kinds, tenant: flags.tenant ?? 'validate', kind: kind!, options, encoding, localPath: file, errorsCsvPath,
      epoch: 'validate', file: path.basename(file), runId: null, force: false, mode: 'check',
    });
    if (flags.json) process.stdout.write(JSON.stringify(result, null, 2) + '\n');
    else {
      const c = result.counts;
      const lines = [`${file} (${kind}): ${result.status === 'applied' ? 'valid' : result.status === 'rejected' ? 'rejected' : 'has row errors'}`];
      if (result.message) lines.push(`  ${result.message}`);
      if (result.status !== 'rejected') lines.push(`  ${c.rows} row(s): ${c.rows - c.failed} valid, ${c.failed} with errors`);
      for (const e of result.sampleErrors) lines.push(`  ${e}`);
      if (c.failed > result.sampleErrors.length) lines.push(`  … and ${c.failed - result.sampleErrors.length} more`);
      if (result.errorsCsv) lines.push(`  errors.csv written to ${result.errorsCsv}: fix the rows there and upload it as it is`);
      process.stdout.write(lines.join('\n') + '\n');
    }
    return result.status === 'applied' ? ExitCode.ok : ExitCode.problems;
  } finally {
    db.close();
  }
}

