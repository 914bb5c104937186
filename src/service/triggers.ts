// Tier-2 triggers: `provisioner trigger` writes a row, the running daemon takes it (whoever
// sets picked_up_at first owns it, so two daemons never both run it), runs the tenant and
// writes the outcome back for `trigger --wait`. A trigger taken by a daemon that stopped
// before running it goes back to pending and is taken again.
import os from 'node:os';
import type { Db } from '../db/database.js';
import { workerId } from '../worker/leases.js';
import { daemonIsLive } from './daemons.js';

export interface TriggerRow {
  id: number;
  tenant: string;
  requested_at: string;
  requested_by: string | null;
  picked_up_at: string | null;
  picked_up_by: string | null;
  run_id: number | null;
  finished_at: string | null;
  status: string | null;
  message: string | null;
}

/** `$USER@host`: who asked, for the audit trail. */
export function requester(): string {
  let user = process.env.USER ?? process.env.LOGNAME;
  if (!user) {
    try {
      user = os.userInfo().username;
    } catch {
      user = 'unknown';
    }
  }
  return `${user}@${os.hostname()}`;
}

export function requestTrigger(db: Db, tenant: string, requestedBy: string = requester()): number {
  return Number(
    db.prepare('INSERT INTO triggers (tenant, requested_at, requested_by) VALUES (?, ?, ?)').run(tenant, new Date().toISOString(), requestedBy)
      .lastInsertRowid,
  );
}

export function readTrigger(db: Db, id: number): TriggerRow | undefined {
  return db.prepare('SELECT * FROM triggers WHERE id = ?').get(id) as TriggerRow | undefined;
}

/** Waiting triggers, oldest first. */
export function pendingTriggers(db: Db, tenant?: string): TriggerRow[] {
  const byTenant = tenant === undefined ? '' : ' AND tenant = @tenant';
  return db.prepare(`SELECT * FROM triggers WHERE picked_up_at IS NULL${byTenant} ORDER BY id`).all({ tenant }) as TriggerRow[];
}

/** Takes a trigger for this process; false when another daemon was first. */
export function pickUpTrigger(db: Db, id: number): boolean {
  return (
    db.prepare('UPDATE triggers SET picked_up_at = ?, picked_up_by = ? WHERE id = ? AND picked_up_at IS NULL').run(new Date().toISOString(), workerId, id)
      .changes === 1
  );
}

export function finishTriggers(db: Db, ids: number[], outcome: { runId: number | null; status: string; message: string | null }): void {
  const stmt = db.prepare('UPDATE triggers SET run_id = ?, status = ?, message = ?, finished_at = ? WHERE id = ?');
  const at = new Date().toISOString();
  db.transaction(() => {
    for (const id of ids) stmt.run(outcome.runId, outcome.status, outcome.message, at, id);
  })();
}

/** Hands triggers this process took back to whoever runs next (shutdown before running them). */
export function releaseTriggers(db: Db, ids: number[]): void {
  const stmt = db.prepare('UPDATE triggers SET picked_up_at = NULL, picked_up_by = NULL WHERE id = ? AND finished_at IS NULL');
  db.transaction(() => {
    for (const id of ids) stmt.run(id);
  })();
}

/** Triggers taken by daemons that died before finishing them: pending again. Returns how many. */
export function recoverOrphanedTriggers(db: Db): number {
  const taken = db
    .prepare('SELECT id, picked_up_by FROM triggers WHERE picked_up_at IS NOT NULL AND finished_at IS NULL AND picked_up_by IS NOT NULL')
    .all() as { id: number; picked_up_by: string }[];
  const orphaned = taken.filter((t) => t.picked_up_by !== workerId && !daemonIsLive(db, t.picked_up_by)).map((t) => t.id);
  releaseTriggers(db, orphaned);
  return orphaned.length;
}
