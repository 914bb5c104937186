import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { CsvUnreadable, readCsv, type CsvRecord } from '../src/import/csv-reader.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'provisioner-csv-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

async function read(content: string | Buffer, encoding?: string): Promise<CsvRecord[]> {
  const file = path.join(dir, `f${Math.random().toString(36).slice(2)}.csv`);
  fs.writeFileSync(file, content);
  const out: CsvRecord[] = [];
  await readCsv(file, (r) => out.push(r), { encoding });
  return out;
}

describe('readCsv', () => {
  it('gives each record the line it starts on, across quoted newlines and blank lines', async () => {
    const records = await read('a,b\r\n1,"x\r\ny"\r\n\r\n2,"q""uote, comma"\r\n');
    expect(records).toEqual([
      { line: 1, values: ['a', 'b'] },
      { line: 2, values: ['1', 'x\r\ny'] },
      { line: 5, values: ['2', 'q"uote, comma'] },
    ]);
  });

  it('removes a BOM and keeps a character split across read chunks intact', async () => {
    const filler = 'x'.repeat((1 << 20) - 9); // puts the 2-byte "é" across the 1 MiB chunk boundary
    const records = await read(Buffer.from(`\uFEFFname\n${filler},é\n`, 'utf8'));
    expect(records[0].values).toEqual(['name']);
    expect(records[1].values[1]).toBe('é');
  });

  it('rejects bytes that are not UTF-8 and says how to fix it', async () => {
    await expect(read(Buffer.from([0x61, 0x2c, 0x62, 0x0a, 0x63, 0xe9, 0x2c, 0x64, 0x0a]))).rejects.toThrow(
      /not valid UTF-8 text .*Save or export it as "CSV UTF-8"/,
    );
  });

  it('reads a declared legacy encoding', async () => {
    const records = await read(Buffer.from([0x63, 0xe9, 0x0a]), 'windows-1252');
    expect(records[0].values).toEqual(['cé']);
  });

  it('rejects a quote that is never closed, naming the line', async () => {
    const err = await read('a,b\n1,2\n3,"open\n4,5\n').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CsvUnreadable);
    expect((err as Error).message).toContain('starts on line 3 is never closed');
  });
});
