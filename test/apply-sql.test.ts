// The SQLite apply's comparison of staged rows with the directory (src/store/sqlite/apply-sql.ts)
// skips the full comparison for a row that is surely unchanged. The shortcut must never hide a
// change: over thousands of stored/staged pairs drawn from values that make every branch of the
// comparison matter (archived users, kinds, e-mails with the archive suffix, passwords, attributes,
// NULLs), under every option and in a dry run, it selects exactly the rows, actions, fields and
// old values the full comparison selects.
import Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import { changedRowsSql } from '../src/store/sqlite/apply-sql.js';
import { migrations } from '../src/store/sqlite/migrations.js';
import { partTablesSql } from '../src/store/sqlite/stage-part.js';
import { stageColumns } from '../src/store/types.js';
import { prng } from './harness/prng.js';


const ALL = { email: true, username: true, firstName: true, lastName: true, role: true, siteId: true, siteLabel: true, password: true, attributes: true };
const NONE = { email: false, username: false, firstName: false, lastName: false, role: false, siteId: false, siteLabel: false, password: false, attributes: false };
const EMAIL_AND_NAMES = { ...NONE, email: true, firstName: true, lastName: true };

function directory(rows: number, seed: number, present: typeof ALL): Database.Database {
  const rand = prng(seed);
  const pick = <T,>(...values: T[]): T => values[Math.floor(rand() * values.length)];
  const db = new Database(':memory:');
  for (const m of migrations) db.exec(m.sql);
  const columns = stageColumns(present);
  db.exec(partTablesSql(columns).replace(/CREATE TABLE (\w+)/g, 'CREATE TEMP TABLE $1'));
  const insertUser = db.prepare(
    `INSERT INTO users (tenant, external_id, kind, email, username, first_name, last_name, role, site_id, site_label, password_hash, password_digest,
                        active, archived_at, attributes, created_at, updated_at)
     VALUES (@tenant, @key, @kind, @email, @username, @first_name, @last_name, @role, @site_id, @site_label, @password_hash, @password_digest,
             @active, @archived_at, @attributes, 'then', 'then')`,
  );
  const insertRow = db.prepare(`INSERT INTO temp.rows (${columns.join(', ')}, pw_hash, pw_same) VALUES (${columns.map((c) => `@${c}`).join(', ')}, @pw_hash, @pw_same)`);
  for (let i = 0; i < rows; i++) {
    const key = `u${i}`;
    const stored = {
      tenant: 't', key, kind: pick('k', 'k', 'other'),
      email: pick(`${key}@x.org`, `${key}@x.org_2024`, null), username: pick(key, `${key}_2024`, null),
      first_name: pick('Ada', null, ''), last_name: pick('Byron', null), role: pick('student', 'staff', null),
      site_id: pick('S1', 'S2', null), site_label: pick('North', null), password_hash: pick('$scrypt$a', null),
      password_digest: pick('d1', 'd2', null), active: pick(1, 1, 0), archived_at: pick(null, null, '2024-06-01'),
      attributes: pick('{}', '{"grade":"5"}'),
    };
    // Three in four users come with a row (the rest exist only in the directory); one in ten rows
    // is a new user. A staged value is mostly the stored one, sometimes another or none.
    if (rand() < 0.9) insertUser.run(stored);
    if (rand() < 0.25) continue;
    const near = <T,>(value: T, ...others: T[]): T => (rand() < 0.7 ? value : pick(...others));
    const row: Record<string, unknown> = {
      line: i + 2, key, active: near(stored.active, 0, 1),
      email: near(stored.email, `${key}@new.org`, `${key}@x.org`, null), username: near(stored.username, key, null),
      first_name: near(stored.first_name, 'Ada', null), last_name: near(stored.last_name, 'King', null), role: near(stored.role, 'teacher', null),
      site_id: near(stored.site_id, 'S3', null), site_label: near(stored.site_label, 'South', null),
      attrs: pick(null, null, '{"grade":"5"}', '{"grade":"6"}'), pw_digest: pick(null, 'd1', 'd2', '-'),
      pw_hash: pick(null, null, null, '$scrypt$b'), pw_same: pick(0, 0, 1),
    };
    insertRow.run(Object.fromEntries([...columns, 'pw_hash', 'pw_same'].map((c) => [c, row[c] ?? null])));
  }
  return db;
}

function selected(db: Database.Database, present: typeof ALL, preview: boolean, withNew: boolean, shortcut: boolean, options: Record<string, number>) {
  const cols = new Set(stageColumns(present));
  const sql = changedRowsSql('temp.rows', { has: (name) => cols.has(name) }, preview, withNew, shortcut);
  const params = { tenant: 't', kind: 'k', now: 'now', suffix: '_2025', ...options };
  return db.prepare(`SELECT * FROM (${sql}) ORDER BY line`).all(params);
}

describe('the apply shortcut for rows that are surely unchanged', () => {
  for (const [name, present] of [['every column', ALL], ['e-mail and names only', EMAIL_AND_NAMES], ['the key and active only', NONE]] as const) {
    it(`selects what the full comparison selects: ${name}, every option, apply and dry run`, () => {
      const db = directory(3000, name.length, present);
      let changes = 0;
      for (const preview of [false, true]) {
        for (const withNew of [false, true]) {
          for (const overwrite_email of [0, 1]) {
            for (const overwrite_password of [0, 1]) {
              for (const archive of [0, 1]) {
                const options = { overwrite_email, overwrite_password, archive };
                const fast = selected(db, present, preview, withNew, true, options);
                expect(fast).toEqual(selected(db, present, preview, withNew, false, options));
                changes += fast.length;
              }
            }
          }
        }
      }
      // The pairs were drawn so that both kinds of row are plentiful.
      expect(changes).toBeGreaterThan(1000);
      const total = (db.prepare('SELECT count(*) FROM temp.rows').pluck().get() as number) * 32;
      expect(total - changes).toBeGreaterThan(1000);
      db.close();
    });
  }
});
