// The platform calls behind capture/ and inbound/: the original destination of a
// REDIRECTed connection and SO_MARKed sockets. Backed by the small N-API addon in
// daemon/native/sockopt.c (built by node-gyp at `npm ci`); tests may substitute fakes.
import { createRequire } from 'node:module';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export interface SocketOptions {
  /** [address, port] the client dialled before iptables REDIRECTed it here. */
  originalDestination(socket: net.Socket): { host: string; port: number };
  /** A TCP socket carrying `mark`, connected to host:port (half-open allowed). */
  connectMarked(host: string, port: number, family: 4 | 6, mark: number): net.Socket;
}

interface Addon {
  originalDst(fd: number, family: number): [string, number];
  markedSocket(family: number, mark: number): number;
  closeFd(fd: number): void;
}

const here = path.dirname(fileURLToPath(import.meta.url));
// dist/daemon/capture -> repository root holds build/Release
const ADDON_PATHS = [path.resolve(here, '../../../build/Release/qmesh_sockopt.node'), path.resolve(here, '../../build/Release/qmesh_sockopt.node')];

let addon: Addon | null = null;
function loadAddon(): Addon {
  if (addon) return addon;
  const require = createRequire(import.meta.url);
  let lastErr: unknown;
  for (const p of ADDON_PATHS) {
    try {
      addon = require(p) as Addon;
      return addon;
    } catch (err) {
      lastErr = err;
    }
  }
  throw new Error(`qmesh native addon not found (run \`npm ci\` or \`npm run prepare\` to build it): ${String(lastErr)}`);
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
