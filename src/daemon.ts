// `provisioner run`: the daemon in the foreground, for systemd, a container or a terminal.
// SIGTERM or SIGINT stops it gracefully (no new runs; the runs in hand finish; exit 0); a
// second signal exits at once — still safe, as every file is applied in one transaction and
// an epoch left claimed is recovered on the next start (or by another daemon of the cluster).
import { openApp, selectTenants } from './app.js';
import type { Config, TenantConfig } from './config.js';
import { ConfigError, ExitCode } from './errors.js';
import { Daemon } from './service/daemon.js';

export async function runDaemon(flags: { config?: string; tenant?: string[] }): Promise<number> {
  const app = await openApp(flags.config);
  let daemon: Daemon | undefined;
  let signals = 0;
  let onSignal: (signal: NodeJS.Signals) => void = () => {};
  const stopRequested = new Promise<NodeJS.Signals>((resolve) => {
    onSignal = (signal) => {
      signals++;
      if (signals > 1) {
        app.log.warn(`second ${signal}: exiting now; an epoch left claimed is recovered on the next start`);
        process.exit(signal === 'SIGINT' ? 130 : 143);
      }
      resolve(signal);
    };
  });
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  try {
    daemon = new Daemon(app, { tenants: daemonTenants(app.config, flags.tenant) });
    await daemon.start();
    const signal = await stopRequested;
    app.log.info(`${signal} received: stopping (no new runs; the runs in hand finish first)`);
    await daemon.stop();
    return ExitCode.ok;
  } finally {
    await daemon?.stop();
    await app.close();
    // Should a library keep a socket or timer alive, do not hang a service manager's stop.
    setTimeout(() => process.exit(process.exitCode ?? 0), 3000).unref();
  }
}

function daemonTenants(config: Config, ids: string[] | undefined): TenantConfig[] {
  const tenants = selectTenants(config, ids);
  const disabled = tenants.filter((t) => !t.enabled).map((t) => t.id);
  if (disabled.length) throw new ConfigError(`tenant ${disabled.join(', ')} is disabled (enabled: false); the daemon does not schedule it. Use \`provisioner run --now --tenant ID\` for a one-off run.`);
  if (tenants.length === 0) throw new ConfigError('no tenant is enabled: the daemon would have nothing to do. Set enabled: true on at least one tenant.');
  return tenants;
}
