// Loading a large configuration in a child process (config-process.ts), so that the garbage
// of loading it goes away with the child (see CHILD_LOAD_BYTES in config.ts).
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
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

/**
 * Loads the YAML of `file` in a child process with `env` as its environment: `source` is its
 * text, or a descriptor open on the file (the child reads it; this process never holds the text
 * nor a copy for the pipe, 4.5 MB each for 10,000 tenants). Throws when no child could run.
 */
export function parseConfigInChild(source: string | { fd: number; bytes: number }, file: string, env: NodeJS.ProcessEnv): ChildAnswer {
  const answer = scratchFile();
  const bytes = typeof source === 'string' ? source.length : source.bytes;
  try {
    const out = execFileSync(process.execPath, [...CHILD_FLAGS, fileURLToPath(threadScript(import.meta.url, 'config-process.js')), file], {
      ...(typeof source === 'string' ? { input: source } : {}),
      encoding: 'utf8',
      env,
      maxBuffer: 8 * bytes + 1024 * 1024,
      stdio: [typeof source === 'string' ? 'pipe' : source.fd, answer?.fd ?? 'pipe', 'ignore'],
    });
    return JSON.parse(answer ? answer.read() : out) as ChildAnswer;
  } finally {
    answer?.close();
  }
}

/**
 * Where the child writes its answer: a file nobody else can open (made private, then unlinked
 * before the child starts), read back in one piece. Collected from a pipe, the answer (some
 * 10 MB for 10,000 tenants) arrived in 64 KiB buffers of the C library's heap, which kept the
 * 12 MiB for the rest of the process: a run of 10,000 tenants carried them to its end. Null
 * where no such file can be made: the pipe, then. (The answer holds no secret the YAML did not:
 * `${VAR}` references are filled in only when used.)
 */
function scratchFile(): { fd: number; read(): string; close(): void } | null {
  let fd: number;
  try {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'provisioner-config-'));
    try {
      fd = fs.openSync(path.join(dir, 'answer.json'), 'w+', 0o600);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  } catch {
    return null;
  }
  return {
    fd,
    read() {
      // One buffer of the file's size: the allocator maps it on its own and gives it back.
      const size = fs.fstatSync(fd).size;
      const buf = Buffer.allocUnsafeSlow(size);
      let at = 0;
      while (at < size) {
        const n = fs.readSync(fd, buf, at, size - at, at);
        if (n === 0) break;
        at += n;
      }
      return buf.toString('utf8', 0, at);
    },
    close: () => fs.closeSync(fd),
  };
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
