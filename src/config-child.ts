// Loading a large configuration in a child process (config-process.ts), so that the garbage
// of loading it goes away with the child (see CHILD_LOAD_BYTES in config.ts).
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { Config } from './config.js';
import { threadScript } from './paths.js';

/**
 * The child is short-lived and holds the whole file's garbage at once: V8 told to favour memory
 * over speed loads 10,000 tenants in 145 MiB instead of 217 MiB, in 0.1 s more.
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
