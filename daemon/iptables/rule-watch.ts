// Looks for drift in the daemon's iptables rules: on a timer (capture.ruleCheckIntervalMs)
// and when /healthz asks. Docker, firewalld or an operator can delete or move a jump;
// then capture or the fail-closed drops are gone. Drift is logged and counted, /healthz
// answers 503 naming it, and where the daemon may apply rules (capture.applyRules) it
// puts them back. Every look and repair runs under the daemon's rule lock (daemon.ts),
// so it never interleaves with a reload's apply.
import type { Logger } from '../log.js';
import type { RuleManager } from './manager.js';

export interface RuleHealth {
  /** False while rules are missing (and not repaired) or cannot be read. */
  readonly ok: boolean;
  /** What is missing, one line each, as of the last look. */
  readonly missing: readonly string[];
  /** Why the last look could not read the rules, if it could not. */
  readonly error: string | null;
  readonly checkedAt: Date | null;
  /** Looks that found drift, repairs that put the rules back, looks that could not read them. */
  readonly drifts: number;
  readonly repairs: number;
  readonly checkErrors: number;
}

export interface RuleWatchTarget {
  /** The rules of the config in force. */
  readonly manager: RuleManager;
  /** capture.applyRules: the daemon may put drifted rules back. */
  readonly repair: boolean;
  readonly intervalMs: number;
}

/** /healthz looks again when the last look is older than this, */
const HEALTHZ_MAX_AGE_MS = 1_000;
/** and waits this long for that look at most. */
const HEALTHZ_WAIT_MS = 300;

export class RuleWatch {
  private timer: NodeJS.Timeout | null = null;
  private state: RuleHealth = { ok: true, missing: [], error: null, checkedAt: null, drifts: 0, repairs: 0, checkErrors: 0 };
  private inFlight: Promise<void> | null = null;

  constructor(
    private target: RuleWatchTarget,
    private readonly locked: <T>(fn: () => Promise<T>) => Promise<T>,
    private readonly log: Logger,
  ) {}

  health(): RuleHealth {
    return this.state;
  }

  start(): void {
    this.schedule();
  }

  stop(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  /** A reload changed the rules, the repair permission or the interval. */
  retarget(target: RuleWatchTarget): void {
    const rescheduled = target.intervalMs !== this.target.intervalMs;
    this.target = target;
    if (rescheduled && this.timer) {
      this.stop();
      this.schedule();
    }
  }

  /**
   * For /healthz: looks again unless the last look is fresh, waiting for it at most
   * HEALTHZ_WAIT_MS (a loaded host or a reload in progress must not slow the probe;
   * the look still finishes and the next probe sees it); returns the latest state.
   */
  async fresh(): Promise<RuleHealth> {
    const at = this.state.checkedAt?.getTime() ?? 0;
    if (Date.now() - at > HEALTHZ_MAX_AGE_MS) {
      let timer: NodeJS.Timeout | undefined;
      const waited = new Promise<void>((resolve) => (timer = setTimeout(resolve, HEALTHZ_WAIT_MS)));
      await Promise.race([this.look(), waited]).finally(() => clearTimeout(timer));
    }
    return this.state;
  }

  /** One look (and repair); concurrent callers share it. */
  look(): Promise<void> {
    this.inFlight ??= this.locked(() => this.lookNow()).finally(() => {
      this.inFlight = null;
    });
    return this.inFlight;
  }

  private schedule(): void {
    this.timer = setTimeout(() => {
      void this.look().finally(() => {
        if (this.timer) this.schedule();
      });
    }, this.target.intervalMs);
    this.timer.unref();
  }

  private async lookNow(): Promise<void> {
    const { manager, repair } = this.target;
    const wasOk = this.state.ok;
    const log = this.log;
    let missing: string[];
    try {
      missing = (await manager.drift()).missing;
    } catch (err) {
      const error = (err as Error).message;
      if (error !== this.state.error) log.error({ err: error }, 'cannot read the iptables rules to look for drift');
      this.update({ ok: false, missing: [], error, checkErrors: this.state.checkErrors + 1 });
      return;
    }
    if (missing.length === 0) {
      if (!wasOk) log.info('iptables rules are in place again');
      this.update({ ok: true, missing: [], error: null });
      return;
    }
    const drifts = this.state.drifts + 1;
    if (!repair) {
      if (wasOk || this.state.missing.join('\n') !== missing.join('\n')) {
        log.error({ missing }, 'iptables rules drifted from the configuration; capture.applyRules is false, so they stay missing until `qmesh iptables apply` is run');
      }
      this.update({ ok: false, missing, error: null, drifts });
      return;
    }
    log.warn({ missing }, 'iptables rules drifted from the configuration; putting them back');
    try {
      await manager.apply();
      const left = (await manager.drift()).missing;
      if (left.length > 0) throw new Error(`still missing after apply: ${left.join('; ')}`);
    } catch (err) {
      log.error({ missing, err: (err as Error).message }, 'iptables rules drifted and could not be put back');
      this.update({ ok: false, missing, error: (err as Error).message, drifts });
      return;
    }
    log.info({ repaired: missing }, 'iptables rules repaired');
    this.update({ ok: true, missing: [], error: null, drifts, repairs: this.state.repairs + 1 });
  }

  private update(change: Partial<RuleHealth>): void {
    this.state = { ...this.state, ...change, checkedAt: new Date() };
  }
}
