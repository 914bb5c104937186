// Row-level checking: one record in, either a staged row (its values in stageColumns() order) or
// a list of problems out. Problems are data (line, column, value, reason), never exceptions: a
// bad row only rejects itself. Built once per file from its header, so the per-row work is a
// loop over positions, one ajv call (the fast validator, without allErrors, for rows that pass)
// and no objects beyond the row itself.
import crypto from 'node:crypto';
import type { ImportOptions } from '../config.js';
import type { PresentFields, RowProblem } from '../store/types.js';
import { NO_DIGEST, stageColumns } from '../store/types.js';
import { unescapeFormula } from './errors-csv.js';
import type { HeaderMap } from './headers.js';
import { describeError, type CompiledKind, type UserField } from './kinds.js';

export type { RowProblem };

/** A checked row in stageColumns() order: its line and `active` as numbers (cheap to bind), the rest text or null. */
export type StagedRow = (string | number | null)[];

export type RowResult =
  | { ok: true; key: string; row: StagedRow; password: string | null }
  | { ok: false; key: string | null; problems: RowProblem[]; raw: string[]; password: string | null };

const TRUE_FLAGS = new Set(['1', 'true', 'yes', 'y']);
const HIDDEN = '(hidden)';

/** The staged column each user field fills. */
const COLUMN_OF: Partial<Record<UserField, string>> = { email: 'email', username: 'username', firstName: 'first_name', lastName: 'last_name', role: 'role', siteId: 'site_id' };
const ACTIVE = 2;

/** What a column does beyond filling its staged slot (decided once per file, not per row). */
const enum Role {
  Plain,
  Attribute,
  Active,
  Password,
  MappedSite,
}

/** A keyed digest of a password: equal digests, equal passwords, without scrypt (see README). */
export function passwordDigest(key: Buffer, tenant: string, externalId: string, password: string): string {
  return crypto.createHmac('sha256', key).update(`${tenant}\0${externalId}\0${password}`).digest('base64url');
}

type RowRecord = Record<string, string | undefined>;

/**
 * A function that makes a row's record from its cells: `{ "user_id": c[0] ?? undefined, … }`,
 * one object literal of the file's columns (all declared by the kind), so every record has the
 * same shape and ajv's code reads each property by name, monomorphic. Empty cells (null) become
 * undefined, so that `required` fires for them (ajv tests `=== undefined`). Writing the values
 * into one reused object by their names instead (a keyed store per value) cost 140 ns a row
 * more, a quarter of the row check.
 */
function recordMaker(names: string[]): (cell: (string | null)[]) => RowRecord {
  return new Function('c', `return { ${names.map((n, i) => `${JSON.stringify(n)}: c[${i}] ?? undefined`).join(', ')} };`) as (cell: (string | null)[]) => RowRecord;
}

export class RowChecker {
  private readonly keyIndex: number;
  private readonly hasSiteMap: boolean;
  private readonly passwordIndex: number;
  /** Header position -> what it fills. */
  private readonly plan: { name: string; field?: UserField; role: Role; slot?: number; date: boolean }[];
  /** The current row's trimmed values by header position (null: empty); reused row to row. */
  private readonly cell: (string | null)[] = [];
  /** The current row by column name, for ajv, from `cell` (see recordMaker). */
  private readonly toRecord: (cell: (string | null)[]) => RowRecord;
  private readonly attributeNames: string[];
  readonly present: PresentFields;
  /** stageColumns(present): the width and order of a staged row. */
  readonly columns: string[];
  private readonly siteLabelSlot: number;
  private readonly attrsSlot: number;
  private readonly digestSlot: number;

