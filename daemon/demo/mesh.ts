// A whole qmesh on one machine: the namespace topology (topology.ts), a CA and
// one certificate per host (pki/), one config file per host, and a `qmesh run`
// process per host namespace. `qmesh demo`, test/e2e and bench/ build on it.
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { initCa, issueHost } from '../pki/index.js';
import { randomPrefix, Topology, type HostInfo } from './topology.js';
import { packageRoot } from './package-root.js';

/** The built CLI, found from the package root whether this file runs from dist/ or (under vitest) from source. */
export const CLI = path.join(packageRoot(), 'dist/daemon/cli/main.js');
export const QUIC_PORT = 4433;
export const CAPTURE_PORT = 15001;
export const ADMIN_PORT = 15000;

export interface MeshOptions {
  hosts?: number;
  functionsPerHost?: number;
  prefix?: string;
  mtu?: number;
  trustDomain?: string;
  logLevel?: string;
  /** Extra or replaced config keys per host (merged one level deep). */
  configFor?: (host: HostInfo) => Record<string, unknown>;
}

export interface RunningDaemon {
  host: HostInfo;
  child: ChildProcess;
  log: string[];
  exited: Promise<number | null>;
}

export class Mesh {
  readonly daemons = new Map<string, RunningDaemon>();
  /** Extra node flags for daemons started from now on (e.g. --cpu-prof when profiling). */
  nodeArgs: string[] = [];

  private constructor(
    readonly topo: Topology,
    readonly dir: string,
    readonly trustDomain: string,
  ) {}

