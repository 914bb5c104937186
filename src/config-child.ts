// Loading a large configuration in a child process (config-process.ts), so that the garbage
// of loading it goes away with the child (see CHILD_LOAD_BYTES in config.ts).
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { Config } from './config.js';
import { threadScript } from './paths.js';

/**
 * The child is short-lived and holds the whole file's garbage at once: V8 told to favour memory
 * over speed loads 10,000 tenants in less memory (145 MiB instead of 217 MiB), in 0.1 s more.
 */
const CHILD_FLAGS = ['--optimize-for-size'];

/** What the child writes: the configuration, its problems, or why it failed. */
export type ChildAnswer = { config: Config } | { summary: string; problems: string[] } | { failed: string };

/** Loads `text` (from `file`) in a child process with `env` as its environment. Throws when no child could run. */
export function parseConfigInChild(text: string, file: string, env: NodeJS.ProcessEnv): ChildAnswer {
  const out = execFileSync(process.execPath, [...CHILD_FLAGS, fileURLToPath(threadScript(import.meta.url, 'config-process.js')), file], {
    input: text,
    encoding: 'utf8',
    env,
    maxBuffer: 8 * text.length + 1024 * 1024,
    stdio: ['pipe', 'pipe', 'ignore'],
  });
  return JSON.parse(out) as ChildAnswer;
}

/**
 * The child's side: the JSON of `answer` (as JSON.stringify gives it, but for the order of the
 * configuration's keys), written a tenant at a time in chunks of some 64 KiB. A 10,000-tenant
 * configuration is some 10 MB of JSON: as one string it cost the child 23 MiB more at its peak.
 * (The parent parses it whole: one JSON.parse of the whole text holds less than one per tenant.)
 */
export function writeAnswer(write: (chunk: string) => void, answer: ChildAnswer): void {
  if (!('config' in answer)) {
    write(JSON.stringify(answer));
    return;
  }
  const { tenants, ...rest } = answer.config;
  // `{"config":{…,"tenants":[]}}` without its last three characters: the tenants follow.
  let chunk = JSON.stringify({ config: { ...rest, tenants: [] } }).slice(0, -3);
  tenants.forEach((tenant, k) => {
    chunk += (k === 0 ? '' : ',') + JSON.stringify(tenant);
    if (chunk.length >= 64 * 1024) {
      write(chunk);
      chunk = '';
    }
  });
  write(chunk + ']}}');
}
