// Wires the daemon together: the admin server, the credentials, the data plane (the
// Rust crate in native/, through dataplane/), then the iptables rules; stops in
// reverse, draining open connections for drain.graceMs. The data path itself —
// capture -> route/policy -> tunnel -> flow -> deliver — lives in native/src/.
import { AdminServer } from './admin/admin-server.js';
import type { Config } from './config/load.js';
import { restartOnlyChanges } from './config/reload-check.js';
import { loadCredentials, type Credentials } from './identity/credentials.js';
import { RuleManager } from './iptables/manager.js';
import { RuleWatch, type RuleHealth } from './iptables/rule-watch.js';
import type { Logger } from './log.js';
import { buildStatus } from './admin/status.js';
import { MetricsRegistry } from './admin/metrics.js';
import { sampleDaemon } from './admin/metrics-sample.js';
import { ExpiryWatch } from './identity/expiry-watch.js';
import { DataPlane } from './dataplane/data-plane.js';
import type { EtcdMembership } from './membership/membership.js';

const sameBytes = (a: Uint8Array, b: Uint8Array): boolean => Buffer.compare(a, b) === 0;
const sameRules = (a: RuleManager, b: RuleManager): boolean => JSON.stringify(a.rules.families) === JSON.stringify(b.rules.families);

export interface DaemonDeps {
  /** null: this daemon neither applies nor watches iptables rules (tests that bring their own). */
  readonly rules?: null;
  /** membership.source "etcd": its session, already started (cli/run.ts); stopped at the end of the drain. */
  readonly membership?: EtcdMembership | null;
}

export class Daemon {
  ready = false;
  readonly startedAt = Date.now();
  credentials!: Credentials;
  dataPlane: DataPlane | null = null;
  private admin!: AdminServer;
  private currentConfig: Config;
  /** The rules of the config in force, and their watch; null with deps.rules === null. */
  private rules: RuleManager | null = null;
  private ruleWatch: RuleWatch | null = null;
  /** Serialises everything that reads or writes the rules: reloads, drift looks, repairs. */
  private ruleLock: Promise<unknown> = Promise.resolve();
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
   * Live reload (SIGHUP or a file change, cli/run.ts): validates `next` exactly as check-config does, brings
   * the iptables rules in line with it (rules.ts; one transaction per family), then swaps config, routes,
   * policy and certificates in the data plane atomically; peers are added, removed or re-dialled. It ends
   * in one of two states: the new config with rules that match it, or the old config with the old rules
   * (anything invalid, a key only a restart can change, rules that cannot be applied, or, with
   * capture.applyRules false, rules the operator has not installed yet). New connections get the new policy
   * at once; open ones it denies are reset or left to finish (reload.deniedConnections). New certificates:
   * our tunnels are re-dialled make-before-break.
   */
  reload(next: Config): Promise<{ ok: true } | { ok: false; reason: string }> {
    return this.withRules(() => this.reloadLocked(next));
  }

