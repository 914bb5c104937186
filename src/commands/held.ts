// `provisioner release --tenant ID EPOCH` and `provisioner discard --tenant ID EPOCH`: an
// operator's decision on one held upload, applied (or filed away) and reported to the district.
import { openApp, selectTenants } from '../app.js';
import { deliverMail } from '../service/housekeeping.js';
import { resolveHeld, type HeldAction } from '../worker/held.js';
import { requester } from '../worker/identity.js';
import { exitCodeFor } from '../worker/runner.js';
import { summarize } from './run-now.js';

export async function heldCommand(action: HeldAction, epoch: string, flags: { config?: string; tenant: string; json?: boolean }): Promise<number> {
  const app = await openApp(flags.config);
  try {
    const [tenant] = selectTenants(app.config, [flags.tenant]);
    const result = await resolveHeld(app.runDeps(), tenant, epoch, action, requester());
    await deliverMail(app, tenant.id);
    if (flags.json) process.stdout.write(JSON.stringify(result, null, 2) + '\n');
    else process.stdout.write(summarize([result], false));
    return exitCodeFor([result.status]);
  } finally {
    await app.close();
  }
}
