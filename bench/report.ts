// One result per table row, the table itself, the by-hand recipes under it, and the JSON file.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Table from 'cli-table3';
import type { Flags, RowName } from './flags.js';
import type { ProfileSummary } from './profile.js';
import { fmt, MiB } from './provisioner.js';

export interface RowResult {
  row: RowName;
  /** "1 new users", "5 polling", … */
  title: string;
  /** "100,000 rows", "200 tenants", … */
  size: string;
  provisionerSeconds: number | null;
  baselineSeconds: number | null;
  /** provisioner / baseline. */
  ratio: number | null;
  peakRssMiB: number | null;
  /** "<= 1.5 (aim 1.2)", "<= 150 MiB", … */
  target: string;
  /** The figure the target is judged on, as printed. */
  measured: string;
  /** Also false when the figure could not be measured (a step failed or timed out). */
  pass: boolean;
  /** Not measured, for want of something on this machine (row 7: a PostgreSQL server): why. */
  skipped?: string;
  /** Correctness: "ok", or what was wrong (details in problems). */
  check: string;
  problems: string[];
  details: Record<string, unknown>;
  profile?: ProfileSummary;
}

/** The baseline (by-hand) side of each row, one line each, printed under the table. */
export const RECIPES: Array<[string, string]> = [];

export function addRecipe(title: string, recipe: string): void {
  if (!RECIPES.some(([t]) => t === title)) RECIPES.push([title, recipe]);
}

/** Passed, or skipped: a skipped row fails nothing (the exit code, "ok" in the JSON). */
export const held = (r: RowResult): boolean => r.pass || r.skipped !== undefined;

const num = (n: number | null, digits = 2) => (n === null ? '-' : n.toFixed(digits));

export function renderTable(rows: RowResult[], flags: Flags): string {
  const table = new Table({
    head: ['row', 'size', 'provisioner s', 'baseline s', 'ratio', 'peak RSS MiB', 'target', 'measured', 'pass', 'check'],
    style: { head: [], border: [] },
  });
  for (const r of rows) {
    table.push([
      r.title,
      r.size,
      num(r.provisionerSeconds),
      num(r.baselineSeconds),
      r.ratio === null ? '-' : `${r.ratio.toFixed(2)}x`,
      num(r.peakRssMiB, 1),
      r.target,
      r.measured,
      r.skipped ? 'SKIP' : r.pass ? 'PASS' : 'FAIL',
      r.check.length > 40 ? `${r.check.slice(0, 39)}…` : r.check,
    ]);
  }
  const out = [
    '',
    `provisioner vs by hand (${flags.server} SFTP server on loopback, ${os.availableParallelism()} cores` +
      `${flags.repeat > 1 ? `, fastest of ${flags.repeat} runs` : ''}${flags.quick ? ', --quick' : ''})`,
    table.toString(),
    'baseline, per row (by hand where there is one):',
    ...[...RECIPES].sort((a, b) => a[0].localeCompare(b[0])).map(([title, recipe]) => `  ${title}: ${recipe}`),
  ];
  const problems = rows.flatMap((r) => r.problems.map((p) => `  ${r.title} (${r.size}): ${p}`));
  if (problems.length) out.push('problems:', ...problems);
  const skipped = rows.filter((r) => r.skipped).map((r) => `  ${r.title}: ${r.skipped}`);
  if (skipped.length) out.push('skipped:', ...skipped);
  for (const r of rows) {
    if (!r.profile) continue;
    out.push('', `${r.title} (${r.size}): CPU profile of provisioner (self time, ${fmt(r.profile.totalMs)} ms sampled)`);
    for (const f of r.profile.files.slice(0, 12)) out.push(`  ${String(f.percent).padStart(5)}%  ${f.name}`);
    out.push('  top functions:');
    for (const f of r.profile.functions.slice(0, 15)) out.push(`  ${String(f.percent).padStart(5)}%  ${f.name}`);
  }
  const failed = rows.filter((r) => !held(r)).length;
  const measured = rows.length - skipped.length;
  out.push('', (failed ? `${failed} of ${measured} targets failed` : 'every target held') + (skipped.length ? ` (${skipped.length} skipped)` : ''));
  return out.join('\n') + '\n';
}

export function writeResults(file: string, rows: RowResult[], flags: Flags, tools: Record<string, string | null>, loadAverage: { before: number; after: number }): void {
  const report = {
    measuredAt: new Date().toISOString(),
    machine: {
      cpus: os.availableParallelism(),
      cpuModel: os.cpus()[0]?.model ?? null,
      memoryMiB: Math.round(os.totalmem() / MiB),
      platform: `${os.platform()} ${os.release()}`,
      node: process.version,
      ...tools,
    },
    flags: { ...flags, rows: [...flags.rows], asked: [...flags.asked] },
    loadAverage,
    ok: rows.every(held),
    rows,
  };
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, JSON.stringify(report, null, 2) + '\n');
}
