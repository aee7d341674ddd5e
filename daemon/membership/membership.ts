// Membership from etcd (membership.source "etcd"), as the rest of the daemon
// sees it: the entries in force (etcd's once read, the on-disk cache's before
// that), the config they make with the file's (admit.ts), and how old they
// are. cli/run.ts sends every change through Daemon.reload, the path a file
// reload takes: claim checks, iptables rules, an atomic swap of the data plane.
import type { Config } from '../config/load.js';
import type { Logger } from '../log.js';
import { admit, type Admission, type Refusal } from './admit.js';
import { readCache, writeCache, type CachedMembership } from './cache.js';
import type { EtcdEntry } from './entry.js';
import { EtcdSession } from './etcd-session.js';

/** How long to wait for etcd at start before starting from the cache. */
const START_READ_MS = 3_000;
/** A burst of watch events within this long becomes one reload... */
const CHANGE_DEBOUNCE_MS = 50;
/** ...but a burst that never pauses (a host rewriting its key in a loop) cannot hold changes back longer than this. */
const CHANGE_MAX_WAIT_MS = 500;

export interface MembershipStatus {
  readonly source: 'etcd';
  /** Seconds since etcd last confirmed the membership in force (0: it is current); never read: since start. */
  readonly ageSeconds: number;
  /** null: neither etcd nor a cache has ever given this daemon a membership. */
  readonly confirmedAt: string | null;
  /** true until etcd has been read since start: the peers are the cached ones. */
  readonly fromCache: boolean;
  readonly watching: boolean;
  readonly registered: boolean;
  readonly revision: string;
  readonly prefix: string;
  readonly entries: number;
  readonly admitted: readonly string[];
  readonly refused: readonly Refusal[];
}

export class EtcdMembership {
  private readonly session: EtcdSession;
  private cache: CachedMembership | null = null;
  /** The admission in force (its reload succeeded), and the one a reload in progress carries. */
  private last: Admission | null = null;
  private pending: Admission | null = null;
  private burstStartedAt: number | null = null;
  private readonly startedAt = Date.now();
  private listener: (() => void) | null = null;
  private timer: NodeJS.Timeout | null = null;
  private cacheTimer: NodeJS.Timeout | null = null;

  constructor(
    private readonly file: Config,
    private readonly log: Logger,
  ) {
    this.session = new EtcdSession(file, log, () => this.changed());
  }

  /** Reads etcd (or, if it does not answer in time, the cache) before the daemon starts with the result. */
  async start(): Promise<void> {
    const { cacheFile, prefix, endpoints } = this.file.membership.etcd;
    const cached = readCache(cacheFile, prefix);
    if ('problem' in cached) this.log.info({ reason: cached.problem }, 'no cached membership');
    else this.cache = cached;
    this.log.info({ endpoints, prefix, waitMs: START_READ_MS }, 'reading the membership from etcd before starting');
    const read = await this.session.start(START_READ_MS);
    if (read) {
      this.log.info({ endpoints, prefix, revision: this.session.revision, entries: this.session.entries.size }, 'membership read from etcd');
    } else if (this.cache) {
      this.log.warn(
        { endpoints, cacheFile, confirmedAt: new Date(this.cache.syncedAtMs).toISOString(), entries: this.cache.entries.length },
        'etcd does not answer; starting with the cached membership (it stays in force until etcd is back)',
      );
    } else {
      this.log.warn({ endpoints, cacheFile }, 'etcd does not answer and there is no cached membership; starting with the peers of the file only');
    }
    // Rewritten while etcd confirms it, so a restart from the cache knows how old it is.
    this.cacheTimer = setInterval(() => {
      if (this.session.ageMs() === 0) this.saveCache();
    }, this.file.membership.etcd.leaseTtlMs);
    this.cacheTimer.unref();
  }

  /** Called (debounced) after each change of the entries; set once by cli/run.ts. */
  onChange(fn: () => void): void {
    this.listener = fn;
  }

  /** The entries in force: etcd's once it has been read since start, the cache's before. */
  entries(): EtcdEntry[] {
    if (this.session.hasRead) return [...this.session.entries.values()];
    return [...(this.cache?.entries ?? [])];
  }

  /** The file's config with the admitted entries as peers; logs entries refused now that were not before. */
  configFor(file: Config): Config {
    const admission = admit(file, this.entries());
    const before = new Map((this.last?.refused ?? []).map((r) => [r.key, r.reason]));
    for (const r of admission.refused) {
      if (before.get(r.key) !== r.reason) this.log.error({ entry: r.key, reason: r.reason }, 'etcd entry refused; it is not a peer');
    }
    this.pending = admission;
    return admission.config;
  }

  /** The reload of the last configFor() succeeded: its admission is the one in force (for /status, /metrics). */
  applied(): void {
    if (this.pending) this.last = this.pending;
    this.pending = null;
  }

  /** How old the membership in force is: since etcd last confirmed it, or the cache's age, or (never read) since start. */
  ageMs(now = Date.now()): number {
    const age = this.session.ageMs(now);
    if (age !== null) return age;
    return now - (this.cache?.syncedAtMs ?? this.startedAt);
  }

  status(now = Date.now()): MembershipStatus {
    const age = this.ageMs(now);
    const confirmed = this.session.hasRead || this.cache !== null;
    return {
      source: 'etcd',
      ageSeconds: Math.floor(age / 1000),
      confirmedAt: confirmed ? new Date(now - age).toISOString() : null,
      fromCache: !this.session.hasRead,
      watching: this.session.watching,
      registered: this.session.registered,
      revision: this.session.hasRead ? this.session.revision : (this.cache?.revision ?? '0'),
      prefix: this.file.membership.etcd.prefix,
      entries: this.entries().length,
      admitted: this.last?.admitted ?? [],
      refused: this.last?.refused ?? [],
    };
  }

  /** End of the drain: the entry is deleted (lease revoked) and the session closed. */
  async stop(): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    if (this.cacheTimer) clearInterval(this.cacheTimer);
    await this.session.stop();
  }

  private changed(): void {
    if (this.timer) clearTimeout(this.timer);
    const now = Date.now();
    this.burstStartedAt ??= now;
    const wait = Math.max(0, Math.min(CHANGE_DEBOUNCE_MS, this.burstStartedAt + CHANGE_MAX_WAIT_MS - now));
    this.timer = setTimeout(() => {
      this.timer = null;
      this.burstStartedAt = null;
      this.saveCache();
      this.listener?.();
    }, wait);
  }

  private saveCache(): void {
    if (!this.session.hasRead) return;
    const { cacheFile, prefix } = this.file.membership.etcd;
    try {
      writeCache(cacheFile, { syncedAtMs: this.session.confirmedAtMs ?? Date.now(), prefix, revision: this.session.revision, entries: this.entries() });
    } catch (err) {
      this.log.warn({ cacheFile, err: (err as Error).message }, 'cannot write the membership cache; a restart while etcd is down would start without it');
    }
  }
}
