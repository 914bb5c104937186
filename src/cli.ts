#!/usr/bin/env node
// The command line. Typed errors thrown anywhere below are caught here, once, and mapped to
// exit codes: 2 usage or configuration, 3 remote or processing failure.
import fs from 'node:fs';
import module from 'node:module';
import path from 'node:path';
import { Command, CommanderError, Option } from 'commander';
import { ConfigError, errorMessage, ExitCode, ProvisionerError } from './errors.js';
import { packageRoot } from './paths.js';
// Each command's module is imported when that command runs: a `run --now` does not load the
// console's web server, a `status` not the SFTP client (start-up time and memory).

// V8 keeps the compiled code of those modules between runs (Node's compile cache), so a run
// starts sooner. The cache lives beside the package, not in a folder other users can write.
// (A read-only install gets no cache, only a slower start. The folder must exist: Node's own
// attempt to create a path it cannot make can spin.)
try {
  const modules = path.join(packageRoot(), 'node_modules');
  if (fs.statSync(modules).isDirectory()) module.enableCompileCache(path.join(modules, '.cache', 'provisioner-compile'));
} catch {
  /* no node_modules beside the package (installed elsewhere): no cache */
}

function packageVersion(): string {
  return (JSON.parse(fs.readFileSync(path.join(packageRoot(), 'package.json'), 'utf8')) as { version: string }).version;
}

const collect = (value: string, previous: string[] = []): string[] => [...previous, value];

