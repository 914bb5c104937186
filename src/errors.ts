// The few typed errors of provisioner. They are thrown deep inside and caught once, at the
// CLI edge, where each maps to an exit code. Per-row problems are never errors: they are data.

/** Exit codes of `run --now` and `validate` (SPEC §6). */
export const ExitCode = {
  ok: 0,
  problems: 1, // something was held, rejected or had row errors
  usage: 2, // usage or configuration error
  failed: 3, // a tenant could not be reached or processing failed
} as const;

export class ProvisionerError extends Error {
  readonly exitCode: number = ExitCode.failed;
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** Bad command line or configuration: the operator must fix something before anything runs. */
export class ConfigError extends ProvisionerError {
  override readonly exitCode = ExitCode.usage;
  constructor(
    /** The message without its list of problems. */
    readonly summary: string,
    readonly problems: string[] = [],
  ) {
    super(problems.length ? `${summary}\n${problems.map((p) => `  ${p}`).join('\n')}` : summary);
  }
}

/**
 * The remote side failed. `connectionLost`: the connection itself is gone (timeout, reset,
 * refused login): the run stops and what it claimed is recovered next time. Otherwise the
 * server answered (permission denied, no such file): that concerns one upload only.
 */
export class RemoteError extends ProvisionerError {
  override readonly exitCode = ExitCode.failed;
  readonly connectionLost: boolean;
  constructor(message: string, options?: { cause?: unknown; connectionLost?: boolean }) {
    super(message, options);
    this.connectionLost = options?.connectionLost ?? true;
  }
}

/** The host key the server presented is not the one pinned for the tenant. */
export class HostKeyMismatchError extends RemoteError {
  constructor(readonly tenant: string, readonly expected: string, readonly seen: string) {
    super(
      `host key mismatch for tenant ${tenant}: the server presented ${seen} but the configuration pins ${expected}. ` +
        `If the server's key really changed, confirm the new fingerprint with the host's operator and update sftp.hostKey.`,
    );
  }
}

/** The store stayed locked (or unreachable) for longer than we wait; nothing was changed. */
export class StoreBusyError extends ProvisionerError {
  override readonly exitCode = ExitCode.failed;
}

/** The database cannot be used: unreachable, wrong credentials, schema newer or older than ours. */
export class StoreError extends ProvisionerError {
  override readonly exitCode = ExitCode.failed;
}

/** A whole file cannot be imported (misnamed, missing column, not UTF-8, ...). */
export class FileRejected extends ProvisionerError {
  override readonly exitCode = ExitCode.problems;
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
