// TCP + TLS 1.3 with client certificates through Debian's stunnel4, one
// stunnel process per host namespace (config from stunnel-config.ts, certificates
// from the mesh's own PKI). The client dials its host's bridge address.
import fs from 'node:fs';
import path from 'node:path';
import type { ChildProcess } from 'node:child_process';
import type { Mesh } from '../../daemon/demo/mesh.js';
import type { Target } from '../clients/servers.js';
import { portsFor, stunnelConfig, type StunnelPki } from './stunnel-config.js';
import { routeKey, type Route, type Transport } from './transport.js';

const STUNNEL_BIN = 'stunnel4';
/** stunnel opens its listeners within a few ms; this only trips on a bad config. */
const LISTEN_TIMEOUT_MS = 10_000;

export class StunnelTransport implements Transport {
  readonly name = 'stunnel' as const;
  #procs: ChildProcess[] = [];
  #routes: readonly Route[] = [];
  #index = new Map<string, number>();
  #stderr: string[] = [];

  constructor(private readonly mesh: Mesh) {}

  get pids(): number[] {
    return this.#procs.map((p) => p.pid!).filter(Boolean);
  }

  async up(routes: readonly Route[]): Promise<void> {
    const key = routes.map(routeKey).join(',');
    if (this.#procs.length > 0 && key === this.#routes.map(routeKey).join(',')) return;
    await this.down();
    this.#routes = routes;
    this.#index = new Map(routes.map((r, i) => [routeKey(r), i]));
    const pkiDir = path.join(this.mesh.dir, 'pki');
    const pki: StunnelPki = {
      caFile: path.join(pkiDir, 'ca.crt'),
      certFile: (h) => path.join(pkiDir, `${h}.crt`),
      keyFile: (h) => path.join(pkiDir, `${h}.key`),
    };
    for (const host of this.mesh.hosts) {
      if (!routes.some((r) => r.from === host || r.toHost === host)) continue;
      const conf = path.join(this.mesh.dir, `stunnel-${host.name}.conf`);
      const log = path.join(this.mesh.dir, `stunnel-${host.name}.log`);
      fs.writeFileSync(conf, stunnelConfig(host.name, routes, pki, log));
      // Note: stunnel holds two descriptors per connection, so the machine's hard
      // RLIMIT_NOFILE (20,000 here; raising it needs CAP_SYS_RESOURCE) caps it near 10,000.
      const child = this.mesh.topo.spawn(host.ns, [STUNNEL_BIN, conf], { stdio: ['ignore', 'ignore', 'pipe'] });
      child.stderr?.on('data', (b: Buffer) => this.#stderr.push(b.toString()));
      this.#procs.push(child);
    }
    await this.#waitListening(routes);
  }

  address(route: Route): Target {
    const i = this.#index.get(routeKey(route));
    if (i === undefined) throw new Error(`stunnel has no service for ${routeKey(route)}; pass it to up()`);
    return { host: route.from.gatewayIp, port: portsFor(i).clientPort };
  }

  async down(): Promise<void> {
    const procs = this.#procs;
    this.#procs = [];
    await Promise.all(
      procs.map(async (p) => {
        if (p.exitCode !== null || p.signalCode !== null) return;
        const exited = new Promise<void>((r) => p.once('exit', () => r()));
        p.kill('SIGTERM');
        const t = setTimeout(() => p.kill('SIGKILL'), 3000);
        await exited;
        clearTimeout(t);
      }),
    );
  }

  /** Polls `ss` in each host until every accept address listens (or a stunnel died). */
  async #waitListening(routes: readonly Route[]): Promise<void> {
    const deadline = Date.now() + LISTEN_TIMEOUT_MS;
    const want = new Map<string, Set<string>>();
    routes.forEach((r, i) => {
      const { clientPort, serverPort } = portsFor(i);
      (want.get(r.from.ns) ?? want.set(r.from.ns, new Set()).get(r.from.ns)!).add(`${r.from.gatewayIp}:${clientPort}`);
      (want.get(r.toHost.ns) ?? want.set(r.toHost.ns, new Set()).get(r.toHost.ns)!).add(`${r.toHost.underlayIp}:${serverPort}`);
    });
    for (;;) {
      let missing = 0;
      for (const [ns, addrs] of want) {
        const r = await this.mesh.topo.exec(ns, ['ss', '-Hltn']);
        for (const a of addrs) if (!r.stdout.includes(a)) missing++;
      }
      if (missing === 0) return;
      const dead = this.#procs.find((p) => p.exitCode !== null);
      if (dead || Date.now() > deadline) {
        const logs = this.mesh.hosts
          .map((h) => path.join(this.mesh.dir, `stunnel-${h.name}.log`))
          .filter((f) => fs.existsSync(f))
          .map((f) => fs.readFileSync(f, 'utf8').split('\n').slice(-5).join(' | '));
        throw new Error(`stunnel did not listen on every route (${missing} missing): ${[...logs, ...this.#stderr].join(' || ').slice(-400)}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}
