// Runs one command as a child process and measures its wall time and peak resident memory.
//
// Peak RSS comes from two sources:
//  - GNU time (`/usr/bin/time -f %M`), when installed: the kernel's ru_maxrss from wait4(), exact;
//  - polling /proc every 50 ms: VmHWM (the kernel's own high-water mark) of every process in the
//    child's tree, and the largest sum of VmRSS over the tree seen in one poll.
// The reported peak is GNU time's figure when there is one, else the polled VmHWM. Both are the
// largest single process (for `sftp`, which forks `ssh`, that is the bigger of the two).
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import fs from 'node:fs';
import { performance } from 'node:perf_hooks';

export const GNU_TIME = '/usr/bin/time';
const POLL_MS = 50;

export interface MeasureOptions {
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** Written to the child's stdin, which is then closed. */
  stdin?: string;
  /** Files the child's stdout and stderr go to (never kept in memory). */
  stdoutFile: string;
  stderrFile: string;
  /** Stop the child (its whole process group) after this long; the measurement says timedOut. */
  timeoutSeconds?: number;
}

export interface Measurement {
  command: string;
  code: number | null;
  signal: NodeJS.Signals | null;
  seconds: number;
  /** Date.now() when it was spawned (to line up with timestamps the child records). */
  startedAtMs: number;
  /** Stopped because it ran past MeasureOptions.timeoutSeconds. */
  timedOut: boolean;
  /** The figure to report: GNU time's when available, else the polled VmHWM. */
  peakRssBytes: number;
  rssSource: 'gnu-time' | 'proc';
  gnuTimeMaxRssBytes: number | null;
  polledHwmBytes: number;
  /** Largest sum of VmRSS over the whole process tree in one poll. */
  polledTreeRssBytes: number;
}

/** The children running now (each the leader of its own process group), so that a signal handler can stop them. */
const running = new Set<{ child: ChildProcess; closed: Promise<unknown> }>();

/** Stops one process group: SIGTERM, SIGKILL after `graceMs`; resolves once its leader is gone. */
async function stopGroup(entry: { child: ChildProcess; closed: Promise<unknown> }, graceMs = 2000, first: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (!entry.child.pid) return;
  const group = -entry.child.pid;
  const signal = (name: NodeJS.Signals) => {
    try {
      process.kill(group, name);
    } catch {
      // already gone
    }
  };
  signal(first);
  const timer = setTimeout(() => signal('SIGKILL'), graceMs);
  await entry.closed.catch(() => undefined);
  clearTimeout(timer);
  signal('SIGKILL'); // anything in the group that outlived the leader
}

/**
 * Stops every running child and everything it started (GNU time's child, sftp's ssh): SIGTERM to
 * its process group, SIGKILL two seconds later (a CLI busy in a synchronous SQLite transaction
 * only dies of that). Resolves once they are gone.
 */
export async function killAllChildren(): Promise<void> {
  await Promise.all([...running].map((entry) => stopGroup(entry)));
}

/** A measured child that is still running: the daemon, while other commands talk to it. */
export interface RunningChild {
  pid: number | undefined;
  /** Resolves when it exits, with its time and peak memory. */
  result: Promise<Measurement>;
  /** Sends `signal` to its process group (SIGKILL after `graceMs`); resolves with the measurement. */
  stop(signal?: NodeJS.Signals, graceMs?: number): Promise<Measurement>;
}

export async function measure(command: string, args: string[], opts: MeasureOptions): Promise<Measurement> {
  return start(command, args, opts).result;
}

