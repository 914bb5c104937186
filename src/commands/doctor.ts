// `provisioner doctor [--tenant ID]`: one line per check, ✓ or ✗ (! for a warning) with how to fix
// it; exit 1 when anything failed. Tenants are checked side by side, so one unreachable host costs one
// timeout, not one per tenant.
import { selectTenants } from '../app.js';
import { resolveConfigPath } from '../config.js';
import { ExitCode } from '../errors.js';
import {
  checkBuiltInTemplates,
  checkConfig,
  checkDatabase,
  checkDigestKey,
  checkLocalFolder,
  checkMail,
  checkTenant,
  type Check,
} from '../service/doctor.js';

export async function doctorCommand(flags: { config?: string; tenant?: string[]; json?: boolean }): Promise<number> {
  const file = resolveConfigPath(flags.config);
  const { check: configCheck, config } = checkConfig(file);
  const checks: Check[] = [configCheck];
  if (config) {
    // An unknown --tenant is a usage error (exit 2), not a failed check.
    const tenants = selectTenants(config, flags.tenant);
    checks.push(
      ...(await checkDatabase(config)),
      checkDigestKey(config),
      checkLocalFolder('work folder', config.workDir, 'workDir'),
      await checkMail(config),
      checkBuiltInTemplates(),
    );
    for (const tenantChecks of await Promise.all(tenants.map((t) => checkTenant(t)))) checks.push(...tenantChecks);
  }
  const failed = checks.filter((c) => c.status === 'fail').length;
  if (flags.json) {
    process.stdout.write(JSON.stringify({ ok: failed === 0, checks }, null, 2) + '\n');
  } else {
    process.stdout.write(render(checks) + '\n');
    process.stdout.write(failed ? `${failed} check(s) failed.\n` : 'All checks passed.\n');
  }
  return failed ? ExitCode.problems : ExitCode.ok;
}

const MARK = { ok: '✓', fail: '✗', skip: '-', warn: '!' } as const;

function render(checks: Check[]): string {
  const label = (c: Check) => (c.tenant ? `${c.tenant}: ${c.check}` : c.check);
  const width = Math.max(...checks.map((c) => label(c).length));
  return checks
    .map((c) => {
      const line = `${MARK[c.status]} ${label(c).padEnd(width)}  ${c.detail}`;
      return c.hint && c.status !== 'ok' ? `${line}\n  ${' '.repeat(width)}  fix: ${c.hint}` : line;
    })
    .join('\n');
}
