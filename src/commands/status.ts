// `provisioner status`: per tenant, the last run and its result, the next scheduled run, what is
// waiting (triggers, claimed uploads, files settling, held full syncs, uploads that never
// completed or were set aside, queued and failed mail), the daemons, and recent imports.
import Table from 'cli-table3';
import { openApp, selectTenants } from '../app.js';
import { feedTimes } from '../service/overdue.js';
import { liveDaemons, tenantStatus, type LiveDaemon, type TenantStatus } from '../service/status.js';
import { printable } from '../text.js';
import { parseOwner } from '../worker/identity.js';

export async function statusCommand(flags: { config?: string; tenant?: string[]; json?: boolean }): Promise<number> {
  const app = await openApp(flags.config);
  try {
    const daemons = await liveDaemons(app.store);
    const statuses: TenantStatus[] = [];
    const times = await feedTimes(app.store);
    for (const t of selectTenants(app.config, flags.tenant)) statuses.push(await tenantStatus(app.store, t, daemons, 20, times));
    if (flags.json) {
      process.stdout.write(JSON.stringify(statuses, null, 2) + '\n');
      return 0;
    }
    process.stdout.write(renderStatus(statuses, daemons));
    return 0;
  } finally {
    await app.close();
  }
}

const when = (iso: string | null): string => (iso ? iso.slice(0, 19).replace('T', ' ') + 'Z' : '');

/** Which process ran it: `on host, pid N` (with several workers, which machine to look at). */
function ranBy(owner: string): string {
  const { host, pid } = parseOwner(owner);
  return Number.isInteger(pid) && pid > 0 ? `on ${host}, pid ${pid}` : `by ${owner}`;
}

function renderStatus(statuses: TenantStatus[], daemons: LiveDaemon[]): string {
  const out: string[] = [];
  out.push(
    daemons.length
      ? daemons
          .map((d) => `daemon: ${d.owner} on ${d.host}, up since ${when(d.startedAt)} (last heartbeat ${when(d.heartbeatAt)}), serving ${d.tenants.length} tenant(s)${d.inHand.length ? `, running ${d.inHand.join(', ')}` : ''}`)
          .join('\n')
      : 'daemon: not running (no `provisioner run` has sent a heartbeat lately); schedules and triggers wait until it starts',
  );
  const overview = new Table({
    head: ['tenant', 'last run', 'result', 'next run', 'pending', 'held', 'stale', 'mail queued'],
    style: { head: [], border: [] },
  });
  for (const s of statuses) {
    const r = s.lastRun;
    const pending = [
      s.pending.triggers ? `${s.pending.triggers} trigger(s)` : '',
      s.pending.claimed.length ? `${s.pending.claimed.length} claimed` : '',
      s.settling.length ? `${s.settling.length} settling` : '',
    ]
      .filter(Boolean)
      .join(', ');
    overview.push([
      s.tenant,
      r ? `${when(r.startedAt)} (${r.reason}, ${ranBy(r.owner)})` : 'never',
      (r ? r.status : '') + (s.feed.overdue ? ' (overdue)' : ''),
      s.enabled ? `${when(s.nextRun)}${s.daemon.running ? '' : ' (daemon down)'}` : 'disabled',
      pending || '-',
      s.held.length || '-',
      s.stale.length || '-',
      s.queuedMail.queued || '-',
    ]);
  }
  out.push(overview.toString());
  for (const s of statuses) {
    const notes: string[] = [];
    if (s.lastRun?.message) notes.push(`last run: ${printable(s.lastRun.message)}`);
    if (s.feed.overdue) {
      notes.push(`overdue: ${s.feed.lastSuccess ? `no upload applied since ${when(s.feed.lastSuccess)}` : 'no upload ever applied'}; one is expected every ${s.feed.expectEveryHours} hours (the operators were told)`);
    }
    for (const h of s.held) {
      notes.push(
        h.supersededBy !== null
          ? `held: ${h.epoch}/${printable(h.file)} is superseded by import ${h.supersededBy}, applied since; discard it with \`provisioner discard --tenant ${s.tenant} ${h.epoch}\``
          : `held: ${h.epoch}/${printable(h.file)}${h.message ? ` - ${printable(h.message)}` : ''}`,
      );
    }
    for (const f of s.settling) notes.push(`settling: ${printable(f.file)} (${f.reason}); a run after ${when(f.takeAfter)} takes it`);
    for (const e of s.stale) notes.push(`never completed: ${e.epoch} (no COMPLETE file; seen ${when(e.firstSeen)})`);
    for (const m of s.notFiled) notes.push(`not filed: upload ${m.epoch} is in ${printable(m.location ?? '?')}${m.reason ? ` - ${printable(m.reason)}` : ''}`);
    for (const a of s.setAside) notes.push(`set aside: ${printable(a.path)} - ${printable(a.reason)} (taken again once it changes)`);
    for (const c of s.pending.claimed) notes.push(`claimed: ${c.epoch} by ${c.owner} until ${when(c.expiresAt)} (being processed; if that worker stopped, the next run recovers it)`);
    if (s.queuedMail.queued) notes.push(`mail: ${s.queuedMail.queued} queued since ${when(s.queuedMail.oldestQueuedAt)}${s.queuedMail.lastError ? `; last error: ${s.queuedMail.lastError}` : ''}`);
    if (s.queuedMail.failed) notes.push(`mail: ${s.queuedMail.failed} failed (the mail server refused it${s.queuedMail.lastError ? `: ${s.queuedMail.lastError}` : ''})`);
    for (const a of s.audit.slice(0, 3)) notes.push(`by hand: ${when(a.at)} ${a.actor} ${a.action} ${a.target ?? ''}: ${a.result}${a.detail ? ` (${printable(a.detail)})` : ''}`);
    if (!notes.length && !s.imports.length) continue;
    out.push('', `${s.name} (${s.tenant}) — "${s.schedule}" ${s.timezone}`);
    for (const n of notes) out.push(`  ${n}`);
    if (s.imports.length) {
      const t = new Table({ head: ['epoch', 'file', 'status', 'rows', 'created', 'updated', 'unchanged', 'deact.', 'archived', 'failed', 'finished'], style: { head: [], border: [] } });
      for (const i of s.imports.slice(0, 5)) t.push([i.epoch, printable(i.file), i.status, i.rows, i.created, i.updated, i.unchanged, i.deactivated, i.archived, i.failed, when(i.finishedAt)]);
      out.push(t.toString().replace(/^/gm, '  '));
      if (s.imports.length > 5) out.push(`  … ${s.imports.length - 5} older import(s) in \`status --json\``);
    }
  }
  return out.join('\n') + '\n';
}
