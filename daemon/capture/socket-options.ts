// The platform calls behind capture/ and inbound/: the original destination of a
// REDIRECTed connection and SO_MARKed sockets. Backed by the small N-API addon in
// daemon/native/sockopt.c (built by node-gyp at `npm ci`); tests may substitute fakes.
import net from 'node:net';
import { loadAddon } from '../native/addon.js';

export interface SocketOptions {
  /** [address, port] the client dialled before iptables REDIRECTed it here. */
  originalDestination(socket: net.Socket): { host: string; port: number };
  /** A TCP socket carrying `mark`, connected to host:port (half-open allowed). */
  connectMarked(host: string, port: number, family: 4 | 6, mark: number): net.Socket;
}

function fdOf(socket: net.Socket): number {
  const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (typeof fd !== 'number' || fd < 0) throw Object.assign(new Error('socket has no file descriptor'), { code: 'EBADF' });
  return fd;
}

export const linuxSocketOptions: SocketOptions = {
  originalDestination(socket) {
    const family = socket.localAddress?.includes(':') && !socket.localAddress.startsWith('::ffff:') ? 6 : 4;
    const [host, port] = loadAddon().originalDst(fdOf(socket), family);
    return { host, port };
  },
  connectMarked(host, port, family, mark) {
    const a = loadAddon();
    const fd = a.markedSocket(family, mark);
    let socket: net.Socket;
    try {
      socket = new net.Socket({ fd, allowHalfOpen: true, readable: true, writable: true });
    } catch (err) {
      a.closeFd(fd);
      throw err;
    }
    return socket.connect({ host, port });
  },
};

/** Checks the addon loads (for `qmesh run` start-up and check-config). */
export function nativeAddonAvailable(): string | null {
  try {
    loadAddon();
    return null;
  } catch (err) {
    return (err as Error).message;
  }
}
