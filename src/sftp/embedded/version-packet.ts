// Announcing SFTP extensions from the embedded server (works around an ssh2 limitation: its
// server has no option for the extensions its VERSION reply lists).
import type { SFTPWrapper } from 'ssh2';

/** The VERSION packet ssh2's server always sends: length 5, type VERSION (2), version 3. */
const PLAIN_VERSION_PACKET = Buffer.from([0, 0, 0, 5, 2, 0, 0, 0, 3]);

/** The parts of ssh2's SFTP object that `advertiseExtensions` relies on. */
interface SftpInternals {
  _protocol?: SshProtocol;
  outgoing?: { id: number; window: number };
}
interface SshProtocol {
  channelData?: (channelId: number, data: Buffer | string) => void;
}
interface PendingVersion {
  packet: Buffer;
  outgoing: { window: number };
}

/** Per SSH connection: remote channel id → the VERSION packet to send instead of the plain one. */
const pendingVersions = new WeakMap<SshProtocol, Map<number, PendingVersion>>();

/**
 * ssh2's server answers INIT with a fixed VERSION packet that announces no extensions, and has no
 * option to change it. Clients only use extensions a server announces (ssh2's client refuses
 * `posixRename()` outright), so the worker would behave differently here than against OpenSSH.
 * We therefore swap that one packet, on its way out of this channel, for one that lists
 * `extensions`. If ssh2's internals ever change shape this does nothing: the server still works,
 * it just announces no extensions.
 */
export function advertiseExtensions(sftp: SFTPWrapper, extensions: Record<string, string>): void {
  const { _protocol: protocol, outgoing } = sftp as unknown as SftpInternals;
  if (!protocol || typeof protocol.channelData !== 'function' || typeof outgoing?.id !== 'number') return;

  const pending = pendingVersionsOf(protocol);
  const channelId = outgoing.id;
  pending.set(channelId, { packet: encodeVersionPacket(extensions), outgoing });
  sftp.once('close', () => {
    if (pending.get(channelId)?.outgoing === outgoing) pending.delete(channelId);
  });
}

function pendingVersionsOf(protocol: SshProtocol): Map<number, PendingVersion> {
  let pending = pendingVersions.get(protocol);
  if (!pending) {
    pending = new Map();
    pendingVersions.set(protocol, pending);
    interceptVersionPackets(protocol, pending);
  }
  return pending;
}

/** Wraps the connection's channelData() once; every SFTP channel on it registers in `pending`. */
function interceptVersionPackets(protocol: SshProtocol, pending: Map<number, PendingVersion>): void {
  const send = protocol.channelData!;
  protocol.channelData = function (this: unknown, channelId: number, data: Buffer | string) {
    const version = pending.get(channelId);
    if (version && Buffer.isBuffer(data) && data.equals(PLAIN_VERSION_PACKET)) {
      pending.delete(channelId);
      // ssh2 has already charged the plain packet to the channel's flow-control window; charge
      // the extra bytes too (the window is always this large at the start of a channel).
      const extra = version.packet.length - data.length;
      if (version.outgoing.window >= extra) {
        version.outgoing.window -= extra;
        return send.call(this, channelId, version.packet);
      }
    }
    return send.call(this, channelId, data);
  };
}

function encodeVersionPacket(extensions: Record<string, string>): Buffer {
  const body: Buffer[] = [Buffer.from([2, 0, 0, 0, 3])]; // type VERSION, version 3
  for (const [name, data] of Object.entries(extensions)) body.push(sshString(name), sshString(data));
  const payload = Buffer.concat(body);
  const length = Buffer.alloc(4);
  length.writeUInt32BE(payload.length);
  return Buffer.concat([length, payload]);
}

function sshString(value: string): Buffer {
  const bytes = Buffer.from(value, 'utf8');
  const length = Buffer.alloc(4);
  length.writeUInt32BE(bytes.length);
  return Buffer.concat([length, bytes]);
}
