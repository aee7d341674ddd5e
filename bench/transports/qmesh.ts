// qmesh itself: a `qmesh run` daemon per host (Mesh.startAll), capture rules
// installed by the daemons. The client dials the real destination and iptables
// redirects it. down() stops the daemons and removes their rules (which
// otherwise stay on purpose, failing closed), so plain TCP works again.
import type { HostInfo } from '../../daemon/demo/topology.js';
import type { Mesh } from '../../daemon/demo/mesh.js';
import { loadConfig } from '../../daemon/config/load.js';
import { RuleManager } from '../../daemon/iptables/manager.js';
import type { Target } from '../clients/servers.js';
import type { Route, Transport, TransportOptions } from './transport.js';

/** A stop in the bench must not wait out the default 30 s drain for connections a client left open. */
const BENCH_DRAIN_GRACE_MS = 300;

export class QmeshTransport implements Transport {
  readonly name = 'qmesh' as const;
  #running = false;
  #opts: TransportOptions = {};
  /** Extra config per host on top of what up() sets (scenario 2 uses it). */
  extraConfig: (host: HostInfo) => Record<string, unknown> = () => ({});

  constructor(private readonly mesh: Mesh) {}

  get running(): boolean {
    return this.#running;
  }

  /** Config keys the bench sets for every host; configFor in Mesh terms. */
  configFor(host: HostInfo, opts: TransportOptions = this.#opts): Record<string, unknown> {
    const extra = this.extraConfig(host);
    return {
      ...extra,
      drain: { graceMs: BENCH_DRAIN_GRACE_MS, ...(extra.drain as object) },
      log: { level: 'warn', ...(extra.log as object) },
      tunnel: { ...(opts.maxDatagramBytes ? { maxDatagramBytes: opts.maxDatagramBytes } : {}), ...(extra.tunnel as object) },
    };
  }

  async up(_routes: readonly Route[], opts: TransportOptions = {}): Promise<void> {
    if (this.#running && opts.maxDatagramBytes === this.#opts.maxDatagramBytes) return;
    await this.down();
    this.#opts = opts;
    this.writeConfigs();
    await this.mesh.startAll();
    this.#running = true;
  }

  writeConfigs(): void {
    for (const h of this.mesh.hosts) this.mesh.writeConfig(h, { configFor: (x) => this.configFor(x) });
  }

  address(route: Route): Target {
    return { host: route.to.ip, port: route.port };
  }

  /** The pid of a host's daemon (`ip netns exec` execs, so it is the node process). */
  pid(host: HostInfo): number | undefined {
    return this.mesh.daemons.get(host.name)?.child.pid;
  }

  async down(): Promise<void> {
    await Promise.all(this.mesh.hosts.map((h) => this.mesh.stopDaemon(h, 'SIGTERM', 5000)));
    await Promise.all(this.mesh.hosts.map((h) => this.removeRules(h)));
    this.#running = false;
  }

  /**
   * What `qmesh iptables remove` does, in this process (the daemon's own
   * RuleManager, its commands run inside the host's namespace): after it, traffic
   * between functions flows in plaintext again.
   */
  async removeRules(host: HostInfo): Promise<void> {
    const config = loadConfig(this.mesh.configPath(host), {});
    await new RuleManager(config, { commandPrefix: ['ip', 'netns', 'exec', host.ns] }).remove();
  }
}
