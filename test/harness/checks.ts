/**
 * Reading back what a run left behind, for the per-source end-to-end tests: the mail queue,
 * bak folders, errors.csv files and the users table, straight from the world's SQLite file and
 * SFTP root.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import Papa from 'papaparse';
import type { World } from './world.js';

export interface QueuedMail {
  to: string[];
  replyTo: string | null;
  subject: string;
  text: string;
  attachments: { filename: string; content: string }[];
}

/** Every report queued so far (sent to the outbox or not), oldest first. */
export function mails(world: World, tenant?: string): QueuedMail[] {
  const rows = world.query<{ mail_to: string; reply_to: string | null; subject: string; text: string; attachments: string }>(
    `SELECT * FROM mail_queue ${tenant ? 'WHERE tenant = ?' : ''} ORDER BY id`,
    ...(tenant ? [tenant] : []),
  );
  return rows.map((r) => ({
    to: JSON.parse(r.mail_to) as string[],
    replyTo: r.reply_to,
    subject: r.subject,
    text: r.text,
    attachments: (JSON.parse(r.attachments) as { filename: string; content: string }[]).map((a) => ({
      filename: a.filename,
      content: Buffer.from(a.content, 'base64').toString('utf8'),
    })),
  }));
}

/** The epoch folders in a remote folder (bak, .held), oldest first. */
export function epochsIn(world: World, remoteDir: string): string[] {
  if (!world.exists(remoteDir)) return [];
  return fs
    .readdirSync(world.remote(remoteDir))
    .filter((n) => /^\d{8}-\d{6}/.test(n))
    .sort();
}

export function listRemote(world: World, remoteDir: string): string[] {
  return fs.readdirSync(world.remote(remoteDir)).sort();
}

/** A remote CSV as rows of cells. */
export function readCsv(world: World, remotePath: string): string[][] {
  return Papa.parse<string[]>(world.read(remotePath).trim()).data;
}

export function resultJson(world: World, remoteDir: string): { status: string; files: Array<Record<string, unknown>> } {
  return JSON.parse(world.read(`${remoteDir}/result.json`)) as { status: string; files: Array<Record<string, unknown>> };
}

export type DbUser = {
  external_id: string;
  kind: string;
  email: string | null;
  username: string | null;
  first_name: string | null;
  last_name: string | null;
  site_id: string | null;
  site_label: string | null;
  password_hash: string | null;
  active: number;
  archived_at: string | null;
  attributes: string;
  updated_by: string | null;
};

export function dbUsers(world: World, tenant: string): DbUser[] {
  if (world.store === 'sqlite' && !fs.existsSync(world.dbPath)) return []; // nothing ever opened it: nothing was applied
  try {
    return world.query<DbUser>('SELECT * FROM users WHERE tenant = ? ORDER BY external_id', tenant);
  } catch (err) {
    if (world.store === 'postgres' && /relation "users" does not exist/.test(String(err))) return []; // never migrated: nothing applied
    throw err;
  }
}

/** Everything the database holds as bytes (the SQLite file and its WAL, or a PostgreSQL dump): for checking that a secret never reached it. */
export function databaseBytes(world: World): Buffer {
  if (world.store === 'postgres') return execFileSync('pg_dump', ['--data-only', world.database]);
  return Buffer.concat([world.dbPath, `${world.dbPath}-wal`].filter((f) => fs.existsSync(f)).map((f) => fs.readFileSync(f)));
}

/** Sets a remote file's or folder's modification time to `hoursAgo` hours ago. */
export function age(world: World, remotePath: string, hoursAgo: number): void {
  const t = new Date(Date.now() - hoursAgo * 3600_000);
  fs.utimesSync(world.remote(remotePath), t, t);
}
