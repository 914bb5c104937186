// From the outbox to the mail queue. Every outcome was stored in the transaction that decided
// it; here each filed, unreported outcome is turned into the district's report (and the
// operators' notice for holds and failures), rendered from the stored outcome and the database
// (row errors, errors.csv), and queued in the same transaction that marks it reported. A crash
// anywhere in between only means it is done on the next pass, never twice and never lost.
import type { Config, TenantConfig } from '../config.js';
import { writeErrorsCsv } from '../import/errors-csv.js';
import type { Logger } from '../log.js';
import { MAX_ATTACHMENT_BYTES, renderNotice, renderReport, shouldNotify, type EpochReport, type FileReport } from '../mail/report.js';
import type { OmittedAttachment } from '../mail/view.js';
import type { NewMail, Outcome, QueuedAttachment, Store } from '../store/types.js';
import { errorsCsvName } from './epoch.js';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const SAMPLE = 10;

/** Tenants by id, once per configuration: a run of each of 10,000 tenants must not build 10,000 maps. */
const byId = new WeakMap<Config, Map<string, TenantConfig>>();
function tenantsById(config: Config): Map<string, TenantConfig> {
  let map = byId.get(config);
  if (!map) byId.set(config, (map = new Map(config.tenants.map((t) => [t.id, t]))));
  return map;
}

/** Queues the reports of a tenant's (or every tenant's) unreported outcomes. Returns how many mails. */
export async function reportOutcomes(deps: { store: Store; config: Config; log: Logger }, tenant?: string): Promise<number> {
  const { store, config } = deps;
  const tenants = tenantsById(config);
  let queued = 0;
  for (const outcome of await store.outbox.unreported(tenant)) {
    const t = tenants.get(outcome.tenant);
    const mail = t ? await mailFor(store, config, t, outcome) : [];
    await store.outbox.markReported(outcome.id, mail);
    queued += mail.length;
    if (mail.length) deps.log.info({ tenant: outcome.tenant, outcome: outcome.id, to: mail.flatMap((m) => m.to) }, `report queued: ${mail[0].subject}`);
  }
  return queued;
}

/** The report of one outcome, or nothing when nobody is to be told. */
export async function mailFor(store: Store, config: Config, tenant: TenantConfig, outcome: Outcome): Promise<NewMail[]> {
  const report = await reportOf(store, tenant, outcome);
  // An overdue feed is the operators' business: they ask the district, who may not know yet.
  const notice = outcome.kind === 'overdue';
  // A release, discard or undo is an operator's decision about the district's data: it hears of it.
  const closing = (outcome.kind === 'released' || outcome.kind === 'discarded' || outcome.kind === 'reverted') && tenant.notify.when !== 'never';
  const toTenant = !notice && (closing || shouldNotify(tenant.notify.when, report)) ? tenant.notify.to : [];
  const toOperators = outcome.payload.operators ? config.mail.operators : [];
  const to = [...new Set([...toTenant, ...toOperators])];
  if (to.length === 0) return [];
  const { kept, omitted } = await attachments(store, outcome, report);
  const rendered = notice ? renderNotice(report) : renderReport(report, tenant.notify.templates, { omitted });
  return [
    {
      tenant: tenant.id,
      dedupeKey: `outcome:${outcome.id}`,
      from: config.mail.from,
      to,
      replyTo: tenant.notify.replyTo ?? null,
      subject: rendered.subject,
      text: rendered.text,
      html: rendered.html,
      attachments: kept,
    },
  ];
}

export async function reportOf(store: Store, tenant: TenantConfig, outcome: Outcome): Promise<EpochReport> {
  const p = outcome.payload;
  const n = p.files.length;
  const files: FileReport[] = [];
  for (const [i, f] of p.files.entries()) {
    const sample = f.importId !== null && f.counts.failed > 0 ? await store.imports.errors(f.importId, SAMPLE) : [];
    files.push({
      file: f.file,
      kind: f.kind,
      status: f.status,
      message: f.message,
      counts: f.counts,
      sampleErrors: sample.map((e) => `line ${e.line}: ${e.column ? `${e.column}${e.value ? ` "${e.value}"` : ''}: ` : ''}${e.reason}`),
      errorsCsvName: f.counts.failed > 0 && f.importId !== null ? errorsCsvName(f.file, n, i) : null,
    });
  }
  return {
    tenantId: tenant.id,
    tenantName: tenant.name,
    epoch: outcome.epoch ?? '',
    status: p.status,
    files,
    staleUploads: p.staleUploads,
    dryRun: false,
    finishedAt: p.finishedAt,
    bakPath: p.location,
    notes: [...p.notes, ...(p.locationNote ? [p.locationNote] : [])],
    headline: p.headline ?? null,
    summary: p.summary ?? null,
    misfiled: p.misfiled === true,
  };
}

/** errors.csv of each file with failed rows, rebuilt from the database (a crash may have lost the local copy). */
async function attachments(store: Store, outcome: Outcome, report: EpochReport): Promise<{ kept: QueuedAttachment[]; omitted: OmittedAttachment[] }> {
  const kept: QueuedAttachment[] = [];
  const omitted: OmittedAttachment[] = [];
  for (const [i, f] of outcome.payload.files.entries()) {
    const name = report.files[i].errorsCsvName;
    if (!name || f.importId === null) continue;
    const row = await store.imports.get(f.importId);
    if (!row?.header) continue;
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'provisioner-report-'));
    try {
      const file = path.join(tmp, 'errors.csv');
      await writeErrorsCsv(file, row.header, store.imports.errorRows(f.importId));
      const size = fs.statSync(file).size;
      if (size > MAX_ATTACHMENT_BYTES) omitted.push({ filename: name, size });
      else kept.push({ filename: name, contentType: 'text/csv; charset=utf-8', content: fs.readFileSync(file).toString('base64') });
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  }
  return { kept, omitted };
}