  constructor(
    private readonly kind: CompiledKind,
    private readonly headers: HeaderMap,
    private readonly options: ImportOptions,
    private readonly tenant: string,
    private readonly digestKey: Buffer | null,
  ) {
    const columns = headers.columns;
    this.keyIndex = columns.findIndex((c) => c.name === kind.key);
    this.passwordIndex = columns.findIndex((c) => c.field === 'password');
    this.hasSiteMap = Object.keys(options.siteMap).length > 0;
    const props = (kind.schema.properties ?? {}) as Record<string, { format?: string }>;
    this.attributeNames = columns.filter((c) => !c.field).map((c) => c.name).sort();
    const has = (f: UserField) => columns.some((c) => c.field === f);
    this.present = {
      email: has('email'),
      username: has('username'),
      firstName: has('firstName'),
      lastName: has('lastName'),
      role: has('role'),
      siteId: has('siteId'),
      siteLabel: has('siteId') && this.hasSiteMap,
      password: has('password'),
      attributes: this.attributeNames.length > 0,
    };
    this.columns = stageColumns(this.present);
    const slot = (col: string | undefined) => (col === undefined ? undefined : this.columns.indexOf(col));
    const roleOf = (field: UserField | undefined): Role =>
      field === undefined ? Role.Attribute
      : field === 'active' ? Role.Active
      : field === 'password' ? Role.Password
      : field === 'siteId' && this.hasSiteMap ? Role.MappedSite
      : Role.Plain;
    this.plan = columns.map((c) => ({
      name: c.name, field: c.field, role: roleOf(c.field), slot: slot(c.field ? COLUMN_OF[c.field] : undefined), date: props[c.name]?.format === 'date',
    }));
    this.toRecord = recordMaker(columns.map((c) => c.name));
    this.siteLabelSlot = this.columns.indexOf('site_label');
    this.attrsSlot = this.columns.indexOf('attrs');
    this.digestSlot = this.columns.indexOf('pw_digest');
  }

  /**
   * `mayHoldNul`: false when the caller knows the row's text has no NUL character (one search
   * over a whole batch), which spares a search in every value.
   */
  check(line: number, cells: string[], mayHoldNul = true): RowResult {
    const values = this.headers.fromErrorsCsv ? cells.map(unescapeFormula) : cells;
    const { columns, width } = this.headers;
    const rawKey = this.keyIndex >= 0 ? values[this.keyIndex]?.trim() || null : null;
    const key = rawKey !== null && this.kind.keyCase === 'lower' ? rawKey.toLowerCase() : rawKey;
    if (values.length !== width) {
      const reason =
        `this row has ${values.length} value${values.length === 1 ? '' : 's'} but the header has ${width} columns; ` +
        `a value containing a comma must be in double quotes`;
      return { ok: false, key, problems: [{ column: '', value: '', reason }], raw: this.safeRaw(values, null, true), password: null };
    }
    // `cell` keeps the trimmed values by position (null: empty), read below without a lookup by
    // name; the record ajv checks is made from it.
    const cell = this.cell;
    let problems: RowProblem[] | null = null;
    for (let i = 0; i < columns.length; i++) {
      const v = values[i].trim();
      cell[i] = null;
      if (v === '') continue;
      if (mayHoldNul && v.includes('\u0000')) {
        (problems ??= []).push({ column: columns[i].name, value: '', reason: 'contains a NUL character (a zero byte), which no value may hold; remove it' });
        continue;
      }
      cell[i] = v;
    }
    const record = this.toRecord(cell);
    if (!this.kind.fast(record)) {
      problems ??= [];
      this.kind.validate(record);
      for (const err of this.kind.validate.errors ?? []) {
        const { column, reason } = describeError(err, this.kind);
        if (problems.some((p) => p.column === column)) continue; // one reason per cell is enough
        problems.push({ column, value: record[column] ?? '', reason });
      }
    }
    const row: StagedRow = new Array(this.columns.length).fill(null);
    row[0] = line;
    row[1] = key;
    row[ACTIVE] = 1;
    let password: string | null = null;
    let attrs: Record<string, string | null> | null = null;
    for (let i = 0; i < columns.length; i++) {
      const p = this.plan[i];
      const v = cell[i];
      if (p.slot !== undefined) row[p.slot] = v;
      switch (p.role) {
        case Role.Plain:
          break;
        case Role.Attribute:
          (attrs ??= {})[p.name] = v;
          break;
        case Role.Active:
          row[ACTIVE] = v === null || TRUE_FLAGS.has(v.toLowerCase()) ? 1 : 0;
          break;
        case Role.Password:
          password = v === null ? null : this.password(p.name, v, (problems ??= []));
          break;
        case Role.MappedSite:
          if (v !== null) {
            const label = this.options.siteMap[v];
            if (label === undefined) {
              (problems ??= []).push({
                column: p.name,
                value: v,
                reason: `this site id is not in this district's site map; use one of ${Object.keys(this.options.siteMap).join(', ')} or ask us to add it`,
              });
            }
            row[this.siteLabelSlot] = label ?? null;
          }
          break;
      }
    }
    if (problems && problems.length) {
      return { ok: false, key, problems: this.present.password ? this.hideSecrets(problems) : problems, raw: this.safeRaw(values, problems, false), password };
    }
    if (attrs) row[this.attrsSlot] = JSON.stringify(attrs, this.attributeNames);
    if (password !== null && key !== null) row[this.digestSlot] = this.digestKey ? passwordDigest(this.digestKey, this.tenant, key, password) : NO_DIGEST;
    return { ok: true, key: key ?? '', row, password };
  }