export function buildProgram(setExit: (code: number) => void): Command {
  const program = new Command('provisioner')
    .description('Pulls CSV rosters from each tenant\'s SFTP account, checks them, applies them to the user directory and reports back.')
    .option('-c, --config <file>', 'configuration file (default: $PROVISIONER_CONFIG, then ./config.yaml)')
    .version(packageVersion(), '-V, --version')
    .showHelpAfterError()
    .exitOverride();
  const cfg = () => program.opts<{ config?: string }>().config;

  program
    .command('run')
    .description('run the worker: the daemon (each tenant on its schedule), or with --now one immediate run that then exits')
    .option('--now', 'process now, in the foreground, then exit')
    .option('-t, --tenant <id>', 'only this tenant (repeatable; default: all)', collect)
    .option('--force', 'process a keep-in-place file again even if its content was processed before')
    .option('--dry-run', 'check everything and report what would change; apply and move nothing')
    .option('--json', 'print the results as JSON (with --now)')
    .addHelpText(
      'after',
      '\nWithout --now, runs as a daemon: each enabled tenant on its cron schedule (in its time zone), at most' +
        '\n`concurrency` runs at once, tier-2 triggers picked up within seconds, queued mail retried.' +
        '\nSIGTERM/SIGINT stops it gracefully (runs in hand finish, exit 0); a second signal exits at once.' +
        '\n\nExit codes with --now: 0 applied cleanly or nothing to do, 1 held/rejected/row errors, 2 usage or configuration error, 3 a tenant could not be processed.',
    )
    .action(async (opts: { now?: boolean; tenant?: string[]; force?: boolean; dryRun?: boolean; json?: boolean }) => {
      if (opts.now) {
        const { runNow } = await import('./commands/run-now.js');
        setExit(await runNow({ config: cfg(), ...opts }));
        return;
      }
      const onlyNow = [opts.force && '--force', opts.dryRun && '--dry-run', opts.json && '--json'].filter(Boolean);
      if (onlyNow.length) throw new ConfigError(`${onlyNow.join(', ')} ${onlyNow.length > 1 ? 'apply' : 'applies'} only to \`run --now\`; the daemon (\`run\`) takes --tenant only`);
      const { runDaemon } = await import('./daemon.js');
      setExit(await runDaemon({ config: cfg(), tenant: opts.tenant }));
    });

  for (const [action, what] of [
    ['release', 'apply one held upload after review (over the deactivation limit it was held for); the district is told'],
    ['discard', 'file one held upload away in bak without applying it; the district is told'],
  ] as const) {
    program
      .command(action)
      .description(what)
      .argument('<epoch>', 'the held upload (`provisioner status` lists them)')
      .requiredOption('-t, --tenant <id>', 'tenant id')
      .option('--json', 'print JSON')
      .addHelpText('after', '\nExit codes: 0 done, 1 applied with row errors or not applied (superseded), 2 usage error (no such held upload), 3 failed.')
      .action(async (epoch: string, opts: { tenant: string; json?: boolean }) => {
        const { heldCommand } = await import('./commands/held.js');
        setExit(await heldCommand(action, epoch, { config: cfg(), ...opts }));
      });
  }

  program
    .command('revert')
    .description('undo an import: every user it changed gets its previous values back (deactivations, archives and passwords included), as a new import in your name; the district is told')
    .argument('<importId>', 'the import to undo (`provisioner status --tenant ID --json` lists them, as does the console)')
    .requiredOption('-t, --tenant <id>', 'tenant id')
    .option('--force', 'undo it even though a later import changed some of the same users (their newer values are overwritten)')
    .option('--json', 'print JSON')
    .addHelpText(
      'after',
      '\nUsers the import created are deactivated (never deleted). Refused, with the reason, when a later import changed' +
        '\nthe same users, when it was undone already, or when it changed nobody (held, rejected, discarded).' +
        '\n\nExit codes: 0 undone, 1 refused, 2 usage error (no such import of the tenant), 3 failed.',
    )
    .action(async (importId: string, opts: { tenant: string; force?: boolean; json?: boolean }) => {
      const { revertCommand } = await import('./commands/revert.js');
      setExit(await revertCommand(importId, { config: cfg(), ...opts }));
    });

  program
    .command('hash-password')
    .description('read a password on standard input and print its scrypt hash, for http.users.<name>.passwordHash in the configuration')
    .addHelpText('after', '\nExample: printf %s "$PASSWORD" | provisioner hash-password\nOn a terminal the password is asked for and not shown.')
    .action(async () => {
      const { hashPasswordCommand } = await import('./commands/hash-password.js');
      setExit(await hashPasswordCommand());
    });

  program
    .command('users')
    .description("show a tenant's user directory as it stands")
    .requiredOption('-t, --tenant <id>', 'tenant id')
    .option('--history <externalId>', 'every change to one user: when, which upload, who, from what to what')
    .option('--json', 'print JSON')
    .action(async (opts: { tenant: string; json?: boolean; history?: string }) => {
      const { usersCommand } = await import('./commands/users.js');
      setExit(await usersCommand({ config: cfg(), ...opts }));
    });

  program
    .command('trigger')
    .description('ask the running daemon to process a tenant now (tier-2 support); it picks the request up within seconds')
    .requiredOption('-t, --tenant <id>', 'tenant id (repeatable)', collect)
    .option('--wait', 'wait until the run finishes, print its result and exit like run --now')
    .option('--json', 'print JSON')
    .addHelpText(
      'after',
      '\nThe request is queued in the database; if no daemon is running it stays queued until one starts (exit 3).' +
        '\nExit codes with --wait: 0 applied cleanly or nothing to do, 1 held/rejected/row errors, 2 usage or configuration error, 3 failed or no daemon.',
    )
    .action(async (opts: { tenant: string[]; wait?: boolean; json?: boolean }) => {
      const { triggerCommand } = await import('./commands/trigger.js');
      setExit(await triggerCommand({ config: cfg(), ...opts }));
    });

  program
    .command('status')
    .description('per tenant: last run and its result, next scheduled run, pending/held/stale uploads, queued mail, daemon, recent imports')
    .option('-t, --tenant <id>', 'only this tenant (repeatable)', collect)
    .option('--json', 'print JSON')
    .action(async (opts: { tenant?: string[]; json?: boolean }) => {
      const { statusCommand } = await import('./commands/status.js');
      setExit(await statusCommand({ config: cfg(), ...opts }));
    });

  program
    .command('validate')
    .description('check a CSV file locally with the same messages and errors.csv as the worker; nothing is applied')
    .argument('<file>', 'the CSV file')
    .addOption(new Option('-k, --kind <kind>', 'file kind (schemas/<kind>.schema.json)'))
    .option('-t, --tenant <id>', "use this tenant's file names and options (site map, SSO, strict headers)")
    .option('--errors <file>', 'where to write errors.csv (default: <file>.errors.csv beside it)')
    .option('--json', 'print JSON')
    .addHelpText('after', '\nExit codes: 0 valid, 1 rejected or row errors, 2 usage or configuration error.')
    .action(async (file: string, opts: { kind?: string; tenant?: string; errors?: string; json?: boolean }) => {
      const { validateCommand } = await import('./commands/validate.js');
      setExit(await validateCommand(file, { config: cfg(), ...opts }));
    });

  program
    .command('doctor')
    .description('check the setup: config, database, mail, and per tenant SFTP reachability, host key (prints the fingerprint), login, folders, templates')
    .option('-t, --tenant <id>', 'only this tenant (repeatable; default: all enabled)', collect)
    .option('--json', 'print JSON')
    .addHelpText('after', '\nExit codes: 0 every check passed, 1 a check failed, 2 usage error.')
    .action(async (opts: { tenant?: string[]; json?: boolean }) => {
      const { doctorCommand } = await import('./commands/doctor.js');
      setExit(await doctorCommand({ config: cfg(), ...opts }));
    });

  return program;
}

export async function main(argv: string[]): Promise<number> {
  let code: number = ExitCode.ok;
  const program = buildProgram((c) => (code = c));
  try {
    await program.parseAsync(argv);
    return code;
  } catch (err) {
    if (err instanceof CommanderError) {
      return err.exitCode === 0 || err.code === 'commander.helpDisplayed' || err.code === 'commander.version' ? 0 : ExitCode.usage;
    }
    if (err instanceof ProvisionerError) {
      process.stderr.write(`provisioner: ${err.message}\n`);
      return err.exitCode;
    }
    process.stderr.write(`provisioner: unexpected error: ${errorMessage(err)}\n${(err as Error)?.stack ?? ''}\n`);
    return ExitCode.failed;
  }
}

main(process.argv).then((code) => {
  process.exitCode = code;
});
