// File kinds: what a CSV file means. Each kind is one JSON Schema in schemas/<kind>.schema.json
// whose `x-provisioner` block carries the column metadata (canonical names, accepted header
// names, which user field each fills, the key). Adding a vendor format is adding a file here.
import fs from 'node:fs';
import path from 'node:path';
import { newAjv, type Ajv, type ErrorObject, type ValidateFunction } from '../ajv.js';
import { ConfigError } from '../errors.js';
import { schemasDir } from '../paths.js';

/** The user-record fields a column can fill; every other column goes to `attributes`. */
export const USER_FIELDS = [
  'externalId',
  'email',
  'username',
  'firstName',
  'lastName',
  'role',
  'siteId',
  'password',
  'active',
] as const;
export type UserField = (typeof USER_FIELDS)[number];

export interface ColumnSpec {
  /** Canonical header name, as the schema's property name. */
  name: string;
  /** Other header names accepted for this column (matched case-insensitively, trimmed). */
  aliases: string[];
  /** The user field this column fills; absent: kept in `attributes` under `name`. */
  field?: UserField;
}

export interface FileKind {
  name: string;
  title: string;
  /**
   * Canonical name of the key column (the external id). It may also fill a user field (an
   * Agylia file is keyed by its Email column, which is also the user's e-mail).
   */
  key: string;
  /** `lower`: keys match whatever their case (e-mail keys); the stored id is lower-cased. */
  keyCase: 'exact' | 'lower';
  /** Columns in the schema's order: the order `strictHeaders` demands. */
  columns: ColumnSpec[];
  /** Canonical names of the required columns (before tenant options adjust them). */
  required: string[];
  schema: Record<string, unknown>;
}

export interface KindVariant {
  /** Pass `sso: google`: a password column is not required, an e-mail column is. */
  sso: 'none' | 'google';
}

export interface CompiledKind extends FileKind {
  variant: KindVariant;
  requiredNow: string[];
  /** Every error of a row (for reporting a row that fails). */
  validate: ValidateFunction;
  /** Stops at the first error: most rows pass, and for them this is all the work. */
  fast: ValidateFunction;
}

export class KindRegistry {
  private readonly kinds = new Map<string, FileKind>();
  private readonly compiled = new Map<string, CompiledKind>();
  /** Made when a first validator is compiled (see ajv.ts). */
  private fullAjv: Ajv | undefined;
  /** The fast validators of kinds whose every minLength is at most 1 (see fastAjvFor). */
  private fastAjv: Ajv | undefined;
  private fastUnicodeAjv: Ajv | undefined;

  constructor(private readonly dir: string = schemasDir()) {
    for (const file of fs.readdirSync(dir)) {
      const m = /^(.+)\.schema\.json$/.exec(file);
      if (!m || m[1] === 'config') continue;
      this.kinds.set(m[1], parseKind(m[1], path.join(dir, file)));
    }
  }

  names(): string[] {
    return [...this.kinds.keys()].sort();
  }

  has(name: string): boolean {
    return this.kinds.has(name);
  }

  get(name: string, variant: KindVariant = { sso: 'none' }): CompiledKind {
    const cacheKey = `${name}|${variant.sso}`;
    const hit = this.compiled.get(cacheKey);
    if (hit) return hit;
    const kind = this.kinds.get(name);
    if (!kind) throw new Error(`unknown file kind "${name}"; known kinds: ${this.names().join(', ')}`);
    const requiredNow = adjustRequired(kind, variant);
    const schema = { ...kind.schema, required: requiredNow };
    delete (schema as { $id?: string }).$id;
    const compileFast = () => this.fastAjvFor(schema).compile(schema);
    const compileFull = () => (this.fullAjv ??= makeAjv(true)).compile(schema);
    let full: ValidateFunction | undefined;
    let fast: ValidateFunction | undefined;
    const compiled: CompiledKind = {
      ...kind,
      variant,
      requiredNow,
      // Compiled when the first row is checked: the main thread of a large file only reads the
      // kind's columns (its rows are checked on the parse threads, each compiling its own), and
      // compiling took it 20-25 ms while it ran the download.
      get fast() {
        return (fast ??= compileFast());
      },
      // Compiled when a row first fails: a clean file never needs it, and each parse thread
      // compiles its own (15 ms of its start-up alone, several times that beside a download).
      get validate() {
        return (full ??= compileFull());
      },
    };
    this.compiled.set(cacheKey, compiled);
    return compiled;
  }

