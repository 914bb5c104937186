// The data-access contract, part four (see types.ts): coordination between processes (triggers,
// daemons, schedule ticks), the audit trail and the console's sessions.

export interface TriggerRow {
  id: number;
  tenant: string;
  requestedAt: string;
  requestedBy: string | null;
  pickedUpAt: string | null;
  pickedUpBy: string | null;
  runId: number | null;
  finishedAt: string | null;
  status: string | null;
  message: string | null;
}

/** Told of new triggers as they are requested (PostgreSQL's LISTEN/NOTIFY). */
export interface TriggerListener {
  /** False once its connection is lost: listen again (the daemon's poll covers the gap). */
  readonly alive: boolean;
  close(): Promise<void>;
}

export interface TriggerStore {
  /** Records a request and tells the listeners. */
  request(tenant: string, requestedBy: string): Promise<number>;
  /**
   * Calls `onRequest` when a trigger is requested from any machine; null where there is nothing
   * to listen to (SQLite: one machine, whose poll is one indexed read).
   */
  listen(onRequest: () => void): Promise<TriggerListener | null>;
  get(id: number): Promise<TriggerRow | null>;
  pending(tenant?: string): Promise<TriggerRow[]>;
  /** Takes the oldest pending trigger of one of `tenants` for `owner`; null when none. */
  take(tenants: string[], owner: string): Promise<TriggerRow | null>;
  finish(ids: number[], outcome: { runId: number | null; status: string; message: string | null }): Promise<void>;
  release(ids: number[]): Promise<void>;
  /** Triggers taken by owners that `isGone` declares dead: pending again. */
  recoverOrphans(isGone: (owner: string) => boolean): Promise<number>;
}

export interface DaemonInfo {
  owner: string;
  host: string;
  pid: number;
  startedAt: string;
  heartbeatAt: string;
  stoppedAt: string | null;
  tenants: string[];
  /** Tenants it is running now. */
  running: string[];
}

export interface DaemonStore {
  register(info: { owner: string; host: string; pid: number; tenants: string[] }): Promise<void>;
  beat(owner: string, running: string[]): Promise<void>;
  unregister(owner: string): Promise<void>;
  /** Daemons not stopped, with the age of their heartbeat by the store's clock. */
  list(): Promise<(DaemonInfo & { heartbeatAgeMs: number })[]>;
}

export interface ScheduleStore {
  /** Claims one scheduled tick of a tenant cluster-wide: true for exactly one caller. */
  claimTick(tenant: string, dueAt: string, owner: string): Promise<boolean>;
  /** Forgets ticks older than `before`. */
  prune(before: string): Promise<void>;
  /** Overdue feeds reported, per episode. */
  overdueReported(tenant: string, since: string): Promise<boolean>;
}

export interface AuditEntry {
  id: number;
  at: string;
  actor: string;
  action: string;
  tenant: string | null;
  target: string | null;
  result: string;
  detail: string | null;
}

export interface AuditStore {
  record(e: Omit<AuditEntry, 'id' | 'at'>): Promise<number>;
  recent(opts: { tenant?: string; limit: number }): Promise<AuditEntry[]>;
}

/** A signed-in console user. Only a hash of the session's cookie is stored. */
export interface ConsoleSession {
  username: string;
  role: string;
  /** The session's CSRF token (every form of the session carries it). */
  csrf: string;
  createdAt: string;
  expiresAt: string;
}

/** Console sessions, in the store so that every daemon of a cluster knows them. */
export interface SessionStore {
  create(s: { idHash: string; username: string; role: string; csrf: string; seconds: number }): Promise<void>;
  /** The session, unless it expired (by the store's clock). */
  get(idHash: string): Promise<ConsoleSession | null>;
  delete(idHash: string): Promise<void>;
  /** Forgets expired sessions; returns how many. */
  prune(): Promise<number>;
}