  private async reloadLocked(next: Config): Promise<{ ok: true } | { ok: false; reason: string }> {
    const log = this.log.child({ component: 'reload' });
    const startedAt = performance.now();
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
      if (this.rules) rules = this.rules.successor(next);
    } catch (err) {
      return refuse((err as Error).message);
    }
    let rulesApplied = false;
    if (rules && this.rules) {
      const changed = !sameRules(this.rules, rules);
      try {
        if (next.capture.applyRules) {
          // Unchanged rules get the cheap look only: apply()'s exact comparison is one process per
          // rule, seconds for hundreds of peers, and membership changes reload often.
          if (changed || (await rules.drift()).missing.length > 0) await rules.apply();
          rulesApplied = changed;
        } else if (changed) {
          const { missing } = await rules.check();
          if (missing.length > 0) {
            return refuse(
              `capture.applyRules is false and the iptables rules installed are not the new configuration's ` +
                `(${missing.length} difference(s), first: ${missing[0]}); apply them first ` +
                `(\`qmesh iptables apply --config ${next.file}\`), then reload`,
            );
          }
        }
      } catch (err) {
        return refuse(`iptables: ${(err as Error).message}`);
      }
    }
    const rulesMs = Math.round(performance.now() - startedAt);
    const previous = this.credentials;
    const newCredentials = !sameBytes(previous.caPem, credentials.caPem) || !sameBytes(previous.certPem, credentials.certPem) || !sameBytes(previous.keyPem, credentials.keyPem);
    try {
      this.dataPlane?.apply(next, credentials);
    } catch (err) {
      if (rulesApplied) await this.restoreRules(log);
      return refuse((err as Error).message);
    }
    this.currentConfig = next;
    this.credentials = credentials;
    if (rules) {
      this.rules = rules;
      this.ruleWatch?.retarget({ manager: rules, repair: next.capture.applyRules, intervalMs: next.capture.ruleCheckIntervalMs });
    }
    this.log.level = next.log.level;
    this.expiry.check('reload');
    log.info(
      {
        peers: next.peers.map((p) => p.name),
        notAfter: credentials.notAfter.toISOString(),
        policyRules: next.policy.rules.length,
        newCredentials,
        rulesApplied,
        rulesMs,
        durationMs: Math.round(performance.now() - startedAt),
      },
      'configuration reloaded',
    );
    return { ok: true };
  }

  /** The data plane refused a config whose rules were already applied: the old config's rules go back. */
  private async restoreRules(log: Logger): Promise<void> {
    try {
      await this.rules?.apply();
      log.warn('the previous configuration\'s iptables rules were put back');
    } catch (err) {
      log.error({ err: (err as Error).message }, 'cannot put the previous configuration\'s iptables rules back; the drift check will retry');
    }
  }

  /** Runs fn after every earlier rule operation has finished. */
  private withRules<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.ruleLock.then(fn, fn);
    this.ruleLock = run.catch(() => undefined);
    return run;
  }

  /** The etcd membership (for /status and /metrics), or null with membership.source "file". */
  get membership(): EtcdMembership | null {
    return this.deps.membership ?? null;
  }

  /** The rules' health as /healthz, /status and /metrics report it; null when this daemon does not watch rules. */
  rulesHealth(): RuleHealth | null {
    return this.ruleWatch?.health() ?? null;
  }

  async start(): Promise<void> {
    const { config, log } = this;
    const metrics = new MetricsRegistry(() => sampleDaemon(this));
    this.admin = new AdminServer(config.listen.admin.host, config.listen.admin.port, {
      ready: () => this.ready,
      problems: async () => {
        const health = await this.ruleWatch?.fresh();
        if (!health || health.ok) return [];
        return health.error ? [`iptables rules: ${health.error}`] : health.missing.map((m) => `iptables rule drift: ${m}`);
      },
      status: () => buildStatus(this),
      metrics: async () => ({ contentType: metrics.contentType, body: await metrics.scrape() }),
    }, log.child({ component: 'admin' }));
    await this.admin.start();

    this.credentials = loadCredentials(config);
    log.info({ identity: this.credentials.identity, notAfter: this.credentials.notAfter.toISOString() }, 'certificate loaded');
    this.expiry.check('start');

    this.dataPlane = DataPlane.start(config, this.credentials, log);

    if (this.deps.rules !== null) {
      const rules = new RuleManager(config);
      this.rules = rules;
      if (config.capture.applyRules) {
        await this.withRules(() => rules.apply());
        log.info({ backend: await rules.backend() }, 'iptables capture rules applied');
      }
      this.ruleWatch = new RuleWatch(
        { manager: rules, repair: config.capture.applyRules, intervalMs: config.capture.ruleCheckIntervalMs },
        (fn) => this.withRules(fn),
        log.child({ component: 'iptables' }),
      );
      this.ruleWatch.start();
      if (!config.capture.applyRules) void this.ruleWatch.look(); // rules someone else installed: look now, not in an interval
    }
    this.ready = true;
    log.info({ node: config.node.name, peers: config.peers.map((p) => p.name) }, 'qmesh ready');
  }

  /** Stops capture, lets open connections finish for up to graceMs, then closes tunnels. */
  async stop(graceMs = this.config.drain.graceMs): Promise<{ unfinished: number }> {
    this.ready = false;
    const result = this.dataPlane ? await this.dataPlane.drainAndStop(graceMs) : { unfinished: 0 };
    this.dataPlane = null;
    // After the drain, not before: peers drop a host that leaves the membership, and with
    // reload.deniedConnections "close" they would reset the connections it is draining.
    await this.membership?.stop();
    this.ruleWatch?.stop();
    this.expiry.stop();
    await this.admin?.stop();
    this.log.info('qmesh stopped');
    return result;
  }
}