/** Starts `command` in its own process group and measures it until it exits (or `timeoutSeconds`). */
export function start(command: string, args: string[], opts: MeasureOptions): RunningChild {
  const useTime = existsSync(GNU_TIME);
  const timeFile = `${opts.stderrFile}.maxrss`;
  const [cmd, argv] = useTime ? [GNU_TIME, ['-f', '%M', '-o', timeFile, command, ...args]] : [command, args];
  const out = fs.openSync(opts.stdoutFile, 'w');
  const err = fs.openSync(opts.stderrFile, 'w');
  let hwm = 0;
  let tree = 0;
  let timedOut = false;
  const startedAtMs = Date.now();
  const started = performance.now();
  // Its own process group: a stop reaches the grandchildren too (see stopGroup).
  const child = spawn(cmd, argv, { cwd: opts.cwd, env: opts.env, detached: true, stdio: [opts.stdin === undefined ? 'ignore' : 'pipe', out, err] });
  const poll = () => {
    if (child.pid === undefined) return;
    let sum = 0;
    for (const pid of processTree(child.pid)) {
      const s = readStatus(pid);
      if (!s) continue;
      // Do not count GNU time itself as the measured command.
      if (!(useTime && pid === child.pid)) hwm = Math.max(hwm, s.hwm);
      sum += s.rss;
    }
    tree = Math.max(tree, sum);
  };
  const timer = setInterval(poll, POLL_MS);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code, signal) => resolve({ code, signal }));
  });
  const entry = { child, closed: exited };
  running.add(entry);
  if (opts.stdin !== undefined) {
    child.stdin?.on('error', () => undefined); // the child may exit without reading it all
    child.stdin?.end(opts.stdin);
  }
  poll();
  const deadline = opts.timeoutSeconds
    ? setTimeout(() => {
        timedOut = true;
        void stopGroup(entry);
      }, opts.timeoutSeconds * 1000)
    : undefined;
  const result = (async (): Promise<Measurement> => {
    try {
      const r = await exited;
      const seconds = (performance.now() - started) / 1000;
      const gnu = useTime ? readGnuTime(timeFile) : null;
      return {
        command: [command, ...args].join(' '),
        ...r,
        seconds,
        startedAtMs,
        timedOut,
        peakRssBytes: gnu ?? hwm,
        rssSource: gnu !== null ? 'gnu-time' : 'proc',
        gnuTimeMaxRssBytes: gnu,
        polledHwmBytes: hwm,
        polledTreeRssBytes: tree,
      };
    } finally {
      clearInterval(timer);
      if (deadline) clearTimeout(deadline);
      running.delete(entry);
      fs.closeSync(out);
      fs.closeSync(err);
      fs.rmSync(timeFile, { force: true });
    }
  })();
  result.catch(() => undefined); // observed by the caller
  return {
    pid: child.pid,
    result,
    async stop(signal: NodeJS.Signals = 'SIGTERM', graceMs = 10_000) {
      if (!running.has(entry) || child.pid === undefined) return result;
      // The command itself, not GNU time around it: time would die of SIGTERM and lose %M.
      const target = useTime ? (processTree(child.pid)[1] ?? child.pid) : child.pid;
      try {
        process.kill(target, signal);
      } catch {
        // already gone
      }
      const timer = setTimeout(() => void stopGroup(entry), graceMs);
      await result.catch(() => undefined);
      clearTimeout(timer);
      return result;
    },
  };
}

/** `pid` and all its descendants, via /proc/<pid>/task/<tid>/children. */
function processTree(root: number): number[] {
  const pids = [root];
  for (let i = 0; i < pids.length; i++) {
    const pid = pids[i];
    let tasks: string[];
    try {
      tasks = fs.readdirSync(`/proc/${pid}/task`);
    } catch {
      continue; // gone
    }
    for (const tid of tasks) {
      try {
        for (const c of fs.readFileSync(`/proc/${pid}/task/${tid}/children`, 'utf8').split(' ')) {
          if (c.trim()) pids.push(Number(c));
        }
      } catch {
        // gone, or a kernel without CONFIG_PROC_CHILDREN: the root alone is still measured
      }
    }
  }
  return pids;
}

function readStatus(pid: number): { hwm: number; rss: number } | undefined {
  let text: string;
  try {
    text = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  } catch {
    return undefined;
  }
  const kb = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? 0) * 1024;
  return { hwm: kb('VmHWM'), rss: kb('VmRSS') };
}

/** GNU time's `%M` (KiB); with -o, a failed command adds a "Command exited…" line first. */
function readGnuTime(file: string): number | null {
  try {
    const lines = fs.readFileSync(file, 'utf8').trim().split('\n');
    const kib = Number(lines[lines.length - 1]);
    return Number.isFinite(kib) && kib > 0 ? kib * 1024 : null;
  } catch {
    return null;
  }
}

/** The last `n` bytes of a file, for error messages. */
export function tail(file: string, n = 4000): string {
  try {
    const text = fs.readFileSync(file, 'utf8');
    return text.length > n ? `…${text.slice(-n)}` : text;
  } catch {
    return '';
  }
}
