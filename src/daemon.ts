// Placeholder until the daemon lands (issue 4).
import { ConfigError } from './errors.js';

export async function runDaemon(_flags: { config?: string; tenant?: string[] }): Promise<number> {
  throw new ConfigError('the daemon is not available yet; use `provisioner run --now`');
}
