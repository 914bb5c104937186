// Rows-per-file progress on a terminal (cli-progress); silent when output is not a TTY.
import cliProgress from 'cli-progress';

export class ProgressDisplay {
  private readonly bars = new Map<string, cliProgress.SingleBar>();
  private readonly multi: cliProgress.MultiBar | null;

  constructor(stream: NodeJS.WriteStream, enabled: boolean) {
    this.multi =
      enabled && stream.isTTY
        ? new cliProgress.MultiBar(
            { stream, format: '{label} | {value} rows', hideCursor: true, clearOnComplete: true, fps: 5 },
            cliProgress.Presets.shades_classic,
          )
        : null;
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
