// Puts a tunnel connection's packets on the wire. A run of equal-sized QUIC
// packets that lie back to back in memory leaves in one sendmsg with UDP GSO
// (UDP_SEGMENT): the kernel cuts it into datagrams, so one syscall and one pass
// through the network stack carry up to 64 packets. Anything GSO cannot take
// (one packet, no addon, a full socket buffer, a device without GSO) goes
// through dgram's send, one datagram at a time.
import dgram from 'node:dgram';
import { tryAddon, type Addon } from '../native/addon.js';

const EAGAIN = 11;
const ENOBUFS = 105;
const ECONNREFUSED = 111;
/** Linux accepts at most 64 segments and 64 KiB per GSO send. */
export const GSO_MAX_SEGMENTS = 64;
export const GSO_MAX_BYTES = 65_000;

function fdOf(socket: dgram.Socket): number | null {
  const state = Object.getOwnPropertySymbols(socket).find((s) => s.description === 'state symbol');
  const fd = state ? (socket as any)[state]?.handle?.fd : undefined;
  return typeof fd === 'number' && fd >= 0 ? fd : null;
}

export class UdpSender {
  private readonly addon: Addon | null;
  private gso: boolean;
  private fd: number | null = null;

  /** `to` is null for a connect()ed socket. */
  constructor(
    private readonly socket: dgram.Socket,
    private readonly to: { host: string; port: number } | null,
    useGso = true,
  ) {
    this.addon = useGso ? tryAddon() : null;
    this.gso = this.addon !== null;
  }

  /** Sends `length` bytes at `offset` as datagrams of `segment` bytes (the last may be shorter). */
  send(buf: Buffer, offset: number, length: number, segment: number): void {
    if (length > segment && this.gso) {
      this.fd ??= fdOf(this.socket);
      if (this.fd !== null) {
        const n = this.addon!.sendSegments(this.fd, buf, offset, length, segment, this.to?.host ?? null, this.to?.port ?? 0);
        if (n >= 0) return;
        if (n === -ECONNREFUSED) {
          // What dgram reports for a connected socket: the peer's port is closed. Reported on
          // the next tick, as dgram does: the handler tears the tunnel down and closes this
          // socket, which must not happen in the middle of the caller's flush.
          const err = Object.assign(new Error('send ECONNREFUSED'), { code: 'ECONNREFUSED', errno: n });
          process.nextTick(() => this.socket.emit('error', err));
          return;
        }
        if (n !== -EAGAIN && n !== -ENOBUFS) this.gso = false; // e.g. EIO: no GSO on this path
      }
    }
    try {
      for (let at = offset; at < offset + length; at += segment) {
        const slice = buf.subarray(at, Math.min(at + segment, offset + length));
        if (this.to) this.socket.send(slice, this.to.port, this.to.host);
        else this.socket.send(slice);
      }
    } catch (err) {
      // The socket was closed under a connection that is going away: its packets have nowhere to go.
      if ((err as NodeJS.ErrnoException).code !== 'ERR_SOCKET_DGRAM_NOT_RUNNING') throw err;
    }
  }
}
