// The daemon's handle on the running data plane: starts it from the config, swaps
// snapshots in on reload, reads its counters for /status and /metrics, pumps its
// events into the pino log, drains and stops it.
import type { Config } from '../config/load.js';
import { ErrorCodes, QmeshError, type ErrorCode } from '../errors.js';
import type { Credentials } from '../identity/credentials.js';
import type { Logger } from '../log.js';
import { loadAddon, tryAddon, type DataPlaneEvent, type DataPlaneStats, type NativeDataPlane } from './native.js';
import { buildSnapshot } from './snapshot.js';

/** How often queued events are taken and logged. */
const EVENT_PUMP_MS = 20;
const DRAIN_POLL_MS = 20;

/** The addon's errors start with the error code ("QMESH_ERR_LISTEN: ..."). */
function rethrow(err: unknown): never {
  const message = String((err as Error)?.message ?? err);
  const m = /^(QMESH_ERR_[A-Z_]+): ([\s\S]*)$/.exec(message);
  const known = Object.values(ErrorCodes) as string[];
  if (m && known.includes(m[1]!)) throw new QmeshError(m[1] as ErrorCode, m[2]!, { cause: err });
  throw err;
}

export class DataPlane {
  private readonly pump: NodeJS.Timeout;
  private readonly loggers = new Map<string, Logger>();

  private constructor(
    private readonly native: NativeDataPlane,
    private readonly log: Logger,
  ) {
    this.pump = setInterval(() => this.logEvents(), EVENT_PUMP_MS);
    this.pump.unref();
  }

  static start(config: Config, credentials: Credentials, log: Logger): DataPlane {
    let native: NativeDataPlane;
    try {
      native = loadAddon().DataPlane.start(JSON.stringify(buildSnapshot(config, credentials)));
    } catch (err) {
      rethrow(err);
    }
    const dp = new DataPlane(native, log);
    dp.logEvents();
    return dp;
  }

  /** Swaps in the new config and credentials atomically; throws (and changes nothing) if the data plane refuses them. */
  apply(config: Config, credentials: Credentials): void {
    try {
      this.native.apply(JSON.stringify(buildSnapshot(config, credentials)));
    } catch (err) {
      rethrow(err);
    }
    this.logEvents();
  }

  stats(): DataPlaneStats {
    return JSON.parse(this.native.stats()) as DataPlaneStats;
  }

  /** Stops taking new flows, waits up to graceMs for open ones, then resets the rest and stops. */
  async drainAndStop(graceMs: number): Promise<{ unfinished: number }> {
    this.native.drain();
    const deadline = Date.now() + graceMs;
    const open = this.native.openFlows();
    if (open > 0) this.log.info({ open, graceMs }, 'draining open connections');
    while (this.native.openFlows() > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, DRAIN_POLL_MS));
    const unfinished = this.native.openFlows();
    if (unfinished > 0) this.log.warn({ unfinished }, 'grace period over; resetting the rest');
    this.logEvents();
    this.native.stop();
    clearInterval(this.pump);
    return { unfinished };
  }

  /** Logs what the data plane reported since the last call, each under its component. */
  logEvents(): void {
    let events: DataPlaneEvent[];
    try {
      events = JSON.parse(this.native.takeEvents()) as DataPlaneEvent[];
    } catch {
      return; // stopped
    }
    for (const e of events) {
      let log = this.loggers.get(e.component);
      if (!log) this.loggers.set(e.component, (log = this.log.child({ component: e.component })));
      log[e.level](e.fields, e.msg);
    }
  }
}

/** Has the data plane check a config as `run` would hand it over; null when it is accepted, else why not. */
export function checkWithDataPlane(config: Config, credentials: Credentials): string | null {
  const addon = tryAddon();
  if (!addon) return 'the data plane addon is not built (run `npm ci`; it needs cargo)';
  try {
    addon.checkSnapshot(JSON.stringify(buildSnapshot(config, credentials)));
    return null;
  } catch (err) {
    return String((err as Error).message);
  }
}
