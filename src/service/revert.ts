// Undoing an import (`provisioner revert`, the console's undo): every user the import changed
// gets its previous values back (deactivations and archives included; passwords as their
// previous hashes; users it created are deactivated), as a new import in the actor's name. The
// district's report of it is stored in the same transaction and queued from the outbox like a
// release's; the audit trail has every attempt, refused ones too. Refused when a later import
// changed the same users (undoing would overwrite newer data) unless forced.
import type { Config, TenantConfig } from '../config.js';
import { ConfigError, errorMessage } from '../errors.js';
import type { Logger } from '../log.js';
import type { ImportCounts, ImportRow, NewOutcome, RevertResult, Store } from '../store/types.js';
import { ownerIsGone, processId } from '../worker/identity.js';
import { reportOutcomes } from '../worker/reporting.js';

export interface RevertDeps {
  store: Store;
  config: Config;
  log: Logger;
}

export type RevertOutcome = RevertResult & { target: ImportRow };

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? '' : 's'}`;

/**
 * Undoes `importId` of `tenant`. A ConfigError when there is no such import of the tenant; a
 * refusal (ok: false, with the reason) when it cannot or should not be undone.
 */
export async function revertImport(deps: RevertDeps, tenant: TenantConfig, importId: number, opts: { actor: string; force: boolean }): Promise<RevertOutcome> {
  const { store, config } = deps;
  const target = await store.imports.get(importId);
  if (!target || target.tenant !== tenant.id) {
    const recent = (await store.imports.recent(tenant.id, 5)).filter((i) => i.status === 'applied' || i.status === 'applied with errors');
    throw new ConfigError(
      `${tenant.id} has no import ${importId}${recent.length ? `; its latest applied imports: ${recent.map((i) => `${i.id} (${i.epoch}/${i.file})`).join(', ')}` : ''} (see \`provisioner status --tenant ${tenant.id}\`)`,
    );
  }
  const audit = (result: string, detail: string) =>
    store.audit.record({ actor: opts.actor, action: 'revert', tenant: tenant.id, target: `import ${importId}`, result, detail }).catch((err) =>
      deps.log.error({ err: errorMessage(err) }, `could not record the undo in the audit trail: ${errorMessage(err)}`),
    );

  // Never while a run of the tenant applies a file (another process's: its lease).
  let lease = await store.leases.acquireTenant(tenant.id, processId, config.leaseSeconds, ownerIsGone);
  for (const until = Date.now() + config.leaseSeconds * 1000; !lease.ok && Date.now() < until; ) {
    await sleep(250);
    lease = await store.leases.acquireTenant(tenant.id, processId, config.leaseSeconds, ownerIsGone);
  }
  if (!lease.ok) {
    const reason = `${tenant.id} is being processed by ${lease.owner}; try again when that run has finished`;
    await audit('refused', reason);
    return { ok: false, reason, target };
  }
  let result: RevertResult;
  try {
    result = await store.directory.revert({
      tenant: tenant.id, importId, actor: opts.actor, force: opts.force, runId: null,
      outcome: (done) => revertedOutcome(tenant, target, opts.actor, done),
    });
  } finally {
    await store.leases.releaseTenant(tenant.id, processId).catch(() => {});
  }
  if (result.ok) {
    const c = result.counts;
    await audit('reverted', `undone as import ${result.importId}: ${plural(c.updated, 'user')} restored, ${plural(c.deactivated, 'user')} deactivated${opts.force ? ' (forced)' : ''}`);
    deps.log.info({ tenant: tenant.id, import: importId, undoneAs: result.importId, actor: opts.actor, counts: c }, `import ${importId} of ${tenant.id} undone by ${opts.actor}`);
    await reportOutcomes(deps, tenant.id).catch((err) => deps.log.error({ err: errorMessage(err) }, `could not queue the report of the undo: ${errorMessage(err)}; it is queued on the next run`));
  } else {
    await audit('refused', result.reason);
  }
  return { ...result, target };
}

function revertedOutcome(tenant: TenantConfig, target: ImportRow, actor: string, done: { importId: number; counts: ImportCounts }): NewOutcome {
  const c = done.counts;
  const what = `${target.file} of upload ${target.epoch}`;
  const restored = [
    c.updated ? `${plural(c.updated, 'user')} got their previous values back` : '',
    c.deactivated ? `${plural(c.deactivated, 'user')} it had created ${c.deactivated === 1 ? 'was' : 'were'} deactivated` : '',
  ].filter(Boolean);
  return {
    tenant: tenant.id,
    kind: 'reverted',
    dedupeKey: `reverted:${tenant.id}:${done.importId}`,
    epoch: target.epoch,
    filed: true,
    payload: {
      status: 'applied',
      files: [{ file: target.file, kind: target.kind, status: 'applied', message: `undo of import ${target.id}`, counts: c, importId: done.importId }],
      location: null,
      notes: [
        `The changes made by ${what} (import ${target.id}, applied ${target.finishedAt.slice(0, 16).replace('T', ' ')} UTC) were undone by ${actor}.`,
        tenant.loose === 'keep'
          ? 'The same file content is not taken again by itself; if it was right after all, tell us and we will apply it again.'
          : 'If the upload was right after all, upload it again as a new upload and it will be applied.',
      ],
      staleUploads: [],
      operators: false,
      headline: `${what} was undone: ${restored.length ? restored.join('; ') : 'no user needed a change'}.`,
      summary: `${target.file} undone`,
      finishedAt: new Date().toISOString(),
    },
  };
}
