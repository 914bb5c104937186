// The console's pages: handlebars templates in templates/console/, rendered on the server and
// readable without JavaScript. Everything that comes from data goes through `{{ }}` (escaped);
// the layout takes the rendered page as a SafeString, never through `{{{ }}}`.
import fs from 'node:fs';
import path from 'node:path';
import Handlebars from 'handlebars';
import { templatesDir } from '../paths.js';
import type { ConsoleUser } from './auth.js';

const hbs = Handlebars.create();
const compiled = new Map<string, Handlebars.TemplateDelegate>();
let css: string | undefined;

const dir = () => path.join(templatesDir(), 'console');

function template(name: string): Handlebars.TemplateDelegate {
  let fn = compiled.get(name);
  if (!fn) {
    fn = hbs.compile(fs.readFileSync(path.join(dir(), `${name}.hbs`), 'utf8'), { strict: false });
    compiled.set(name, fn);
  }
  return fn;
}

/** `2024-01-01 02:00 UTC`, or a dash. */
export function when(iso: unknown): string {
  if (typeof iso !== 'string' || !iso) return '—';
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : `${d.toISOString().slice(0, 16).replace('T', ' ')} UTC`;
}

/** `5 min ago`, `in 3 h`. */
export function ago(iso: unknown, now = Date.now()): string {
  if (typeof iso !== 'string' || !iso) return '';
  const ms = Date.parse(iso) - now;
  if (Number.isNaN(ms)) return '';
  const a = Math.abs(ms);
  const text = a < 60_000 ? `${Math.round(a / 1000)} s` : a < 3600_000 ? `${Math.round(a / 60_000)} min` : a < 172_800_000 ? `${Math.round(a / 3600_000)} h` : `${Math.round(a / 86_400_000)} days`;
  return ms < 0 ? `${text} ago` : `in ${text}`;
}

/** The badge colour of a status (runs, imports, mail, audit results). */
export function tone(status: unknown): string {
  switch (status) {
    case 'ok': case 'applied': case 'sent': case 'reverted': case 'released': case 'requested': case 'ready':
      return 'good';
    case 'errors': case 'applied with errors': case 'held': case 'busy': case 'interrupted': case 'queued': case 'superseded': case 'refused': case 'overdue': case 'running':
      return 'warn';
    case 'failed': case 'rejected':
      return 'bad';
    default:
      return 'plain';
  }
}

const REASONS: Record<string, string> = { schedule: 'scheduled', now: 'run --now', trigger: 'run now', release: 'release', discard: 'discard' };

// A helper wins over a field of the same name: `{{reason}}` of a row error would call a helper
// named `reason` (and show "[object Object]"). So no helper is named like a field of our data.
hbs.registerHelper('when', (iso: unknown) => when(iso));
hbs.registerHelper('runWhy', (r: unknown) => REASONS[String(r)] ?? String(r ?? ''));
hbs.registerHelper('ago', (iso: unknown) => ago(iso));
hbs.registerHelper('tone', (status: unknown) => tone(status));
hbs.registerHelper('enc', (v: unknown) => encodeURIComponent(String(v ?? '')));
hbs.registerHelper('eq', (a: unknown, b: unknown) => a === b);
hbs.registerHelper('or', (...args: unknown[]) => args.slice(0, -1).some(Boolean));
hbs.registerHelper('json', (v: unknown) => (v === null || v === undefined ? '' : typeof v === 'string' ? v : JSON.stringify(v)));

/** A whole page: `name`'s template inside the layout (header, navigation, sign-out). */
export function renderPage(name: string, data: Record<string, unknown>, user: ConsoleUser | null): string {
  const body = template(name)({ ...data, user });
  return template('layout')({ title: data.title, refresh: data.refresh, user, body: new hbs.SafeString(body) });
}

export function consoleCss(): string {
  css ??= fs.readFileSync(path.join(dir(), 'console.css'), 'utf8');
  return css;
}
