// `provisioner revert --tenant ID IMPORT_ID [--force]`: undo an import. Every user it changed gets
// its previous values back as a new import in the name of whoever ran the command; the district
// is told, and the audit trail has it.
import { openApp, selectTenants } from '../app.js';
import { ConfigError, ExitCode } from '../errors.js';
import { deliverMail } from '../service/housekeeping.js';
import { revertImport } from '../service/revert.js';
import { requester } from '../worker/identity.js';

export async function revertCommand(importArg: string, flags: { config?: string; tenant: string; force?: boolean; json?: boolean }): Promise<number> {
  if (!/^\d+$/.test(importArg)) throw new ConfigError(`IMPORT_ID must be the number of an import (\`provisioner status --tenant ${flags.tenant} --json\` lists them), not "${importArg}"`);
  const app = await openApp(flags.config);
  try {
    const [tenant] = selectTenants(app.config, [flags.tenant]);
    const r = await revertImport(app, tenant, Number(importArg), { actor: requester(), force: flags.force === true });
    if (r.ok) await deliverMail(app, tenant.id);
    if (flags.json) {
      const { target, ...rest } = r;
      process.stdout.write(JSON.stringify({ tenant: tenant.id, import: target.id, epoch: target.epoch, file: target.file, ...rest }, null, 2) + '\n');
    } else if (r.ok) {
      process.stdout.write(
        `import ${which(r)} undone as import ${r.importId}: ${r.counts.updated} user(s) got their previous values back, ${r.counts.deactivated} user(s) it created deactivated.\n` +
          `The district's report is queued; \`provisioner users --tenant ${tenant.id} --history ID\` shows each change.\n`,
      );
    } else {
      process.stderr.write(`provisioner: import ${which(r)} was not undone: ${r.reason}\n`);
      if (r.conflicts?.length) process.stderr.write(`  users changed since: ${r.conflicts.map((c) => `${c.externalId} (import ${c.importId})`).join(', ')}\n`);
    }
    return r.ok ? ExitCode.ok : ExitCode.problems;
  } finally {
    await app.close();
  }
}

const which = (r: { target: { id: number; epoch: string; file: string } }) => `${r.target.id} (${r.target.epoch}/${r.target.file})`;
