// A part file as a parse thread writes it (stage-part.ts): rows one at a time into the rows file,
// the rest into the side tables; what the apply later reads from it.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import { StagePartWriter } from '../src/store/sqlite/stage-part.js';

const COLUMNS = ['line', 'key', 'active', 'email'];
let dir: string;

afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

function partFile(): string {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'provisioner-part-'));
  return path.join(dir, 'part-0.sqlite');
}

describe('a part file', () => {
  it('holds every row added, in line order, whatever the batches and however many rows are left over', () => {
    const file = partFile();
    const writer = new StagePartWriter(file, COLUMNS);
    const row: (string | number | null)[] = [0, '', 1, null];
    for (let line = 2; line <= 252; line++) {
      if (line === 7 || line === 150) {
        writer.addFailed({ line, key: `K${line}`, raw: [`K${line}`, 'x'], problems: [{ column: 'Email', value: 'x', reason: 'is not an e-mail address' }, { column: 'Role', value: '', reason: 'is required' }] });
        continue;
      }
      // One array for every row, as a caller may reuse it: the writer must copy the values.
      row[0] = line;
      row[1] = `K${line}`;
      row[3] = line % 2 ? `u${line}@example.org` : null;
      writer.addRow(row);
      if (line === 40) writer.addRepeat(line);
      if (line === 120) writer.commit(); // a batch ends mid-way through a hundred
    }
    writer.finish(true);
    expect({ valid: writer.valid, failed: writer.failed }).toEqual({ valid: 249, failed: 2 });

    const db = new Database(file, { readonly: true });
    try {
      const rows = db.prepare('SELECT line, key, active, email FROM rows ORDER BY line').all() as { line: number; key: string; active: number; email: string | null }[];
      expect(rows).toHaveLength(249);
      expect(rows[0]).toEqual({ line: 2, key: 'K2', active: 1, email: null });
      expect(rows.at(-1)).toEqual({ line: 252, key: 'K252', active: 1, email: null });
      expect(rows.find((r) => r.line === 151)).toEqual({ line: 151, key: 'K151', active: 1, email: 'u151@example.org' });
      expect(rows.some((r) => r.line === 7 || r.line === 150)).toBe(false);
      expect(db.prepare('SELECT key, line FROM failed_keys ORDER BY line').all()).toEqual([{ key: 'K7', line: 7 }, { key: 'K150', line: 150 }]);
      expect(db.prepare('SELECT line, seq, "column", reason, raw IS NOT NULL AS has_raw FROM errors ORDER BY line, seq').all()).toEqual([
        { line: 7, seq: 0, column: 'Email', reason: 'is not an e-mail address', has_raw: 1 },
        { line: 7, seq: 1, column: 'Role', reason: 'is required', has_raw: 0 },
        { line: 150, seq: 0, column: 'Email', reason: 'is not an e-mail address', has_raw: 1 },
        { line: 150, seq: 1, column: 'Role', reason: 'is required', has_raw: 0 },
      ]);
      expect(db.prepare('SELECT line FROM repeats').pluck().all()).toEqual([40]);
      expect(db.prepare("SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name = 'rows_key'").pluck().get()).toBe(1);
    } finally {
      db.close();
    }
  });

  it('leaves nothing behind when closed before it was finished, and the next writer starts afresh', () => {
    const file = partFile();
    const writer = new StagePartWriter(file, COLUMNS);
    for (let line = 2; line < 302; line++) writer.addRow([line, `K${line}`, 1, null]);
    writer.addRepeat(40);
    writer.close(); // the part failed (or was misaligned): it is read again from the CSV
    expect(fs.readdirSync(dir)).toEqual(['part-0.sqlite']); // the side file is gone
    const again = new StagePartWriter(file, COLUMNS);
    again.addRow([2, 'K2', 0, 'a@example.org']);
    again.finish(false);
    const db = new Database(file, { readonly: true });
    try {
      expect(db.prepare('SELECT line, key, active, email, pw_hash, pw_same FROM rows').all()).toEqual([{ line: 2, key: 'K2', active: 0, email: 'a@example.org', pw_hash: null, pw_same: 0 }]);
      expect(db.prepare('SELECT count(*) FROM repeats').pluck().get()).toBe(0);
      expect(db.pragma('integrity_check', { simple: true })).toBe('ok');
    } finally {
      db.close();
    }
  });
});
