// How a daemon takes tier-2 triggers: each only with a processing slot in hand, so a daemon
// whose slots are all busy takes none and the trigger (and its tenant's lease) goes to a daemon
// that is free; the run then starts at once and never holds the tenant while it waits for a
// slot. Where the store can tell (PostgreSQL's LISTEN/NOTIFY) a new trigger is looked for at
// once; the poll every quarter of a second is the fallback (and all there is with SQLite).
import { errorMessage } from '../errors.js';
import type { Logger } from '../log.js';
import type { Store, TriggerListener, TriggerRow } from '../store/types.js';
import { processId } from '../worker/identity.js';
import type { Semaphore } from '../worker/runner.js';

/**
 * How often pending triggers are looked for without a notification. A poll that finds nothing is
 * one indexed read (SQLite) or an UPDATE matching no row (PostgreSQL).
 */
export const TRIGGER_POLL_MS = 250;

export interface IntakeDeps {
  store: Store;
  log: Logger;
  /** The daemon's processing slots. */
  slots: Semaphore;
  /** The tenants this daemon serves. */
  tenants: string[];
  /** Still taking work. */
  open: () => boolean;
  /** Runs the trigger's tenant with `slot`, which the run releases. */
  run: (trigger: TriggerRow, slot: () => void) => void;
  /** For the message when listening fails. */
  pollMs: number;
}

export class TriggerIntake {
  private polling = false;
  private again = false;
  private listener: TriggerListener | null = null;

  constructor(private readonly d: IntakeDeps) {}

  /** Takes pending triggers while a slot is free; a call during a poll makes it look once more. */
  async poll(): Promise<void> {
    if (!this.d.open()) return;
    if (this.polling) {
      this.again = true; // a notification or a freed slot meanwhile: the current poll may have missed it
      return;
    }
    this.polling = true;
    try {
      do {
        this.again = false;
        while (this.d.open()) {
          const slot = this.d.slots.tryAcquire();
          if (!slot) break;
          let t: TriggerRow | null;
          try {
            t = await this.d.store.triggers.take(this.d.tenants, processId);
          } catch (err) {
            slot();
            throw err;
          }
          if (!t) {
            slot();
            break;
          }
          this.d.run(t, slot);
        }
      } while (this.again && this.d.open());
    } finally {
      this.polling = false;
    }
  }

  /** Listens where the store can say (PostgreSQL); again after a lost connection. */
  async listen(): Promise<void> {
    if (!this.d.open() || this.listener?.alive) return;
    await this.listener?.close().catch(() => {});
    this.listener = null;
    try {
      this.listener = await this.d.store.triggers.listen(() => {
        this.poll().catch((err) => this.d.log.warn({ err: errorMessage(err) }, `looking for triggers: ${errorMessage(err)}`));
      });
    } catch (err) {
      this.d.log.warn({ err: errorMessage(err) }, `cannot listen for triggers (${errorMessage(err)}); they are looked for every ${this.d.pollMs} ms`);
    }
  }

  async close(): Promise<void> {
    const l = this.listener;
    this.listener = null;
    await l?.close();
  }
}
