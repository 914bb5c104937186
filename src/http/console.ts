// The console's pages (GET; any signed-in user): the tenants (50 a page, searched across all of
// them; the store is asked about the page's tenants only, so ten thousand are as quick as ten),
// one tenant (runs, imports, held and stale uploads, mail, the audit trail, its configuration
// with secrets hidden), one import (counts, where the upload is now, row errors a page at a time,
// errors.csv and result.json), the user directory and one user's history, and a trigger's
// progress. All from the store.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { toYaml } from '../yaml.js';
import type { TenantConfig } from '../config.js';
import { writeErrorsCsv } from '../import/errors-csv.js';
import { feedOf, feedTimes } from '../service/overdue.js';
import { nextRunOf } from '../service/schedule.js';
import { liveDaemons, tenantStatus } from '../service/status.js';
import { userHistory } from '../service/user-history.js';
import type { ImportRow, Outcome, Store } from '../store/types.js';
import { errorsCsvName } from '../worker/epoch.js';
import type { Auth } from './auth.js';
import { HttpError } from './http-error.js';
import type { HttpDeps } from './server.js';
import { renderPage } from './views.js';

const PAGE = 50;
type Query = Record<string, string | undefined>;

export const tenantOf = (deps: HttpDeps, id: string): TenantConfig => {
  const t = deps.config.tenants.find((x) => x.id === id);
  if (!t) throw new HttpError(404, `There is no tenant "${id}" in the configuration.`);
  return t;
};

/** The tenant typed into the user lookup: its id, or the one tenant whose id or name holds the text. */
function findTenant(deps: HttpDeps, text: string): TenantConfig {
  const needle = text.trim().toLowerCase();
  if (!needle) throw new HttpError(404, 'Type the id (or name) of the tenant whose users to look up.');
  const exact = deps.config.tenants.find((t) => t.id === needle);
  if (exact) return exact;
  const found = deps.config.tenants.filter((t) => t.id.includes(needle) || t.name.toLowerCase().includes(needle));
  if (found.length === 1) return found[0];
  if (found.length === 0) throw new HttpError(404, `No tenant's id or name holds "${text.trim()}".`);
  const some = found.slice(0, 10).map((t) => t.id).join(', ');
  throw new HttpError(404, `${found.length} tenants match "${text.trim()}" (${some}${found.length > 10 ? ', …' : ''}): type the tenant's id.`);
}

export const importOf = async (store: Store, tenant: TenantConfig, idText: string): Promise<ImportRow> => {
  const imp = /^\d{1,15}$/.test(idText) ? await store.imports.get(Number(idText)) : null;
  if (!imp || imp.tenant !== tenant.id) throw new HttpError(404, `${tenant.id} has no import ${idText}.`);
  return imp;
};

export const sendPage = (reply: FastifyReply, req: FastifyRequest, name: string, data: Record<string, unknown>) =>
  reply.type('text/html; charset=utf-8').send(renderPage(name, data, req.user));

const pageOf = (q: Query) => Math.max(1, Math.min(100_000, Number.parseInt(q.page ?? '1', 10) || 1));

/** The tenant's configuration as the file has it, secrets replaced. */
function shownConfig(t: TenantConfig): string {
  const hidden = (v: string | undefined) => (v === undefined ? undefined : '(hidden)');
  return toYaml({ ...t, sftp: { ...t.sftp, password: hidden(t.sftp.password), passphrase: hidden(t.sftp.passphrase) } });
}

/** Where an epoch's upload is now on the SFTP host, by the latest outcome that placed it. */
const placeOf = (outcomes: Outcome[]) => outcomes.find((o) => o.payload.location) ?? null;

