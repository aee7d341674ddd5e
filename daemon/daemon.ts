// Wires the data path together in start order — delivery first (QUIC listener,
// inbound), then tunnels to peers, then capture, then the iptables rules — and
// stops it in reverse, draining open connections for drain.graceMs.
// Data path: capture/capture-listener.ts -> tunnel/tunnel-pool.ts ->
// tunnel/stream-pipe.ts -> (peer) tunnel/quic-listener.ts -> inbound/delivery.ts.
import { AdminServer } from './admin/admin-server.js';
import { CaptureListener } from './capture/capture-listener.js';
import { linuxSocketOptions, type SocketOptions } from './capture/socket-options.js';
import type { Config } from './config/load.js';
import { restartOnlyChanges } from './config/reload-check.js';
import { issuedByAny, loadCredentials, parseCaBundle, type Credentials } from './identity/credentials.js';
import type { TunnelConnection } from './tunnel/tunnel-connection.js';
import { InboundDelivery } from './inbound/delivery.js';
import { RuleManager } from './iptables/manager.js';
import type { Logger } from './log.js';
import { RouteTable } from './policy/route.js';
import { QuicListener } from './tunnel/quic-listener.js';
import { makeQuicheConfig, type QuicheConfig } from './tunnel/quiche.js';
import { TunnelPool } from './tunnel/tunnel-pool.js';
import { buildStatus } from './admin/status.js';
import { MetricsRegistry } from './admin/metrics.js';
import { sampleDaemon } from './admin/metrics-sample.js';
import { ExpiryWatch } from './identity/expiry-watch.js';

const sameBytes = (a: Uint8Array, b: Uint8Array): boolean => Buffer.compare(a, b) === 0;

export interface DaemonDeps {
  readonly sockets?: SocketOptions;
  readonly rules?: RuleManager | null;
}

export class Daemon {
  ready = false;
  readonly startedAt = Date.now();
  credentials!: Credentials;
  routes: RouteTable;
  listener!: QuicListener;
  pool!: TunnelPool;
  capture!: CaptureListener;
  inbound!: InboundDelivery;
  private admin!: AdminServer;
  private clientConfig!: QuicheConfig;
  private serverConfig!: QuicheConfig;

  private currentConfig: Config;
  readonly expiry: ExpiryWatch;

  constructor(
    config: Config,
    readonly log: Logger,
    private readonly deps: DaemonDeps = {},
  ) {
    this.currentConfig = config;
    this.routes = new RouteTable(config);
    this.expiry = new ExpiryWatch(() => this.credentials, log.child({ component: 'certificate' }));
  }

  /** The config in force; a reload swaps it (with the routes and credentials) in one step. */
  get config(): Config {
    return this.currentConfig;
  }

  /**
   * Live reload (SIGHUP or a file change, cli/run.ts): validates `next` exactly as check-config does, then swaps config,
   * routes, policy and certificates atomically; peers are added, removed or re-dialled.
   * Anything invalid, or a key only a restart can change, leaves the running config as it is.
   * New connections get the new policy at once; open ones it denies are reset or left to
   * finish (reload.deniedConnections). New certificates: our tunnels are re-dialled make-before-break.
   */
  async reload(next: Config): Promise<{ ok: true } | { ok: false; reason: string }> {
    const log = this.log.child({ component: 'reload' });
    const refuse = (reason: string): { ok: false; reason: string } => {
      log.error({ file: next.file, reason }, 'reload rejected; the running configuration stays');
      return { ok: false, reason };
    };
    const restartOnly = restartOnlyChanges(this.config, next);
    if (restartOnly.length > 0) return refuse(`only a restart can change: ${restartOnly.join(', ')}`);
    let credentials: Credentials;
    let rules: RuleManager | null = null;
    try {
      credentials = loadCredentials(next);
      if (next.capture.applyRules && this.deps.rules !== null) rules = new RuleManager(next);
    } catch (err) {
      return refuse((err as Error).message);
    }
    if (rules) {
      try {
        await rules.apply();
      } catch (err) {
        return refuse(`iptables: ${(err as Error).message}`);
      }
    }
    // One synchronous swap: no connection ever sees half of the new state.
    const previousPeers = this.config.peers.map((p) => p.name);
    const previous = this.credentials;
    const newCredentials = !sameBytes(previous.caPem, credentials.caPem) || !sameBytes(previous.certPem, credentials.certPem) || !sameBytes(previous.keyPem, credentials.keyPem);
    this.currentConfig = next;
    this.routes = new RouteTable(next);
    this.credentials = credentials;
    this.clientConfig = makeQuicheConfig(credentials, next.tunnel);
    this.serverConfig = makeQuicheConfig(credentials, next.tunnel);
    this.log.level = next.log.level;
    this.pool.sync(next.peers);
    const kept = new Set(next.peers.map((p) => p.name));
    for (const name of previousPeers) if (!kept.has(name)) this.listener.dropPeer(name, 'peer removed from config');
    // Open connections are judged by the new policy too (reload.deniedConnections).
    this.capture.reviewOpen(next.reload.deniedConnections);
    this.inbound.reviewOpen(next.reload.deniedConnections);
    // A peer whose certificate the new CA bundle no longer covers loses its connections now (fail closed).
    if (!sameBytes(previous.caPem, credentials.caPem)) {
      const cas = parseCaBundle(credentials.caPem);
      const untrusted = (c: TunnelConnection): boolean => {
        const der = c.quic.peerCertChain()?.[0];
        return der !== undefined && !issuedByAny(der, cas);
      };
      const reason = 'peer certificate no longer trusted (CA removed from tls.ca)';
      this.listener.closeUntrusted(untrusted, reason);
      this.pool.closeUntrusted(untrusted, reason);
    }
    // Tunnels we dialled move to the new certificates without dropping a stream.
    if (newCredentials) this.pool.renewAll('new certificates loaded');
    this.expiry.check('reload');
    log.info(
      { peers: next.peers.map((p) => p.name), notAfter: credentials.notAfter.toISOString(), policyRules: next.policy.rules.length, newCredentials },
      'configuration reloaded',
    );
    return { ok: true };
  }