  /**
   * The fast validator only decides that a row passes; a row it fails is checked again by the
   * full one, which says why (or passes it). So it may be stricter than the full one, never
   * laxer. Counting a string's length in UTF-16 units (`unicode: false`) instead of characters
   * halves its time (190 ns a row instead of 370; ajv walks every value for its surrogate
   * pairs): a length in units is never less than in characters, so a maxLength is only
   * stricter, and so is a minLength of 1 (the empty string is empty either way). A larger
   * minLength would let a short string of emoji through: such a kind keeps counting characters.
   */
  private fastAjvFor(schema: object): Ajv {
    if (minLengthsAtMostOne(schema)) return (this.fastAjv ??= makeAjv(false, false));
    return (this.fastUnicodeAjv ??= makeAjv(false, true));
  }
}

/** Whether every minLength anywhere in `schema` is at most 1. */
export function minLengthsAtMostOne(schema: unknown): boolean {
  if (Array.isArray(schema)) return schema.every(minLengthsAtMostOne);
  if (schema === null || typeof schema !== 'object') return true;
  return Object.entries(schema).every(([k, v]) => (k === 'minLength' ? typeof v === 'number' && v <= 1 : minLengthsAtMostOne(v)));
}

/**
 * ajv's logger (the console), less the one notice ajv prints for `unicode: false`, which it
 * marks deprecated: the fast validator sets it on purpose (see fastAjvFor), and every run and
 * parse thread would print it. Should a later ajv drop the option, the fast validator counts
 * characters again, correct and slower (test/kinds.test.ts then says so).
 */
const AJV_LOGGER = {
  log: (...args: unknown[]) => console.log(...args),
  warn: (...args: unknown[]) => {
    if (typeof args[0] === 'string' && args[0].startsWith('DEPRECATED: option unicode.')) return;
    console.warn(...args);
  },
  error: (...args: unknown[]) => console.error(...args),
};

function makeAjv(allErrors: boolean, unicode = true): Ajv {
  const ajv = newAjv({ allErrors, strict: true, coerceTypes: false, unicode, logger: AJV_LOGGER }, ['email', 'date', 'uri']);
  // `active` style columns: 1/0, true/false, yes/no, y/n in any case.
  ajv.addFormat('flag', /^(?:1|0|true|false|yes|no|y|n)$/i);
  ajv.addVocabulary(['x-provisioner', 'x-aliases', 'x-field', 'x-hint']);
  return ajv;
}

function adjustRequired(kind: FileKind, variant: KindVariant): string[] {
  if (variant.sso !== 'google') return kind.required;
  const byField = (f: UserField) => kind.columns.filter((c) => c.field === f).map((c) => c.name);
  const passwords = new Set(byField('password'));
  const required = kind.required.filter((c) => !passwords.has(c));
  for (const email of byField('email')) if (!required.includes(email)) required.push(email);
  return required;
}

