// Everything a scenario runs on: a two-host mesh in network namespaces (the
// demo's Mesh), one agent process per function namespace (clients/agent.ts),
// the link emulator, and the three transports, of which exactly one is up at
// a time. Scenarios ask for a transport with use(); the switch stops the others.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ADMIN_PORT, Mesh } from '../../daemon/demo/mesh.js';
import { randomPrefix, type FunctionInfo, type HostInfo } from '../../daemon/demo/topology.js';
import type { Target } from '../clients/servers.js';
import { LinkEmulator } from '../emulator/emulator-control.js';
import { PlainTransport } from '../transports/plain.js';
import { QmeshTransport } from '../transports/qmesh.js';
import { StunnelTransport } from '../transports/stunnel.js';
import type { Route, Transport, TransportName, TransportOptions } from '../transports/transport.js';
import { CommandChild } from './child-process.js';

const AGENT_JS = path.join(path.dirname(fileURLToPath(import.meta.url)), '../clients/agent.js');

/**
 * Applied in every host and function namespace. tcp_tw_reuse=1 lets a client
 * (or a proxy's outbound side) reuse a TIME_WAIT port for a new outgoing
 * connection after a second; without it scenario 7 runs out of the 28,232
 * ephemeral ports within seconds for every transport alike.
 */
export const BENCH_SYSCTLS = ['net.ipv4.tcp_tw_reuse=1'] as const;

export class BenchEnv {
  readonly agents = new Map<string, CommandChild>();
  readonly hostAgents = new Map<string, CommandChild>();
  readonly emulator: LinkEmulator;
  readonly transports: Record<TransportName, Transport>;
  readonly qmesh: QmeshTransport;
  readonly stunnel: StunnelTransport;
  #current: TransportName | null = null;

  private constructor(readonly mesh: Mesh) {
    this.emulator = new LinkEmulator(mesh);
    this.qmesh = new QmeshTransport(mesh);
    this.stunnel = new StunnelTransport(mesh);
    this.transports = { plain: new PlainTransport(), stunnel: this.stunnel, qmesh: this.qmesh };
  }

  static async create(): Promise<BenchEnv> {
    const mesh = await Mesh.create({ prefix: randomPrefix('qmb'), hosts: 2, functionsPerHost: 1 });
    // Profiling aid: QMESH_BENCH_NODE_ARGS="--cpu-prof --cpu-prof-dir=/tmp/prof" (NODE_OPTIONS refuses --cpu-prof).
    mesh.nodeArgs = (process.env.QMESH_BENCH_NODE_ARGS ?? '').split(' ').filter(Boolean);
    const env = new BenchEnv(mesh);
    try {
      for (const ns of mesh.topo.namespaces) {
        if (ns === mesh.topo.underlayNs) continue;
        const r = await mesh.topo.exec(ns, ['sysctl', '-q', '-w', ...BENCH_SYSCTLS]);
        if (r.code !== 0) throw new Error(`sysctl in ${ns}: ${r.stderr.trim()}`);
      }
      await Promise.all(
        mesh.hosts.flatMap((h) =>
          h.functions.map(async (f) => {
            const agent = await CommandChild.start(mesh.topo, f.ns, [process.execPath, '--expose-gc', AGENT_JS], `agent ${f.name}`);
            env.agents.set(f.name, agent);
          }),
        ),
      );
      // One agent per host too: Mesh.admin() starts a process (curl) per /healthz or
      // /status poll; the resident agent answers in about a millisecond, so daemon
      // restarts (every transport switch, scenario 2) cost less.
      await Promise.all(
        mesh.hosts.map(async (h) => {
          const agent = await CommandChild.start(mesh.topo, h.ns, [process.execPath, AGENT_JS], `agent ${h.name}`);
          env.hostAgents.set(h.name, agent);
        }),
      );
      mesh.admin = async (host, urlPath) => {
        const agent = env.hostAgents.get(host.name);
        if (!agent) throw new Error(`no agent in ${host.name}`);
        return agent.call<{ status: number; body: string }>('admin-get', { url: `http://127.0.0.1:${ADMIN_PORT}${urlPath}` }, 5000);
      };
      await env.emulator.start();
    } catch (err) {
      await env.destroy();
      throw err;
    }
    return env;
  }

  get hosts(): readonly HostInfo[] {
    return this.mesh.hosts;
  }

  /** The first function of host i (1-based). */
  fn(hostIndex: number): FunctionInfo {
    return this.hostOf(hostIndex).functions[0]!;
  }

  hostOf(hostIndex: number): HostInfo {
    const h = this.mesh.hosts[hostIndex - 1];
    if (!h) throw new Error(`no host ${hostIndex}`);
    return h;
  }

  agent(fn: FunctionInfo): CommandChild {
    const a = this.agents.get(fn.name);
    if (!a) throw new Error(`no agent in ${fn.name}`);
    return a;
  }

  /** A route from host a's function to port on host b's function. */
  route(a: number, b: number, port: number): Route {
    return { from: this.hostOf(a), toHost: this.hostOf(b), to: this.fn(b), port };
  }

  get current(): TransportName | null {
    return this.#current;
  }

  /** Makes `name` the only transport up, for these routes; returns it. */
  async use(name: TransportName, routes: readonly Route[], opts: TransportOptions = {}): Promise<Transport> {
    for (const other of Object.values(this.transports)) {
      if (other.name !== name) await other.down();
    }
    const t = this.transports[name];
    await t.up(routes, opts);
    this.#current = name;
    return t;
  }

  address(name: TransportName, route: Route): Target {
    return this.transports[name].address(route);
  }

  async destroy(): Promise<void> {
    await this.emulator.stop().catch(() => undefined);
    await this.stunnel.down().catch(() => undefined);
    // A clean stop (SIGTERM), so daemons run with QMESH_BENCH_NODE_ARGS=--cpu-prof write their profiles.
    await this.transports.qmesh.down().catch(() => undefined);
    await Promise.all([...this.agents.values(), ...this.hostAgents.values()].map((a) => a.stop().catch(() => undefined)));
    await this.mesh.destroy();
  }
}

/** Resident set size of a process in bytes (VmRSS), or NaN if it is gone. */
/** CPU seconds (user + system, all threads) a process has used so far; NaN if it is gone. */
export function cpuSeconds(pid: number | undefined): number {
  if (!pid) return NaN;
  try {
    // Fields after the command name (which may hold spaces): utime and stime are the 12th and 13th.
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const CLOCK_TICKS_PER_SECOND = 100; // sysconf(_SC_CLK_TCK) on Linux
    return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS_PER_SECOND;
  } catch {
    return NaN;
  }
}

export function rssBytes(pid: number | undefined): number {
  if (!pid) return NaN;
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : NaN;
  } catch {
    return NaN;
  }
}
