// Loading and compiling the report templates. Each file is compiled once and kept until it
// changes on disk (an operator may edit a tenant's copy while the daemon runs). A tenant's
// folder overrides any of the three files it holds; the shipped ones fill the gaps.
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import type Handlebars from 'handlebars';
import { templatesDir } from '../paths.js';

export type TemplatePart = 'subject' | 'text' | 'html';
export const TEMPLATE_PARTS: readonly TemplatePart[] = ['subject', 'text', 'html'];

/** `report` is the district's report (a tenant may override it); `notice` the operators' notices. */
export type TemplateSet = 'report' | 'notice';

export const templateFile = (part: TemplatePart, set: TemplateSet = 'report'): string => `${set}.${part}.hbs`;

type Compiled = Handlebars.TemplateDelegate<unknown>;

// A private instance: nothing registered on the global Handlebars by other code applies here.
// Loaded on the first report, not by every run that sends none.
const requireCjs = createRequire(import.meta.url);
let instance: typeof Handlebars | undefined;
const hbs = (): typeof Handlebars => (instance ??= (requireCjs('handlebars') as typeof Handlebars).create());
const cache = new Map<string, { mtimeMs: number; size: number; fn: Compiled }>();

/** The compiled template at `file`, or undefined when there is no such file. */
function load(file: string, part: TemplatePart): Compiled | undefined {
  let stat: fs.Stats;
  try {
    stat = fs.statSync(file);
  } catch {
    return undefined;
  }
  const hit = cache.get(file);
  if (hit && hit.mtimeMs === stat.mtimeMs && hit.size === stat.size) return hit.fn;
  const source = fs.readFileSync(file, 'utf8');
  // Subject and text are not HTML: escaping would turn `O'Brien` into `O&#x27;Brien`.
  // The HTML keeps the default escaping; its templates never use {{{ }}} on customer data.
  hbs().parse(source); // compile() parses lazily: surface a syntax error now, naming the file
  const fn = hbs().compile(source, { noEscape: part !== 'html' });
  cache.set(file, { mtimeMs: stat.mtimeMs, size: stat.size, fn });
  return fn;
}

/**
 * Renders one part. A broken tenant template must not stop an import (reports are queued
 * inside the import's transaction), so it falls back to the shipped one and says why.
 */
export function renderPart(part: TemplatePart, data: object, override: string | undefined, problems: string[], set: TemplateSet = 'report'): string {
  if (override) {
    const file = path.join(override, templateFile(part, set));
    try {
      const fn = load(file, part);
      if (fn) return fn(data);
    } catch (err) {
      problems.push(`${file}: ${(err as Error).message.split('\n')[0]}; the built-in template was used`);
    }
  }
  const shipped = load(path.join(templatesDir(), templateFile(part, set)), part);
  if (!shipped) throw new Error(`the built-in template ${templateFile(part, set)} is missing from ${templatesDir()}`);
  return shipped(data);
}

/** Problems with the templates in a tenant's folder (for `doctor` and config checks). */
export function checkTemplates(folder: string): string[] {
  if (!fs.existsSync(folder)) return [`${folder}: the templates folder does not exist`];
  const problems: string[] = [];
  for (const part of TEMPLATE_PARTS) {
    const file = path.join(folder, templateFile(part));
    try {
      load(file, part);
    } catch (err) {
      problems.push(`${file}: ${(err as Error).message.split('\n')[0]}`);
    }
  }
  return problems;
}
