// The console's pages (GET; any signed-in user): the tenants, one tenant (runs, imports, held
// and stale uploads, mail, the audit trail, its configuration with secrets hidden), one import
// (counts, where the upload is now, row errors a page at a time, errors.csv and result.json),
// the user directory and one user's history, and a trigger's progress. All from the store.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { toYaml } from '../yaml.js';
import type { TenantConfig } from '../config.js';
import { writeErrorsCsv } from '../import/errors-csv.js';
import { feedTimes } from '../service/overdue.js';
import { liveDaemons, tenantStatus, type TenantStatus } from '../service/status.js';
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
    const q = ((req.query as Query).q ?? '').trim();
    const needle = q.toLowerCase();
    const tenants = config.tenants.filter((t) => !needle || t.id.includes(needle) || t.name.toLowerCase().includes(needle));
    const [daemons, times] = await Promise.all([liveDaemons(store), feedTimes(store)]);
    const rows: TenantStatus[] = await Promise.all(tenants.map((t) => tenantStatus(store, t, daemons, 1, times)));
    return sendPage(reply, req, 'tenants', {
      title: 'Tenants', q, rows, daemons, all: config.tenants, total: config.tenants.length, overdue: rows.filter((r) => r.feed.overdue).length,
    });
  });

  app.get('/users', signedIn, async (req, reply) => {
    const { tenant, q } = req.query as Query;
    const t = tenantOf(deps, tenant ?? '');
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