  /** A row's cells as errors.csv may show them (see safeRaw). */
  cellsForReport(cells: string[]): string[] {
    return this.safeRaw(cells, null, cells.length !== this.headers.width);
  }

  private password(column: string, value: string, problems: RowProblem[]): string | null {
    if (this.options.passwordFormat !== 'date') return value;
    const formatted = formatDatePassword(value);
    if (formatted === undefined) {
      problems.push({ column, value: HIDDEN, reason: 'is not a date; passwords for this district are dates such as 2010-03-05, 3/5/2010 or 20100305' });
      return null;
    }
    return formatted;
  }

  /**
   * In a file that carries passwords, a failing row may have a password in another cell (a row
   * shifted by one column puts it into EMAIL). Date passwords are recognisable: any date-like
   * value outside a date column is hidden. Plain passwords are not: every failing cell's value is.
   */
  private hideSecrets(problems: RowProblem[]): RowProblem[] {
    const key = this.kind.key;
    const dates = this.options.passwordFormat === 'date';
    return problems.map((p) => {
      if (!p.value || p.column === key || p.value === HIDDEN) return p;
      const col = this.plan.find((c) => c.name === p.column);
      const secret = dates ? !col?.date && formatDatePassword(p.value) !== undefined : true;
      return secret ? { ...p, value: HIDDEN } : p;
    });
  }

  /**
   * The row's cells for errors.csv, with every cell that could hold a password left blank: the
   * password column always; in a file with a password column also the cells that failed their
   * check, date-like values when passwords are dates, and, when the row has the wrong number
   * of values (so any cell may have moved), every cell but the key.
   */
  private safeRaw(values: string[], problems: RowProblem[] | null, misaligned: boolean): string[] {
    if (!this.present.password) return values.slice(0, this.headers.original.length);
    const failing = new Set((problems ?? []).map((p) => p.column));
    const dates = this.options.passwordFormat === 'date';
    return this.headers.original.map((_, i) => {
      const v = values[i] ?? '';
      if (i === this.passwordIndex) return '';
      if (misaligned) return i === this.keyIndex ? v : '';
      const col = this.plan[i];
      if (!col || col.name === this.kind.key) return v;
      if (dates) return !col.date && formatDatePassword(v) !== undefined ? '' : v;
      return failing.has(col.name) ? '' : v;
    });
  }
}

/** `2010-03-05`, `3/5/2010`, `03/05/2010`, `20100305` (and `.`/`-` separated m/d/yyyy) -> `3/5/2010`. */
export function formatDatePassword(value: string): string | undefined {
  const v = value.trim();
  let y: number, m: number, d: number;
  let match: RegExpExecArray | null;
  if ((match = /^(\d{4})-(\d{1,2})-(\d{1,2})$/.exec(v))) [y, m, d] = [+match[1], +match[2], +match[3]];
  else if ((match = /^(\d{1,2})[/.-](\d{1,2})[/.-](\d{4})$/.exec(v))) [m, d, y] = [+match[1], +match[2], +match[3]];
  else if ((match = /^(\d{4})(\d{2})(\d{2})$/.exec(v))) [y, m, d] = [+match[1], +match[2], +match[3]];
  else return undefined;
  const date = new Date(Date.UTC(y, m - 1, d));
  if (date.getUTCFullYear() !== y || date.getUTCMonth() !== m - 1 || date.getUTCDate() !== d) return undefined;
  return `${m}/${d}/${y}`;
}
