// Rows-per-file progress on a terminal (cli-progress); silent when output is not a TTY, and then
// cli-progress is not even loaded.
import { createRequire } from 'node:module';
import type cliProgress from 'cli-progress';

const requireCjs = createRequire(import.meta.url);

export class ProgressDisplay {
  private readonly bars = new Map<string, cliProgress.SingleBar>();
  private readonly multi: cliProgress.MultiBar | null;

  constructor(stream: NodeJS.WriteStream, enabled: boolean) {
    if (!enabled || !stream.isTTY) {
      this.multi = null;
      return;
    }
    const progress = requireCjs('cli-progress') as typeof cliProgress;
    this.multi = new progress.MultiBar({ stream, format: '{label} | {value} rows', hideCursor: true, clearOnComplete: true, fps: 5 }, progress.Presets.shades_classic);
  }

  update(label: string, rows: number): void {
    if (!this.multi) return;
    let bar = this.bars.get(label);
    if (!bar) {
      bar = this.multi.create(0, 0, { label });
      this.bars.set(label, bar);
    }
    bar.setTotal(rows);
    bar.update(rows, { label });
  }

  stop(): void {
    this.multi?.stop();
  }
}
