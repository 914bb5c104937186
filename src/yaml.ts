// YAML, through js-yaml: the configuration in, a configuration (the demo's, the console's view of
// a tenant) out. js-yaml reads a 10,000-tenant configuration in a tenth of the time and memory
// the `yaml` package took (0.2 s against 2 s; its document model held 300 MB for 4 MB of text).
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { CORE_SCHEMA, dump, load } from 'js-yaml';
import { threadScript } from './paths.js';

/**
 * From this size (about 500 tenants) a text is parsed in a child process. Parsing makes about 17
 * times the text in garbage (78 MB for a 10,000-tenant, 4.5 MB configuration), and V8 keeps the
 * heap it grew for that until the process ends: a daemon would carry some 115 MiB it never uses
 * again. The child's memory goes when it exits; JSON comes back, which V8 reads with next to no
 * garbage. The child costs about 0.1 s to start.
 */
export const CHILD_PARSE_BYTES = 256 * 1024;

/** What the child writes: the parsed value, or the parser's message. */
export type ChildAnswer = { value: unknown } | { error: string };

/**
 * YAML 1.2's core schema: dates stay strings; a repeated key is an error. `child`: parse in a
 * child process (default: from CHILD_PARSE_BYTES on).
 */
export function parseYaml(text: string, opts: { child?: boolean } = {}): unknown {
  if (!(opts.child ?? Buffer.byteLength(text) >= CHILD_PARSE_BYTES)) return parseHere(text);
  let answer: ChildAnswer;
  try {
    answer = parseInChild(text);
  } catch {
    return parseHere(text); // no child could run (resources, a sandbox): the same result, here
  }
  if ('error' in answer) throw new Error(answer.error);
  return answer.value;
}

/** The child's answer: the value, or the parser's message. Throws when no child could run. */
export function parseInChild(text: string): ChildAnswer {
  const out = execFileSync(process.execPath, [fileURLToPath(threadScript(import.meta.url, 'yaml-process.js'))], {
    input: text,
    encoding: 'utf8',
    maxBuffer: 8 * text.length + 1024 * 1024,
    stdio: ['pipe', 'pipe', 'ignore'],
  });
  return JSON.parse(out) as ChildAnswer;
}

/** The parse itself (here, or in the child: yaml-process.ts). */
export function parseHere(text: string): unknown {
  return load(text, { schema: CORE_SCHEMA });
}

/** Undefined values are left out, as JSON would. */
export function toYaml(value: unknown): string {
  return dump(value, { schema: CORE_SCHEMA, skipInvalid: true, lineWidth: -1, noRefs: true });
}
