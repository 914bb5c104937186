// `provisioner users --tenant ID`: the tenant's user directory as it stands; with
// `--history EXTERNAL_ID`, every change to one user, so support can answer "why did this
// student's e-mail change?" (which upload, which file, who, from what to what).
import Table from 'cli-table3';
import { openApp, selectTenants } from '../app.js';
import { userHistory, type UserChange } from '../service/user-history.js';
import { printable } from '../text.js';

function historyText(tenant: { id: string; name: string }, externalId: string, changes: UserChange[]): string {
  if (changes.length === 0) return `${tenant.name}: no changes recorded for ${externalId} (check the id with \`provisioner users --tenant ${tenant.id}\`)\n`;
  const show = (v: unknown) => (v === null ? '(empty)' : typeof v === 'string' ? printable(v) : JSON.stringify(v));
  const out = [`${tenant.name}: history of ${printable(externalId)}, oldest first`];
  for (const c of changes) {
    const from = c.epoch ? ` from upload ${c.epoch}${c.file ? ` ${printable(c.file)}` : ''}` : '';
    out.push(`${c.changedAt.slice(0, 19).replace('T', ' ')}  ${c.action}${from} by ${c.actor ?? 'unknown'} (import ${c.importId ?? '-'})`);
    for (const f of c.changes) {
      out.push(c.action === 'create' ? `    ${f.field}: ${show(f.to)}` : `    ${f.field}: ${show(f.from)} -> ${show(f.to)}`);
    }
  }
  return out.join('\n') + '\n';
}

export async function usersCommand(flags: { config?: string; tenant: string; json?: boolean; history?: string }): Promise<number> {
  const app = await openApp(flags.config);
  try {
    const [tenant] = selectTenants(app.config, [flags.tenant]);
    if (flags.history !== undefined) {
      const { externalId, changes } = await userHistory(app.store, tenant.id, flags.history);
      process.stdout.write(flags.json ? JSON.stringify(changes, null, 2) + '\n' : historyText(tenant, externalId, changes));
      return 0;
    }
    const users = await app.store.directory.users(tenant.id);
    if (flags.json) {
      process.stdout.write(JSON.stringify(users, null, 2) + '\n');
      return 0;
    }
    const table = new Table({ head: ['id', 'kind', 'name', 'email', 'username', 'site', 'active', 'updated'], style: { head: [], border: [] } });
    for (const u of users) {
      table.push([
        u.externalId,
        u.kind,
        [u.firstName, u.lastName].filter(Boolean).join(' '),
        u.email ?? '',
        u.username ?? '',
        u.siteLabel ?? u.siteId ?? '',
        u.archivedAt ? `archived ${u.archivedAt.slice(0, 10)}` : u.active ? 'yes' : 'no',
        u.updatedAt.slice(0, 19).replace('T', ' '),
      ]);
    }
    process.stdout.write(`${tenant.name}: ${users.length} user(s), ${users.filter((u) => u.active).length} active\n${table.toString()}\n`);
    return 0;
  } finally {
    await app.close();
  }
}
