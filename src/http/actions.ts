// The console's actions (operators only): run now, release or discard a held upload, resend a
// report, undo an import. Each is a page that says what it will do and asks for confirmation
// (GET), then a form POST carrying the CSRF token that does it and shows what came of it. Every
// one is in the audit trail (who, when, what, result) and so on the tenant page and in `status`.
// What touches a tenant's directory or uploads runs through the daemon's exclusive(), never
// beside a run of that tenant.
import crypto from 'node:crypto';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { TenantConfig } from '../config.js';
import { ConfigError } from '../errors.js';
import { deliverMail } from '../service/housekeeping.js';
import { previewRelease } from '../service/release-preview.js';
import { revertImport } from '../service/revert.js';
import { resolveHeld, type HeldAction } from '../worker/held.js';
import type { Auth } from './auth.js';
import { importOf, sendPage, tenantOf } from './console.js';
import { HttpError } from './http-error.js';
import { when } from './views.js';
import type { HttpDeps } from './server.js';

type Params = Record<string, string>;
const enc = encodeURIComponent;

export function registerActions(app: FastifyInstance, deps: HttpDeps, auth: Auth): void {
  const { store } = deps;
  const operator = { preHandler: auth.requireOperator };
  const audit = (req: FastifyRequest, t: TenantConfig, action: string, target: string | null, result: string, detail: string | null) =>
    store.audit.record({ actor: auth.actor(req.user!), action, tenant: t.id, target, result, detail });
  // Sent now when the mail server answers; queued mail is retried by the daemon anyway.
  const mailNow = (t: TenantConfig) => deliverMail(deps, t.id);
  const confirm = (req: FastifyRequest, reply: Parameters<typeof sendPage>[0], data: Record<string, unknown>) => sendPage(reply, req, 'confirm', data);

  // --- run now ---------------------------------------------------------------------------------
  app.get('/tenants/:id/run', operator, async (req, reply) => {
    const t = tenantOf(deps, (req.params as Params).id);
    return confirm(req, reply, {
      title: `Run ${t.name} now`, t, action: `/tenants/${enc(t.id)}/run`, button: 'Run now',
      lines: [
        `A daemon serving ${t.id} takes the request within seconds and processes whatever is ready in its upload folder, as at a scheduled run.`,
        'The district gets its usual report.',
      ],
    });
  });

  app.post('/tenants/:id/run', operator, async (req, reply) => {
    auth.checkCsrf(req);
    const t = tenantOf(deps, (req.params as Params).id);
    if (!t.enabled) {
      // Refused requests are in the audit trail too: "I pressed Run now and nothing happened" is answered there.
      const why = `${t.id} is disabled (enabled: false): no daemon runs it.`;
      await audit(req, t, 'run now', null, 'refused', why);
      throw new HttpError(409, why);
    }
    const id = await store.triggers.request(t.id, auth.actor(req.user!));
    await audit(req, t, 'run now', `trigger ${id}`, 'requested', null);
    return reply.redirect(`/tenants/${enc(t.id)}/triggers/${id}`, 303);
  });

  // --- release / discard a held upload ----------------------------------------------------------
  for (const action of ['release', 'discard'] as HeldAction[]) {
    app.get(`/tenants/:id/held/:epoch/${action}`, operator, async (req, reply) => {
      const { id, epoch } = req.params as Params;
      const t = tenantOf(deps, id);
      const held = await store.imports.heldImport(t.id, epoch);
      if (!held) throw new HttpError(404, `${t.id} has no held upload ${epoch}.`);
      const c = held.counts;
      const release = action === 'release' && held.supersededBy === null;
      // What it would deactivate now, read again from the held file (not only the estimate made when it was held).
      const preview = release ? await previewRelease(deps.runDeps(), t, held) : null;
      const lines =
        action === 'release'
          ? held.supersededBy !== null
            ? [`Import ${held.supersededBy} was applied since this upload was held: releasing it now files it away as superseded, unapplied (it would undo newer data).`]
            : [
                preview!.now
                  ? `Releasing applies ${held.file} of ${held.epoch} although it deactivates more users than the safety limit allows: ${preview!.total} of the ${preview!.active} active user(s) are missing from it and would be deactivated now${preview!.total === c.deactivated ? '' : ` (${c.deactivated} when it was held)`}.`
                  : `Releasing applies ${held.file} of ${held.epoch} although it deactivates more users than the safety limit allows: ${c.deactivated} user(s) missing from it would be deactivated.`,
                ...(preview!.note ? [preview!.note] : []),
                'The district is told it was released.',
              ]
          : [`Discarding files ${held.file} of ${held.epoch} away in bak without applying anything. The district is told.`];
      return confirm(req, reply, {
        title: `${action === 'release' ? 'Release' : 'Discard'} held upload ${held.epoch}`, t, action: `/tenants/${enc(t.id)}/held/${enc(epoch)}/${action}`,
        button: action === 'release' ? 'Release and apply' : 'Discard', danger: action === 'release', lines, held,
        details: [
          ['Held since', when(held.heldAt)], ['Why', held.message ?? ''], ['Where it waits', held.location ?? '(unknown)'], ['Rows', String(c.rows)],
          ...(preview?.now ? [['Would deactivate now', String(preview.total)], ['When it was held', String(c.deactivated)]] : [['Would deactivate', String(c.deactivated)]]),
          ['Failed rows', String(c.failed)],
        ],
        affected: preview?.sample.length
          ? { users: preview.sample, total: preview.total, more: preview.total - preview.sample.length, caption: `Users it would deactivate${preview.total > preview.sample.length ? `: the first ${preview.sample.length} of ${preview.total}, by id` : ''}` }
          : null,
      });
    });

    app.post(`/tenants/:id/held/:epoch/${action}`, operator, async (req, reply) => {
      auth.checkCsrf(req);
      const { id, epoch } = req.params as Params;
      const t = tenantOf(deps, id);
      const actor = auth.actor(req.user!);
      let result;
      try {
        result = await deps.daemon.exclusive(t.id, () => resolveHeld(deps.runDeps(), t, epoch, action, actor));
      } catch (err) {
        if (!(err instanceof ConfigError)) throw err;
        await audit(req, t, action, epoch, 'refused', err.message);
        throw new HttpError(409, err.message);
      }
      await mailNow(t);
      const outcome = result.epochs[0];
      return sendPage(reply, req, 'result', {
        title: `${action === 'release' ? 'Release' : 'Discard'}: ${epoch}`, t, status: result.status,
        headline: result.message ?? `${epoch}: ${outcome?.status ?? result.status}`,
        lines: [...(outcome?.remotePath ? [`The upload is now at ${outcome.remotePath} on the SFTP host.`] : []), ...(outcome?.notes ?? [])],
        files: outcome?.files ?? [],
      });
    });
  }

  // --- resend a report --------------------------------------------------------------------------
  app.get('/tenants/:id/mail/:mailId/resend', operator, async (req, reply) => {
    const { id, mailId } = req.params as Params;
    const t = tenantOf(deps, id);
    const m = /^\d{1,15}$/.test(mailId) ? await store.mail.get(Number(mailId)) : null;
    if (!m || m.tenant !== t.id) throw new HttpError(404, `${t.id} has no message ${mailId}.`);
    return confirm(req, reply, {
      title: `Resend "${m.subject}"`, t, action: `/tenants/${enc(t.id)}/mail/${m.id}/resend`, button: 'Resend',
      lines: [`A copy is queued and sent to ${m.to.join(', ')}${m.status === 'queued' ? ' (the original is still queued too)' : ''}.`],
      details: [['Subject', m.subject], ['To', m.to.join(', ')], ['Status', m.status], ['Queued', when(m.createdAt)], ['Sent', when(m.sentAt)], ['Last error', m.lastError ?? '—']],
    });
  });

  app.post('/tenants/:id/mail/:mailId/resend', operator, async (req, reply) => {
    auth.checkCsrf(req);
    const { id, mailId } = req.params as Params;
    const t = tenantOf(deps, id);
    const m = /^\d{1,15}$/.test(mailId) ? await store.mail.get(Number(mailId)) : null;
    if (!m || m.tenant !== t.id) throw new HttpError(404, `${t.id} has no message ${mailId}.`);
    const copy = await store.mail.requeue(m.id, `resend:${m.id}:${crypto.randomUUID()}`);
    await audit(req, t, 'resend', `mail ${m.id}`, 'queued', `as message ${copy}: ${m.subject}`);
    await mailNow(t);
    const now = await store.mail.get(copy);
    return sendPage(reply, req, 'result', {
      title: 'Resend', t, status: now?.status ?? 'queued', headline: `"${m.subject}" was queued again as message ${copy}: ${now?.status === 'sent' ? 'sent' : 'it goes out as soon as the mail server takes it'}.`,
      lines: [`To: ${m.to.join(', ')}`, ...(now?.lastError ? [`The mail server said: ${now.lastError}`] : [])],
    });
  });

  // --- undo an import ---------------------------------------------------------------------------
  app.get('/tenants/:id/imports/:importId/undo', operator, async (req, reply) => {
    const { id, importId } = req.params as Params;
    const t = tenantOf(deps, id);
    const imp = await importOf(store, t, importId);
    const c = imp.counts;
    return confirm(req, reply, {
      title: `Undo import ${imp.id}`, t, action: `/tenants/${enc(t.id)}/imports/${imp.id}/undo`, button: 'Undo this import', danger: true,
      lines: [
        `Every user that ${imp.file} of ${imp.epoch} changed gets its previous values back (e-mails, names, passwords, deactivations, archives); the ${c.created} user(s) it created are deactivated.`,
        'It is recorded as a new import in your name, and the district is told. If a later import changed some of the same users, you are told which before anything changes.',
      ],
      details: [['Applied', when(imp.finishedAt)], ['Status', imp.status], ['By', imp.actor ?? '—'], ['Created', String(c.created)], ['Updated', String(c.updated)], ['Deactivated', String(c.deactivated)], ['Archived', String(c.archived)]],
    });
  });

  app.post('/tenants/:id/imports/:importId/undo', operator, async (req, reply) => {
    auth.checkCsrf(req);
    const { id, importId } = req.params as Params;
    const t = tenantOf(deps, id);
    const imp = await importOf(store, t, importId);
    const force = (req.body as Record<string, unknown>).force === '1';
    const r = await deps.daemon.exclusive(t.id, () => revertImport(deps, t, imp.id, { actor: auth.actor(req.user!), force }));
    if (r.ok) await mailNow(t);
    return sendPage(reply, req, 'result', {
      title: `Undo import ${imp.id}`, t, status: r.ok ? 'reverted' : 'refused',
      headline: r.ok
        ? `Import ${imp.id} was undone as import ${r.importId}: ${r.counts.updated} user(s) got their previous values back, ${r.counts.deactivated} user(s) it created were deactivated.`
        : // The store's reason ends with the CLI's way to force it; here the form below does that.
          `Import ${imp.id} was not undone: ${r.conflicts?.length ? r.reason.replace(/ Pass --force to undo it anyway\.$/, '') : r.reason}`,
      lines: r.ok ? ['The district is told.'] : (r.conflicts ?? []).map((c) => `${c.externalId} was changed since by import ${c.importId}.`),
      conflicts: !r.ok && (r.conflicts?.length ?? 0) > 0 ? r.conflicts : null,
      forceAction: !r.ok && r.conflicts?.length ? `/tenants/${enc(t.id)}/imports/${imp.id}/undo` : null,
      importLink: r.ok ? `/tenants/${enc(t.id)}/imports/${r.importId}` : null,
    });
  });
}