  async start(): Promise<void> {
    const { config, log } = this;
    const sockets = this.deps.sockets ?? linuxSocketOptions;
    const metrics = new MetricsRegistry(() => sampleDaemon(this));
    this.admin = new AdminServer(config.listen.admin.host, config.listen.admin.port, {
      ready: () => this.ready,
      status: () => buildStatus(this),
      metrics: async () => ({ contentType: metrics.contentType, body: await metrics.scrape() }),
    }, log.child({ component: 'admin' }));
    await this.admin.start();

    this.credentials = loadCredentials(config);
    this.clientConfig = makeQuicheConfig(this.credentials, config.tunnel);
    this.serverConfig = makeQuicheConfig(this.credentials, config.tunnel);
    log.info({ identity: this.credentials.identity, notAfter: this.credentials.notAfter.toISOString() }, 'certificate loaded');
    this.expiry.check('start');

    this.inbound = new InboundDelivery(() => this.routes, () => this.config.policy, sockets, config.capture.mark, log, () => this.config.capture.idleTimeoutMs);
    this.listener = new QuicListener({
      listen: config.listen.quic,
      peers: () => this.config.peers,
      trustDomain: config.tls.trustDomain,
      quicheConfig: () => this.serverConfig,
      ownValidity: () => this.credentials,
      resetKey: this.credentials.resetKey,
      keepAliveMs: config.tunnel.keepAliveMs,
      maxDatagramBytes: config.tunnel.maxDatagramBytes,
      maxConnections: Math.max(16, config.peers.length * 4),
      maxHandshakes: Math.max(8, config.peers.length * 2),
      addressValidation: config.tunnel.addressValidation as 'always' | 'under-load' | 'never',
      onStream: (conn, peer, id) => this.inbound.onStream(conn, peer, id),
      onPeerUp: (peer, cert) => this.pool?.tunnels.get(peer.name)?.peerIsUp(cert),
      log,
    });
    await this.listener.start();

    this.pool = new TunnelPool({
      localHost: config.listen.quic.host,
      trustDomain: config.tls.trustDomain,
      quicheConfig: () => this.clientConfig,
      ownValidity: () => this.credentials,
      tunnel: config.tunnel,
      log: log.child({ component: 'tunnel' }),
    });
    this.pool.sync(config.peers);

    this.capture = new CaptureListener(config.listen.capture, () => this.routes, () => ({ nodeName: this.config.node.name, policy: this.config.policy }), this.pool, sockets, log, () => this.config.capture.maxConnections, () => this.config.capture.idleTimeoutMs, () => this.config.capture.maxConnectionsPerSource);
    await this.capture.start();

    const rules = this.deps.rules === undefined ? (config.capture.applyRules ? new RuleManager(config) : null) : this.deps.rules;
    if (rules) {
      await rules.apply();
      log.info({ backend: await rules.backend() }, 'iptables capture rules applied');
    }
    this.ready = true;
    log.info({ node: config.node.name, peers: config.peers.map((p) => p.name) }, 'qmesh ready');
  }

  /** Stops capture, lets open connections finish for up to graceMs, then closes tunnels. */
  async stop(graceMs = this.config.drain.graceMs): Promise<{ unfinished: number }> {
    this.ready = false;
    this.capture?.stop();
    this.inbound?.stopAccepting();
    const open = (): number => (this.capture?.counters.active ?? 0) + (this.inbound?.counters.active ?? 0);
    const deadline = Date.now() + graceMs;
    if (open() > 0) this.log.info({ open: open(), graceMs }, 'draining open connections');
    while (open() > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    const unfinished = open();
    if (unfinished > 0) this.log.warn({ unfinished }, 'grace period over; resetting the rest');
    this.expiry.stop();
    this.pool?.stop();
    await this.listener?.stop();
    await this.admin?.stop();
    this.log.info('qmesh stopped');
    return { unfinished };
  }
}
