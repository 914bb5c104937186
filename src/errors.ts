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
  constructor(message: string, readonly problems: string[] = []) {
    super(problems.length ? `${message}\n${problems.map((p) => `  ${p}`).join('\n')}` : message);
  }
}

/** The remote side failed: unreachable host, refused login, wrong host key, timeout. */
export class RemoteError extends ProvisionerError {
  override readonly exitCode = ExitCode.failed;
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

/** A whole file cannot be imported (misnamed, missing column, not UTF-8, ...). */
export class FileRejected extends ProvisionerError {
  override readonly exitCode = ExitCode.problems;
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
