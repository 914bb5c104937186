// ajv and ajv-formats, loaded when a validator is first made. A `run --now` of a large file never
// needs them on its main thread: the configuration's validator is precompiled by the build
// (config-validator.ts) and the rows are checked on the parse threads. Imported at start-up they
// cost every command 30-40 ms of loading and 8 ms of set-up before it could connect.
import { createRequire } from 'node:module';
import type { Ajv, Options } from 'ajv';
import type { FormatName } from 'ajv-formats';

export type { Ajv, ErrorObject, ValidateFunction } from 'ajv';

const require = createRequire(import.meta.url);

/** A new ajv instance with these options and ajv-formats' `formats`. */
export function newAjv(options: Options, formats: FormatName[]): Ajv {
  const { Ajv: AjvClass } = require('ajv') as typeof import('ajv');
  const addFormats = require('ajv-formats') as typeof import('ajv-formats').default;
  const ajv = new AjvClass(options);
  addFormats(ajv, formats);
  return ajv;
}