export function registerConsole(app: FastifyInstance, deps: HttpDeps, auth: Auth): void {
  const { store, config } = deps;
  const signedIn = { preHandler: auth.requireUser };

  app.get('/', signedIn, async (req, reply) => {
    const query = req.query as Query;
    const q = (query.q ?? '').trim();
    const onlyOverdue = query.overdue === '1';
    // Searching and the feeds are worked out in memory for every configured tenant (one read of
    // the store for all); the store is asked about the tenants of this page only.
    const [daemons, times] = await Promise.all([liveDaemons(store), feedTimes(store)]);
    const feeds = new Map(config.tenants.map((t) => [t.id, feedOf(t, times)]));
    const overdue = [...feeds.values()].filter((f) => f.overdue).length;
    const needle = q.toLowerCase();
    const matching = config.tenants.filter(
      (t) => (!needle || t.id.toLowerCase().includes(needle) || t.name.toLowerCase().includes(needle)) && (!onlyOverdue || feeds.get(t.id)!.overdue),
    );
    const pages = Math.max(1, Math.ceil(matching.length / PAGE));
    const page = Math.min(pageOf(query), pages);
    const shown = matching.slice((page - 1) * PAGE, page * PAGE);
    const seen = await store.overview.tenants(shown.map((t) => t.id));
    const rows = shown.map((t) => {
      const o = seen.get(t.id);
      return {
        tenant: t.id, name: t.name, enabled: t.enabled, nextRun: nextRunOf(t)?.toISOString() ?? null, feed: feeds.get(t.id)!,
        lastRun: o?.lastRun ?? null, held: o?.held ?? 0, stale: o?.stale ?? 0, mailQueued: o?.mailQueued ?? 0, mailFailed: o?.mailFailed ?? 0,
        served: daemons.some((d) => d.tenants.includes(t.id)),
      };
    });
    const href = (n: number) => {
      const params = new URLSearchParams({ ...(q ? { q } : {}), ...(onlyOverdue ? { overdue: '1' } : {}), ...(n > 1 ? { page: String(n) } : {}) }).toString();
      return params ? `/?${params}` : '/';
    };
    return sendPage(reply, req, 'tenants', {
      title: 'Tenants', q, onlyOverdue, rows, daemons, total: config.tenants.length, overdue, matching: matching.length, filtered: !!q || onlyOverdue,
      page, pages, first: shown.length ? (page - 1) * PAGE + 1 : 0, last: (page - 1) * PAGE + shown.length,
      prev: page > 1 ? href(page - 1) : null, next: page < pages ? href(page + 1) : null,
    });
  });

  app.get('/users', signedIn, async (req, reply) => {
    const { tenant, q } = req.query as Query;
    const t = findTenant(deps, tenant ?? '');
    return reply.redirect(`/tenants/${encodeURIComponent(t.id)}/users?q=${encodeURIComponent(q ?? '')}`, 303);
  });

  app.get('/tenants/:id', signedIn, async (req, reply) => {
    const t = tenantOf(deps, (req.params as { id: string }).id);
    const page = pageOf(req.query as Query);
    const [daemons, times] = await Promise.all([liveDaemons(store), feedTimes(store)]);
    const [status, runs, imports, mail, outcomes] = await Promise.all([
      tenantStatus(store, t, daemons, 20, times),
      store.runs.recent(t.id, 10),
      store.imports.recent(t.id, PAGE + 1, (page - 1) * PAGE),
      store.mail.list(t.id, 10),
      store.outbox.recent(t.id, 200),
    ]);
    const undone = new Set(imports.map((i) => i.revertsImportId).filter((x) => x !== null));
    const rows = imports.slice(0, PAGE).map((i) => ({
      ...i,
      location: placeOf(outcomes.filter((o) => o.epoch === i.epoch))?.payload.location ?? null,
      canUndo: (i.status === 'applied' || i.status === 'applied with errors') && !undone.has(i.id),
    }));
    return sendPage(reply, req, 'tenant', {
      title: t.name, t, status, runs, imports: rows, mail, page, prev: page > 1 ? page - 1 : null, next: imports.length > PAGE ? page + 1 : null,
      configYaml: shownConfig(t),
    });
  });

  app.get('/tenants/:id/imports/:importId', signedIn, async (req, reply) => {
    const { id, importId } = req.params as { id: string; importId: string };
    const t = tenantOf(deps, id);
    const imp = await importOf(store, t, importId);
    const page = pageOf(req.query as Query);
    const [errors, outcomes, recent] = await Promise.all([
      store.imports.errors(imp.id, PAGE + 1, (page - 1) * PAGE),
      store.outbox.ofEpoch(t.id, imp.epoch),
      store.imports.recent(t.id, 200),
    ]);
    const place = placeOf(outcomes);
    return sendPage(reply, req, 'import', {
      title: `Import ${imp.id}`, t, imp, errors: errors.slice(0, PAGE), page, prev: page > 1 ? page - 1 : null, next: errors.length > PAGE ? page + 1 : null,
      location: place?.payload.location ?? null, locationNote: place?.payload.locationNote ?? null,
      undoneBy: recent.find((r) => r.revertsImportId === imp.id)?.id ?? null,
      canUndo: imp.status === 'applied' || imp.status === 'applied with errors',
      hasErrorsCsv: imp.counts.failed > 0 && imp.header !== null,
    });
  });

  app.get('/tenants/:id/imports/:importId/errors.csv', signedIn, async (req, reply) => {
    const { id, importId } = req.params as { id: string; importId: string };
    const t = tenantOf(deps, id);
    const imp = await importOf(store, t, importId);
    if (!imp.header || imp.counts.failed === 0) throw new HttpError(404, `Import ${imp.id} has no failed rows, so no errors.csv.`);
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'provisioner-console-'));
    try {
      const file = path.join(tmp, 'errors.csv');
      await writeErrorsCsv(file, imp.header, store.imports.errorRows(imp.id));
      const body = fs.readFileSync(file);
      return reply
        .type('text/csv; charset=utf-8')
        .header('Content-Disposition', `attachment; filename="${t.id}-import-${imp.id}-errors.csv"`)
        .send(body);
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  });

  app.get('/tenants/:id/imports/:importId/result.json', signedIn, async (req, reply) => {
    const { id, importId } = req.params as { id: string; importId: string };
    const t = tenantOf(deps, id);
    const imp = await importOf(store, t, importId);
    const outcome = (await store.outbox.ofEpoch(t.id, imp.epoch)).find((o) => o.kind !== 'reverted' && o.payload.files.some((f) => f.importId === imp.id));
    // As the worker wrote it beside the upload: the epoch's files from its outcome (or this import alone).
    const files = outcome?.payload.files ?? [{ file: imp.file, kind: imp.kind, status: imp.status, message: imp.message, counts: imp.counts, importId: imp.id }];
    const result = {
      tenant: t.id,
      epoch: imp.epoch,
      status: outcome?.payload.status ?? imp.status,
      processedAt: outcome?.payload.finishedAt ?? imp.finishedAt,
      files: files.map((f, i) => ({ file: f.file, kind: f.kind || null, status: f.status, message: f.message, ...f.counts, errorsCsv: f.counts.failed > 0 && f.importId !== null ? errorsCsvName(f.file, files.length, i) : null })),
    };
    return reply
      .type('application/json; charset=utf-8')
      .header('Content-Disposition', `attachment; filename="${t.id}-${imp.epoch}-result.json"`)
      .send(JSON.stringify(result, null, 2) + '\n');
  });

  app.get('/tenants/:id/users', signedIn, async (req, reply) => {
    const t = tenantOf(deps, (req.params as { id: string }).id);
    const q = ((req.query as Query).q ?? '').trim();
    const page = pageOf(req.query as Query);
    const users = await store.directory.users(t.id, { search: q || undefined, limit: PAGE + 1, offset: (page - 1) * PAGE });
    return sendPage(reply, req, 'users', { title: `Users of ${t.name}`, t, q, users: users.slice(0, PAGE), page, prev: page > 1 ? page - 1 : null, next: users.length > PAGE ? page + 1 : null });
  });

  app.get('/tenants/:id/users/:externalId', signedIn, async (req, reply) => {
    const { id, externalId } = req.params as { id: string; externalId: string };
    const t = tenantOf(deps, id);
    const history = await userHistory(store, t.id, externalId);
    const u = await store.directory.user(t.id, history.externalId);
    if (!u && history.changes.length === 0) throw new HttpError(404, `${t.id} has no user "${externalId}".`);
    const shown = u ? { ...u, raw: undefined } : null;
    const changes = history.changes.map((c) => ({ ...c, changes: c.changes.map((f) => ({ field: f.field, from: show(f.from), to: show(f.to) })) })).reverse();
    return sendPage(reply, req, 'user', { title: `${history.externalId} of ${t.name}`, t, externalId: history.externalId, u: shown, changes });
  });

  app.get('/tenants/:id/triggers/:triggerId', signedIn, async (req, reply) => {
    const { id, triggerId } = req.params as { id: string; triggerId: string };
    const t = tenantOf(deps, id);
    const trigger = /^\d{1,15}$/.test(triggerId) ? await store.triggers.get(Number(triggerId)) : null;
    if (!trigger || trigger.tenant !== t.id) throw new HttpError(404, `${t.id} has no trigger ${triggerId}.`);
    const imports = trigger.runId !== null ? await store.imports.byRun(trigger.runId) : [];
    const serving = (await liveDaemons(store)).some((d) => d.tenants.includes(t.id));
    return sendPage(reply, req, 'trigger', { title: `Run now: ${t.name}`, t, trigger, imports, serving, refresh: trigger.finishedAt ? undefined : 2 });
  });
}

/** A history value as text (attributes as JSON; a password only ever as "(hidden)"). */
function show(v: unknown): string {
  if (v === null || v === undefined) return '(empty)';
  return typeof v === 'string' ? v : JSON.stringify(v);
}
