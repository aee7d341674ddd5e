// Runs test/support/fault-tcp.mjs in a namespace: a watch server that reports how
// each connection ended, and clients that report absolute timestamps.
import type { ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { Mesh } from '../../../daemon/demo/mesh.js';
import { waitFor } from '../../support/fn-net.js';

const SCRIPT = fileURLToPath(new URL('../../support/fault-tcp.mjs', import.meta.url));

export class WatchServer {
  readonly events: any[] = [];

  private constructor(readonly child: ChildProcess) {
    let buf = '';
    child.stdout?.setEncoding('utf8').on('data', (d: string) => {
      buf += d;
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        this.events.push(JSON.parse(buf.slice(0, nl)));
        buf = buf.slice(nl + 1);
      }
    });
  }

  static async start(mesh: Mesh, ns: string, spec: { ip: string; port: number; resetAfterBytes?: number }): Promise<WatchServer> {
    const s = new WatchServer(mesh.topo.spawn(ns, [process.execPath, SCRIPT, 'server', 'watch', JSON.stringify(spec)], { stdio: ['ignore', 'pipe', 'pipe'] }));
    await waitFor(() => s.events.some((e) => e.event === 'ready'), 10_000, `watch server ${spec.ip}:${spec.port}`);
    return s;
  }

  get conns(): any[] {
    return this.events.filter((e) => e.event === 'conn');
  }

  /** The connection report number `index` (0-based), waiting for it (bounded). */
  conn(index: number, ms: number): Promise<any> {
    return waitFor(() => this.conns[index], ms, `server connection report #${index}`, 20);
  }
}

/** Runs one fault-tcp.mjs client to the end; returns its result line. */
export async function faultClient(mesh: Mesh, ns: string, mode: 'conns' | 'idle' | 'stream' | 'reset', spec: Record<string, unknown>, timeoutMs: number): Promise<any> {
  const res = await mesh.topo.exec(ns, [process.execPath, SCRIPT, 'client', mode, JSON.stringify({ ...spec, timeoutMs })], { timeoutMs: timeoutMs + 5_000 });
  const line = res.stdout.split('\n').find((l) => l.startsWith('{"event":"result"'));
  if (!line) throw new Error(`${mode} client in ${ns}: no result (exit ${res.code}${res.timedOut ? ', timed out' : ''}): ${res.stderr.trim()}`);
  return JSON.parse(line);
}
