// Runs test/support/fn-tcp.mjs inside the mesh's namespaces: FnServer keeps a
// server running and collects its JSON lines; fnClient runs one client to the
// end and returns its result line. Every wait here is bounded.
import type { ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { Mesh } from '../../daemon/demo/mesh.js';

const SCRIPT = fileURLToPath(new URL('./fn-tcp.mjs', import.meta.url));
const NODE = process.execPath;
/** Spare time for node start-up in a namespace on top of a client's own timeout. */
const SPAWN_SLACK_MS = 5_000;

export function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Polls `check` every intervalMs until it returns a truthy value; throws after ms. */
export async function waitFor<T>(check: () => Promise<T> | T, ms: number, what: string, intervalMs = 100): Promise<T> {
  const deadline = Date.now() + ms;
  let last: unknown;
  for (;;) {
    try {
      const v = await check();
      if (v) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`${what}: not true within ${ms} ms${last ? ` (last error: ${String(last)})` : ''}`);
    await sleep(intervalMs);
  }
}

export type ServerMode = 'rpc' | 'echo' | 'banner' | 'http';

export interface ServerSpec {
  ip: string;
  port: number;
  /** rpc: bytes replied per connection; 0 replies with FIN only. */
  replyBytes?: number;
  /** rpc: reply after the client's FIN (default) or at once on connect. */
  replyWhen?: 'fin' | 'connect';
  /** ASCII string repeated at the start of every 64 KiB payload chunk. */
  marker?: string;
  banner?: string;
  /** rpc: wait this long after the last reply byte before ending (FIN). */
  endDelayMs?: number;
}

/** A fn-tcp.mjs server running in one namespace until stop() or mesh.destroy(). */
export class FnServer {
  readonly events: any[] = [];
  private stderr = '';
  private waiters = new Set<() => void>();

  private constructor(readonly child: ChildProcess, readonly spec: ServerSpec) {
    let buf = '';
    child.stdout?.setEncoding('utf8').on('data', (d: string) => {
      buf += d;
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        try {
          this.events.push(JSON.parse(line));
        } catch {
          this.events.push({ event: 'garbage', line });
        }
        for (const w of this.waiters) w();
      }
    });
    child.stderr?.setEncoding('utf8').on('data', (d: string) => (this.stderr += d));
    child.once('exit', () => {
      for (const w of this.waiters) w();
    });
  }

  static async start(mesh: Mesh, ns: string, mode: ServerMode, spec: ServerSpec, ms = 10_000): Promise<FnServer> {
    const child = mesh.topo.spawn(ns, [NODE, SCRIPT, 'server', mode, JSON.stringify(spec)], { stdio: ['ignore', 'pipe', 'pipe'] });
    const server = new FnServer(child, spec);
    await server.waitEvent((e) => e.event === 'ready', ms, `${mode} server on ${spec.ip}:${spec.port}`);
    return server;
  }

  /** Connection reports so far ("conn" lines). */
  get conns(): any[] {
    return this.events.filter((e) => e.event === 'conn');
  }

  /** Resolves with the first event matching `pred` (already seen or still to come). */
  waitEvent(pred: (e: any) => boolean, ms: number, what: string): Promise<any> {
    return withTimeout(
      new Promise((resolve, reject) => {
        const check = (): void => {
          const hit = this.events.find(pred);
          if (hit) {
            this.waiters.delete(check);
            resolve(hit);
          } else if (this.child.exitCode !== null || this.child.signalCode !== null) {
            this.waiters.delete(check);
            reject(new Error(`${what}: server exited (${this.child.exitCode ?? this.child.signalCode}): ${this.stderr}`));
          }
        };
        this.waiters.add(check);
        check();
      }),
      ms,
      what,
    );
  }

  /** Resolves once `count` connections have been reported. */
  async waitConns(count: number, ms: number): Promise<any[]> {
    await this.waitEvent(() => this.conns.length >= count, ms, `${count} connection report(s) from ${this.spec.ip}:${this.spec.port}`);
    return this.conns;
  }

  stop(): void {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
  }
}

export type ClientMode = 'rpc' | 'many' | 'banner' | 'http' | 'ticker';

export interface ClientSpec {
  ip?: string;
  port?: number;
  /** The client gives up (error "TIMEOUT") after this long. Default 30 s. */
  timeoutMs?: number;
  marker?: string;
  /** rpc */
  requestBytes?: number;
  sendAfterEnd?: boolean;
  /** rpc: wait this long after the last request byte before ending (FIN). */
  endDelayMs?: number;
  localAddress?: string;
  /** many */
  targets?: Array<{ ip: string; port: number }>;
  count?: number;
  minBytes?: number;
  maxBytes?: number;
  /** ticker: sends tickBytes every tickMs for durationMs on one connection */
  tickBytes?: number;
  tickMs?: number;
  durationMs?: number;
  /** http */
  bodyBytes?: number;
  path?: string;
}

/** Runs one fn-tcp.mjs client in `ns` and returns its result line; throws if it printed none. */
export async function fnClient(mesh: Mesh, ns: string, mode: ClientMode, spec: ClientSpec): Promise<any> {
  const timeoutMs = spec.timeoutMs ?? 30_000;
  const res = await mesh.topo.exec(ns, [NODE, SCRIPT, 'client', mode, JSON.stringify({ ...spec, timeoutMs })], { timeoutMs: timeoutMs + SPAWN_SLACK_MS });
  const line = res.stdout.split('\n').find((l) => l.startsWith('{"event":"result"'));
  if (!line) throw new Error(`${mode} client in ${ns}: no result (exit ${res.code}${res.timedOut ? ', timed out' : ''}): ${res.stderr.trim()}`);
  return JSON.parse(line);
}

/** A marker no real traffic contains: proof of plaintext wherever it is found on the wire. */
export function plaintextMarker(tag: string): string {
  return `QMESH-PLAINTEXT-${tag}-${Math.random().toString(36).slice(2, 12)}-`;
}
