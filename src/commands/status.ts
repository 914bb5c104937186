// `provisioner status`: per tenant, the last run and its result, and recent imports.
import Table from 'cli-table3';
import { openApp, selectTenants } from '../app.js';
import type { Db } from '../db/database.js';

export interface ImportSummary {
  id: number;
  epoch: string;
  file: string;
  kind: string | null;
  status: string;
  message: string | null;
  rows: number;
  created: number;
  updated: number;
  unchanged: number;
  deactivated: number;
  archived: number;
  failed: number;
  startedAt: string;
  finishedAt: string;
}

export interface RunSummary {
  id: number;
  reason: string;
  status: string;
  message: string | null;
  startedAt: string;
  finishedAt: string | null;
}

export interface TenantStatus {
  tenant: string;
  name: string;
  lastRun: RunSummary | null;
  imports: ImportSummary[];
}

export function tenantStatus(db: Db, tenant: { id: string; name: string }, recent = 20): TenantStatus {
  const run = db.prepare('SELECT * FROM runs WHERE tenant = ? ORDER BY id DESC LIMIT 1').get(tenant.id) as Record<string, unknown> | undefined;
  const imports = db.prepare('SELECT * FROM imports WHERE tenant = ? ORDER BY id DESC LIMIT ?').all(tenant.id, recent) as Record<string, unknown>[];
  return {
    tenant: tenant.id,
    name: tenant.name,
    lastRun: run
      ? {
          id: Number(run.id),
          reason: String(run.reason),
          status: String(run.status),
          message: (run.message as string | null) ?? null,
          startedAt: String(run.started_at),
          finishedAt: (run.finished_at as string | null) ?? null,
        }
      : null,
    imports: imports.map((r) => ({
      id: Number(r.id),
      epoch: String(r.epoch),
      file: String(r.file),
      kind: (r.kind as string | null) ?? null,
      status: String(r.status),
      message: (r.message as string | null) ?? null,
      rows: Number(r.rows),
      created: Number(r.created),
      updated: Number(r.updated),
      unchanged: Number(r.unchanged),
      deactivated: Number(r.deactivated),
      archived: Number(r.archived),
      failed: Number(r.failed),
      startedAt: String(r.started_at),
      finishedAt: String(r.finished_at),
    })),
  };
}

export function statusCommand(flags: { config?: string; tenant?: string[]; json?: boolean }): number {
  const app = openApp(flags.config);
  try {
    const statuses = selectTenants(app.config, flags.tenant).map((t) => tenantStatus(app.db, t));
    if (flags.json) {
      process.stdout.write(JSON.stringify(statuses, null, 2) + '\n');
      return 0;
    }
    const out: string[] = [];
    for (const s of statuses) {
      const r = s.lastRun;
      out.push(`${s.name} (${s.tenant})`);
      out.push(`  last run: ${r ? `${r.startedAt} (${r.reason}) ${r.status}${r.message ? `: ${r.message}` : ''}` : 'never'}`);
      if (s.imports.length) {
        const t = new Table({ head: ['epoch', 'file', 'status', 'rows', 'created', 'updated', 'unchanged', 'deact.', 'archived', 'failed'], style: { head: [], border: [] } });
        for (const i of s.imports) t.push([i.epoch, i.file, i.status, i.rows, i.created, i.updated, i.unchanged, i.deactivated, i.archived, i.failed]);
        out.push(t.toString().replace(/^/gm, '  '));
      }
    }
    process.stdout.write(out.join('\n') + '\n');
    return 0;
  } finally {
    app.close();
  }
}