function parseKind(name: string, file: string): FileKind {
  const schema = JSON.parse(fs.readFileSync(file, 'utf8')) as {
    title?: string;
    required?: string[];
    properties?: Record<string, { 'x-aliases'?: string[]; 'x-field'?: UserField }>;
    'x-provisioner'?: { key?: string; keyCase?: string };
  };
  const properties = schema.properties ?? {};
  const columns: ColumnSpec[] = Object.entries(properties).map(([col, spec]) => ({
    name: col,
    aliases: spec['x-aliases'] ?? [],
    field: spec['x-field'],
  }));
  const meta = schema['x-provisioner'] ?? {};
  const key = meta.key ?? columns.find((c) => c.field === 'externalId')?.name;
  const required = schema.required ?? [];
  // A kind is data, so its mistakes are caught here, at start-up, with the file named.
  const problems: string[] = [];
  if (!key || !properties[key]) problems.push('x-provisioner.key must name one of the columns');
  else if (!required.includes(key)) problems.push(`the key column ${key} must be in "required"`);
  if (meta.keyCase !== undefined && meta.keyCase !== 'exact' && meta.keyCase !== 'lower') {
    problems.push(`x-provisioner.keyCase must be "exact" or "lower", not "${meta.keyCase}"`);
  }
  const byField = new Map<string, string>();
  const byHeader = new Map<string, string>();
  for (const c of columns) {
    if (c.field && !USER_FIELDS.includes(c.field)) {
      problems.push(`column ${c.name} has x-field "${c.field}"; expected one of ${USER_FIELDS.join(', ')}`);
    }
    if (c.field === 'externalId' && c.name !== key) problems.push(`column ${c.name} is x-field externalId but the key is ${key}`);
    if (c.field) {
      const other = byField.get(c.field);
      if (other) problems.push(`columns ${other} and ${c.name} both fill ${c.field}`);
      byField.set(c.field, c.name);
    }
    for (const header of [c.name, ...c.aliases]) {
      const n = header.trim().toLowerCase();
      const other = byHeader.get(n);
      if (other && other !== c.name) problems.push(`header name "${header}" is accepted for both ${other} and ${c.name}`);
      byHeader.set(n, c.name);
    }
  }
  for (const r of required) if (!properties[r]) problems.push(`required column ${r} is not among the properties`);
  if (problems.length) throw new ConfigError(`the file kind ${file} is not usable:`, problems);
  return {
    name,
    title: schema.title ?? name,
    key: key!,
    keyCase: meta.keyCase === 'lower' ? 'lower' : 'exact',
    columns,
    required,
    schema: schema as Record<string, unknown>,
  };
}

/** Plain-English reason for one ajv error on one cell. */
export function describeError(err: ErrorObject, kind: FileKind): { column: string; reason: string } {
  const column =
    err.keyword === 'required'
      ? String((err.params as { missingProperty: string }).missingProperty)
      : err.instancePath.replace(/^\//, '').replace(/~1/g, '/').replace(/~0/g, '~');
  const spec = (kind.schema.properties as Record<string, { 'x-hint'?: string; maxLength?: number }> | undefined)?.[column];
  const hint = spec?.['x-hint'];
  const p = err.params as Record<string, unknown>;
  let reason: string;
  switch (err.keyword) {
    case 'required':
      reason = `${column} is required but empty; fill it in`;
      break;
    case 'format':
      reason =
        p.format === 'email'
          ? 'is not a valid e-mail address'
          : p.format === 'flag'
            ? 'must be 1 or 0 (true/false, yes/no and y/n are accepted too)'
            : p.format === 'date'
              ? 'is not a date in the form YYYY-MM-DD'
              : `is not a valid ${String(p.format)}`;
      break;
    case 'maxLength':
      reason = `is longer than ${String(p.limit)} characters`;
      break;
    case 'minLength':
      reason = `is shorter than ${String(p.limit)} characters`;
      break;
    case 'pattern':
      reason = hint ? `is not valid: ${hint}` : `does not have the expected form`;
      break;
    case 'enum':
      reason = `must be one of: ${(p.allowedValues as unknown[]).join(', ')}`;
      break;
    default:
      reason = hint ? `is not valid: ${hint}` : (err.message ?? 'is not valid');
  }
  return { column, reason };
}
