// Wires the daemon together: the admin server, the credentials, the data plane (the
// Rust crate in native/, through dataplane/), then the iptables rules; stops in
// reverse, draining open connections for drain.graceMs. The data path itself —
// capture -> route/policy -> tunnel -> flow -> deliver — lives in native/src/.
import { AdminServer } from './admin/admin-server.js';
import type { Config } from './config/load.js';
import { restartOnlyChanges } from './config/reload-check.js';
import { loadCredentials, type Credentials } from './identity/credentials.js';
import { RuleManager } from './iptables/manager.js';
import type { Logger } from './log.js';
import { buildStatus } from './admin/status.js';
import { MetricsRegistry } from './admin/metrics.js';
import { sampleDaemon } from './admin/metrics-sample.js';
import { ExpiryWatch } from './identity/expiry-watch.js';
import { DataPlane } from './dataplane/data-plane.js';

const sameBytes = (a: Uint8Array, b: Uint8Array): boolean => Buffer.compare(a, b) === 0;

export interface DaemonDeps {
  readonly rules?: RuleManager | null;
}

export class Daemon {
  ready = false;
  readonly startedAt = Date.now();
  credentials!: Credentials;
  dataPlane: DataPlane | null = null;
  private admin!: AdminServer;
  private currentConfig: Config;
  readonly expiry: ExpiryWatch;

  constructor(
    config: Config,
    readonly log: Logger,
    private readonly deps: DaemonDeps = {},
  ) {
    this.currentConfig = config;
    this.expiry = new ExpiryWatch(() => this.credentials, log.child({ component: 'certificate' }));
  }

  /** The config in force; a reload swaps it (with the data plane's snapshot) in one step. */
  get config(): Config {
    return this.currentConfig;
  }

  /**
   * Live reload (SIGHUP or a file change, cli/run.ts): validates `next` exactly as check-config does, applies
   * its iptables rules, then swaps config, routes, policy and certificates in the data plane atomically;
   * peers are added, removed or re-dialled. Anything invalid, or a key only a restart can change, leaves the
   * running config as it is. New connections get the new policy at once; open ones it denies are reset or
   * left to finish (reload.deniedConnections). New certificates: our tunnels are re-dialled make-before-break.
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
    const previous = this.credentials;
    const newCredentials = !sameBytes(previous.caPem, credentials.caPem) || !sameBytes(previous.certPem, credentials.certPem) || !sameBytes(previous.keyPem, credentials.keyPem);
    try {
      this.dataPlane?.apply(next, credentials);
    } catch (err) {
      return refuse((err as Error).message);
    }
    this.currentConfig = next;
    this.credentials = credentials;
    this.log.level = next.log.level;
    this.expiry.check('reload');
    log.info(
      { peers: next.peers.map((p) => p.name), notAfter: credentials.notAfter.toISOString(), policyRules: next.policy.rules.length, newCredentials },
      'configuration reloaded',
    );
    return { ok: true };
  }

  async start(): Promise<void> {
    const { config, log } = this;
    const metrics = new MetricsRegistry(() => sampleDaemon(this));
    this.admin = new AdminServer(config.listen.admin.host, config.listen.admin.port, {
      ready: () => this.ready,
      status: () => buildStatus(this),
      metrics: async () => ({ contentType: metrics.contentType, body: await metrics.scrape() }),
    }, log.child({ component: 'admin' }));
    await this.admin.start();

    this.credentials = loadCredentials(config);
    log.info({ identity: this.credentials.identity, notAfter: this.credentials.notAfter.toISOString() }, 'certificate loaded');
    this.expiry.check('start');

    this.dataPlane = DataPlane.start(config, this.credentials, log);

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
    const result = this.dataPlane ? await this.dataPlane.drainAndStop(graceMs) : { unfinished: 0 };
    this.dataPlane = null;
    this.expiry.stop();
    await this.admin?.stop();
    this.log.info('qmesh stopped');
    return result;
  }
}
