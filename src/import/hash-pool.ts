// Password hashing on a pool of worker threads of its own: scrypt costs ~40 ms of CPU per hash,
// and on libuv's thread pool it would queue every other tenant's file I/O behind it. One thread
// per core keeps the cores busy during a first import; idle threads never keep the process up.
import os from 'node:os';
import { Worker } from 'node:worker_threads';
import { threadScript } from '../paths.js';

export interface HashItem {
  password: string;
  /** A stored hash to check first: null when the password matches it. */
  stored: string | null;
}

export interface Hasher {
  /** For each item, in order: its new hash, or null when it matches its stored hash. */
  run(items: HashItem[]): Promise<(string | null)[]>;
  close(): Promise<void>;
}

interface Job {
  items: HashItem[];
  resolve: (r: (string | null)[]) => void;
  reject: (e: Error) => void;
}

/** Items per message: enough to amortise the message, few enough to keep every thread busy. */
const PER_MESSAGE = 4;

export class ScryptPool implements Hasher {
  private readonly idle: Worker[] = [];
  private readonly all = new Set<Worker>();
  private readonly queue: Job[] = [];
  private closed = false;

  constructor(private readonly size: number = Math.max(1, os.availableParallelism())) {}

  async run(items: HashItem[]): Promise<(string | null)[]> {
    if (this.closed) throw new Error('the password hashing pool is closed');
    const parts: Promise<(string | null)[]>[] = [];
    for (let i = 0; i < items.length; i += PER_MESSAGE) {
      parts.push(new Promise((resolve, reject) => this.queue.push({ items: items.slice(i, i + PER_MESSAGE), resolve, reject })));
    }
    this.pump();
    return (await Promise.all(parts)).flat();
  }

  async close(): Promise<void> {
    this.closed = true;
    await Promise.all([...this.all].map((w) => w.terminate()));
    this.all.clear();
    this.idle.length = 0;
  }

  private pump(): void {
    while (this.queue.length) {
      const worker = this.idle.pop() ?? (this.all.size < this.size ? this.spawn() : undefined);
      if (!worker) return;
      const job = this.queue.shift()!;
      worker.ref();
      const onMessage = (results: (string | null)[]) => {
        worker.off('error', onError);
        worker.unref();
        this.idle.push(worker);
        job.resolve(results);
        this.pump();
      };
      const onError = (err: Error) => {
        worker.off('message', onMessage);
        this.all.delete(worker);
        job.reject(err);
        this.pump();
      };
      worker.once('message', onMessage);
      worker.once('error', onError);
      worker.postMessage(job.items);
    }
  }

  private spawn(): Worker {
    const worker = new Worker(threadScript(import.meta.url, 'hash-worker.js'));
    worker.unref();
    this.all.add(worker);
    return worker;
  }
}
