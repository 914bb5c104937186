/**
 * Helpers for tests of the worker as a service: the real CLI daemon (`provisioner run`) as a
 * child process with its log captured, waiting for a condition, free and black-hole ports.
 */
import type { ChildProcess } from 'node:child_process';
import net from 'node:net';
import type { World } from './world.js';

export interface DaemonProcess {
  child: ChildProcess;
  /** Everything it wrote so far (stdout + stderr). */
  output(): string;
  /** Sends a signal and resolves with the exit code (or the signal's name). */
  stop(signal?: NodeJS.Signals): Promise<number | string>;
  exited: Promise<number | string>;
}

export function spawnDaemon(world: World, args: string[] = [], env: Record<string, string> = {}): DaemonProcess {
  const child = world.spawnCli(['run', ...args], env);
  let out = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (out += d));
  const exited = new Promise<number | string>((resolve) => child.on('close', (code, signal) => resolve(code ?? signal ?? -1)));
  return {
    child,
    output: () => out,
    exited,
    async stop(signal: NodeJS.Signals = 'SIGTERM') {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return exited;
    },
  };
}

/** The JSON log lines in a daemon's output (format: json). */
export function logEntries(output: string): Array<Record<string, unknown> & { msg: string }> {
  return output
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, unknown> & { msg: string });
}

/** Polls `probe` until it returns something truthy; fails with `what` after `ms`. */
export async function waitFor<T>(what: string, probe: () => T | Promise<T>, ms = 20_000, every = 50): Promise<NonNullable<T>> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await probe();
    if (v) return v as NonNullable<T>;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, every));
  }
}

/** A port on which nothing listens (connections are refused). */
export async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise((r) => server.close(r));
  return port;
}

/** A TCP server that accepts connections and never says a word: a host that hangs. */
export async function startBlackHole(): Promise<{ port: number; stop(): Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => {
    sockets.add(s);
    s.on('error', () => {});
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    async stop() {
      for (const s of sockets) s.destroy();
      await new Promise((r) => server.close(r));
    },
  };
}