  static async create(opts: MeshOptions = {}): Promise<Mesh> {
    const topo = await Topology.create({
      prefix: opts.prefix ?? randomPrefix('qm'),
      hosts: opts.hosts ?? 2,
      functionsPerHost: opts.functionsPerHost ?? 1,
      ...(opts.mtu ? { mtu: opts.mtu } : {}),
    });
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), `qmesh-${topo.prefix}-`));
    const trustDomain = opts.trustDomain ?? 'qmesh.test';
    try {
      const mesh = new Mesh(topo, dir, trustDomain);
      await initCa({ dir: path.join(dir, 'pki'), trustDomain });
      for (const h of topo.hosts) {
        await issueHost({ dir: path.join(dir, 'pki'), name: h.name });
        mesh.writeConfig(h, opts);
      }
      return mesh;
    } catch (err) {
      await topo.destroy();
      fs.rmSync(dir, { recursive: true, force: true });
      throw err;
    }
  }

  get hosts(): readonly HostInfo[] {
    return this.topo.hosts;
  }

  configPath(host: HostInfo): string {
    return path.join(this.dir, `${host.name}.json`);
  }

  /** The config a host gets: every other host is a peer. */
  baseConfig(host: HostInfo, logLevel = 'info'): Record<string, any> {
    return {
      node: { name: host.name },
      listen: { quic: `${host.underlayIp}:${QUIC_PORT}`, capture: CAPTURE_PORT, admin: `127.0.0.1:${ADMIN_PORT}` },
      tls: { ca: 'pki/ca.crt', cert: `pki/${host.name}.crt`, key: `pki/${host.name}.key`, trustDomain: this.trustDomain },
      local: { cidrs: [host.functionCidr] },
      peers: this.topo.hosts
        .filter((p) => p !== host)
        .map((p) => ({ name: p.name, endpoint: `${p.underlayIp}:${QUIC_PORT}`, cidrs: [p.functionCidr] })),
      log: { level: logLevel },
    };
  }

  writeConfig(host: HostInfo, opts: Pick<MeshOptions, 'configFor' | 'logLevel'> = {}): void {
    const base = this.baseConfig(host, opts.logLevel);
    for (const [k, v] of Object.entries(opts.configFor?.(host) ?? {})) {
      base[k] = v && typeof v === 'object' && !Array.isArray(v) ? { ...base[k], ...v } : v;
    }
    fs.writeFileSync(this.configPath(host), JSON.stringify(base, null, 2));
  }

  /**
   * Starts `qmesh run` in the host's namespace and waits until /healthz says 200.
   * `as`: argv put in front of node (e.g. setpriv dropping to the unit's user and
   * capabilities) and extra environment, as a service manager would run it.
   */
  async startDaemon(host: HostInfo, timeoutMs = 10_000, as: { wrap?: readonly string[]; env?: NodeJS.ProcessEnv } = {}): Promise<RunningDaemon> {
    const argv = [...(as.wrap ?? []), process.execPath, ...this.nodeArgs, CLI, 'run', '--config', this.configPath(host)];
    const child = this.topo.spawn(host.ns, argv, { stdio: ['ignore', 'pipe', 'pipe'], ...(as.env ? { env: { ...process.env, ...as.env } } : {}) });
    const log: string[] = [];
    const collect = (b: Buffer): void => {
      for (const line of b.toString().split('\n')) if (line) log.push(line);
      if (log.length > 5000) log.splice(0, log.length - 5000);
    };
    child.stdout?.on('data', collect);
    child.stderr?.on('data', collect);
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    const d: RunningDaemon = { host, child, log, exited };
    this.daemons.set(host.name, d);
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (child.exitCode !== null || child.signalCode !== null) {
        throw new Error(`qmesh on ${host.name} exited ${child.exitCode ?? child.signalCode}: ${log.slice(-5).join('\n')}`);
      }
      const r = await this.admin(host, '/healthz').catch(() => null);
      if (r?.status === 200) return d;
      await sleep(100);
    }
    throw new Error(`qmesh on ${host.name} not healthy within ${timeoutMs} ms: ${log.slice(-5).join('\n')}`);
  }

  async startAll(): Promise<void> {
    await Promise.all(this.topo.hosts.map((h) => this.startDaemon(h)));
    await this.waitTunnelsUp();
  }

  /** GET on a host's admin listener (loopback inside its namespace), with curl: cheap to start. */
  async admin(host: HostInfo, urlPath: string): Promise<{ status: number; body: string }> {
    const r = await this.topo.exec(host.ns, ['curl', '-s', '-m', '4', '-w', '\n%{http_code}', `http://127.0.0.1:${ADMIN_PORT}${urlPath}`], { timeoutMs: 5000 });
    const lines = r.stdout.split('\n');
    const status = Number(lines.pop());
    return { status: Number.isFinite(status) ? status : 0, body: lines.join('\n') };
  }

  async status(host: HostInfo): Promise<any> {
    const r = await this.admin(host, '/status');
    return JSON.parse(r.body);
  }

  /** Waits until every daemon reports every outbound tunnel up. */
  async waitTunnelsUp(timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const states = await Promise.all(
        [...this.daemons.values()].map(async (d) => ((await this.status(d.host).catch(() => ({ peers: [] }))).peers as any[]).every((p) => p.outbound.state === 'up')),
      );
      if (states.every(Boolean)) return;
      if (Date.now() > deadline) throw new Error('tunnels not up in time');
      await sleep(100);
    }
  }

  /** Sends `signal` to a host's daemon and waits (bounded) for it to exit. */
  async stopDaemon(host: HostInfo, signal: NodeJS.Signals = 'SIGTERM', timeoutMs = 10_000): Promise<number | null> {
    const d = this.daemons.get(host.name);
    if (!d) return null;
    this.daemons.delete(host.name);
    if (d.child.exitCode !== null) return d.child.exitCode;
    d.child.kill(signal);
    let timer: NodeJS.Timeout | undefined;
    const code = await Promise.race([d.exited, new Promise<'timeout'>((r) => (timer = setTimeout(() => r('timeout'), timeoutMs)))]);
    clearTimeout(timer);
    if (code === 'timeout') {
      d.child.kill('SIGKILL');
      return d.exited;
    }
    return code;
  }

  async destroy(): Promise<void> {
    await Promise.all([...this.daemons.values()].map((d) => this.stopDaemon(d.host, 'SIGKILL', 3000)));
    await this.topo.destroy();
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
