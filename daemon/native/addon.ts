// Loads the N-API addon built from daemon/native/sockopt.c by node-gyp at `npm ci`
// (build/Release/qmesh_sockopt.node). capture/ and tunnel/ reach the kernel through it;
// cli/run.ts tells systemd it is ready through it (admin/systemd-notify.ts).
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export interface Addon {
  originalDst(fd: number, family: number): [string, number];
  markedSocket(family: number, mark: number): number;
  closeFd(fd: number): void;
  /** Bytes sent, or -errno. */
  sendSegments(fd: number, buf: Buffer, offset: number, length: number, segment: number, host: string | null, port: number): number;
  /** One datagram to systemd's notify socket (a path, or '@name' in the abstract namespace); bytes sent. */
  sdNotify(path: string, message: string): number;
  /** SO_LINGER {on, 0}: an unplanned close (a killed process) resets instead of sending FIN. */
  setAbortiveClose(fd: number, on: boolean): void;
}

const here = path.dirname(fileURLToPath(import.meta.url));
// From dist/daemon/native or (under vitest) daemon/native to the package root's build/.
const CANDIDATES = [path.resolve(here, '../../../build/Release/qmesh_sockopt.node'), path.resolve(here, '../../build/Release/qmesh_sockopt.node')];

let addon: Addon | null = null;
let loadError: string | null = null;

export function loadAddon(): Addon {
  if (addon) return addon;
  const require = createRequire(import.meta.url);
  for (const p of CANDIDATES) {
    try {
      addon = require(p) as Addon;
      return addon;
    } catch (err) {
      loadError = String(err);
    }
  }
  throw new Error(`qmesh native addon not found (run \`npm ci\` or \`npm run prepare\` to build it): ${loadError}`);
}

/** The addon, or null when it is not built (callers fall back to plain Node I/O). */
export function tryAddon(): Addon | null {
  try {
    return loadAddon();
  } catch {
    return null;
  }
}
