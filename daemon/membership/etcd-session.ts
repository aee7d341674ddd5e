// The daemon's session with etcd (membership.source "etcd"), through the npm
// client etcd3 over TLS with this host's client certificate:
// - registration: this host's entry (entry.ts) under a lease kept alive; a lost
//   lease is granted anew and the entry written again; revoke() at the end of a
//   drain deletes it, and a host that dies disappears when its lease expires;
// - watch: one read of the prefix, then a watch from the next revision. etcd3
//   resumes a dropped watch from the last revision it saw; a watch etcd cancels
//   (its revision was compacted) is replaced by a new read and a new watch.
// The entries it holds change only when etcd says so: an outage changes
// nothing (fail static); ageMs() says how long ago etcd last confirmed them.
import { createPrivateKey, X509Certificate } from 'node:crypto';
import fs from 'node:fs';
import { ErrorCodes, QmeshError } from '../errors.js';
import { ExponentialBackoff, type IBackoff } from 'cockatiel';
import { Etcd3, type IKeyValue, type Lease, type Watcher } from 'etcd3';
import type { Config } from '../config/load.js';
import type { Logger } from '../log.js';
import { ownEntry, type EtcdEntry } from './entry.js';

const RETRY_MIN_MS = 250;
const RETRY_MAX_MS = 5_000;
/** Deadline of one unary call (read, put, revoke): an unreachable member must not stall a step for long. */
const CALL_DEADLINE_MS = 5_000;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms).unref());

const entryOf = (kv: IKeyValue): EtcdEntry => ({
  key: kv.key.toString(),
  value: kv.value.toString(),
  createRevision: String(kv.create_revision),
  modRevision: String(kv.mod_revision),
});

export interface EtcdTls {
  readonly rootCertificate: Buffer;
  readonly certChain: Buffer;
  readonly privateKey: Buffer;
  /** The client certificate's CN: the etcd user this host is (README "Membership"). */
  readonly user: string;
}

/** Reads membership.etcd.ca/cert/key and checks they are PEM and that cert and key match; the error names the key. */
export function readEtcdTls(config: Config): EtcdTls {
  const e = config.membership.etcd;
  const fail = (key: string, why: string, cause?: unknown): never => {
    throw new QmeshError(ErrorCodes.CONFIG, `${config.file}: membership.etcd.${key}: ${why}`, { cause });
  };
  const read = (key: 'ca' | 'cert' | 'key'): Buffer => {
    try {
      return fs.readFileSync(e[key]);
    } catch (err) {
      return fail(key, `cannot read ${e[key]} (${(err as NodeJS.ErrnoException).code ?? 'error'})`, err);
    }
  };
  const ca = read('ca');
  const cert = read('cert');
  const key = read('key');
  try {
    new X509Certificate(ca);
  } catch (err) {
    fail('ca', `${e.ca} is not a PEM certificate`, err);
  }
  let leaf: X509Certificate;
  try {
    leaf = new X509Certificate(cert);
  } catch (err) {
    return fail('cert', `${e.cert} is not a PEM certificate`, err);
  }
  try {
    if (!leaf.checkPrivateKey(createPrivateKey(key))) fail('key', `${e.key} is not the private key of ${e.cert}`);
  } catch (err) {
    if (err instanceof QmeshError) throw err;
    fail('key', `${e.key} is not a readable PEM private key`, err);
  }
  const user = /(?:^|\n)CN=([^\n]+)/.exec(leaf.subject)?.[1] ?? '';
  return { rootCertificate: ca, certChain: cert, privateKey: key, user };
}

export class EtcdSession {
  readonly entries = new Map<string, EtcdEntry>();
  /** The store revision the entries are as of. */
  revision = '0';
  /** Whether the watch stream is established. */
  watching = false;
  registered = false;
  /** Last time etcd confirmed the entries: a read of the prefix, a watch event or (re)connect. */
  confirmedAtMs: number | null = null;
  private readonly client: Etcd3;
  private watcher: Watcher | null = null;
  private lease: Lease | null = null;
  private stopped = false;
  private resyncing = false;
  /** The store revision of the last read: watch events up to it are already in the entries. */
  private readRevision = 0n;
  private checkTimer: NodeJS.Timeout | null = null;

  constructor(
    private readonly config: Config,
    private readonly log: Logger,
    /** Called after every change of `entries` (a read or a watch event). */
    private readonly onChange: () => void,
  ) {
    const e = config.membership.etcd;
    const { rootCertificate, certChain, privateKey } = readEtcdTls(config);
    this.client = new Etcd3({
      hosts: [...e.endpoints],
      credentials: { rootCertificate, certChain, privateKey },
      dialTimeout: 3_000,
      // etcd3 re-creates a dropped watch after a back-off of up to 30 s by default: after an
      // outage, changes would wait that long. Cap it as the other retries are.
      // (etcd3 types the option as a backoff but calls .next() on it first, as on its own default,
      // cockatiel's ExponentialBackoff factory: hence the cast.)
      faultHandling: { watchBackoff: new ExponentialBackoff({ initialDelay: RETRY_MIN_MS, maxDelay: RETRY_MAX_MS }) as unknown as IBackoff<unknown> },
      defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + CALL_DEADLINE_MS }),
    });
  }

  /** Milliseconds since etcd last confirmed the entries; 0 while the watch is up and the periodic reads succeed; null before any. */
  ageMs(now = Date.now()): number | null {
    if (this.confirmedAtMs === null) return null;
    const fresh = this.watching && now - this.confirmedAtMs <= 2 * this.config.membership.etcd.leaseTtlMs;
    return fresh ? 0 : now - this.confirmedAtMs;
  }

  /**
   * Starts reading and watching the prefix, and registering, in the background (retrying until they work).
   * Resolves true once the prefix has been read, or false if that took longer than `timeoutMs`
   * (the caller then starts from the cache; a later read still arrives through onChange).
   */
  start(timeoutMs: number): Promise<boolean> {
    const read = this.resync('start').then(() => this.confirmedAtMs !== null);
    void this.register();
    // A timer that holds the process: the daemon has nothing else open yet, and the client's retries
    // (unref'd) do not hold it either, so with etcd refusing connections Node would end the process,
    // exit code 0, before the start goes on with the cache.
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), timeoutMs)));
    return Promise.race([read, timeout]).finally(() => clearTimeout(timer));
  }

  /** Whether the entries have been read from etcd at least once (else the caller holds the cache's). */
  get hasRead(): boolean {
    return this.confirmedAtMs !== null;
  }

  private confirm(): void {
    this.confirmedAtMs = Date.now();
  }

  /** One linearizable read of the prefix; the entries become exactly what it returned. True if they changed. */
  private async read(): Promise<boolean> {
    const res = await this.client.getAll().prefix(this.config.membership.etcd.prefix).exec();
    const read = new Map(res.kvs.map((kv) => [kv.key.toString(), entryOf(kv)] as const));
    const same = read.size === this.entries.size && [...read].every(([k, e]) => this.entries.get(k)?.modRevision === e.modRevision);
    this.entries.clear();
    for (const [k, e] of read) this.entries.set(k, e);
    this.readRevision = BigInt(res.header.revision);
    if (this.readRevision > BigInt(this.revision)) this.revision = String(res.header.revision);
    this.confirm();
    return !same;
  }

  /**
   * Every lease TTL, a read of the prefix checks what the watch delivered: etcd3 resumes a watch from
   * the last response's revision, so a second disconnect while catching up can skip events, and a
   * member cut off from its quorum keeps a watch open that says nothing. The read corrects the entries
   * and is what keeps the membership's age at 0.
   */
  private startChecks(): void {
    if (this.checkTimer) return;
    this.checkTimer = setInterval(() => {
      if (this.resyncing || this.stopped) return;
      this.read().then(
        (changed) => {
          if (!changed) return;
          this.log.warn({ revision: this.revision }, 'the watch had missed changes; a read of the prefix corrected them');
          this.onChange();
        },
        () => undefined, // etcd unreachable: the age grows, the entries stay
      );
    }, this.config.membership.etcd.leaseTtlMs);
    this.checkTimer.unref();
  }

  private async readAndWatch(): Promise<void> {
    const { prefix } = this.config.membership.etcd;
    await this.read();
    this.onChange();
    this.startChecks();
    const watcher = await this.client
      .watch()
      .prefix(prefix)
      .startRevision((BigInt(this.revision) + 1n).toString())
      .create();
    if (this.stopped) {
      await watcher.cancel();
      return;
    }
    this.watcher = watcher;
    this.watching = true;
    // An event no newer than the last read is already in the entries (or was undone since).
    const newer = (kv: IKeyValue): boolean => BigInt(kv.mod_revision) > this.readRevision;
    watcher.on('put', (kv) => {
      if (newer(kv)) this.entries.set(kv.key.toString(), entryOf(kv));
    });
    watcher.on('delete', (kv) => {
      if (newer(kv)) this.entries.delete(kv.key.toString());
    });
    watcher.on('data', (res) => {
      this.revision = String(res.header.revision);
      this.confirm();
      if (res.events.length > 0) this.onChange();
    });
    watcher.on('connected', () => {
      if (!this.watching) this.log.info({ revision: this.revision }, 'etcd watch resumed');
      this.watching = true;
      this.confirm();
    });
    watcher.on('disconnected', (err: Error) => {
      if (this.watching) this.log.warn({ err: err.message, revision: this.revision }, 'etcd watch lost; the last membership stays in force while it reconnects');
      this.watching = false;
    });
    // etcd cancels a watch whose start revision was compacted away, among other reasons:
    // read everything again and watch from there.
    watcher.on('error', (err: Error) => {
      if (this.watcher !== watcher || this.stopped) return;
      this.log.warn({ err: err.message, revision: this.revision }, 'etcd cancelled the watch; reading the prefix again');
      this.watcher = null;
      this.watching = false;
      void watcher.cancel().catch(() => undefined);
      void this.resync('watch cancelled');
    });
  }

  /** Reads and watches again, with back-off, until it works or the session stops. */
  private async resync(why: string): Promise<void> {
    if (this.resyncing) return;
    this.resyncing = true;
    let delay = RETRY_MIN_MS;
    try {
      while (!this.stopped) {
        try {
          await this.readAndWatch();
          this.log.info({ why, revision: this.revision, entries: this.entries.size }, 'etcd membership read');
          return;
        } catch (err) {
          this.log.warn({ why, err: (err as Error).message, retryInMs: delay }, 'cannot read the membership from etcd; the last one stays in force');
          await sleep(delay);
          delay = Math.min(delay * 2, RETRY_MAX_MS);
        }
      }
    } finally {
      this.resyncing = false;
    }
  }

  /** Writes this host's entry under a new lease, with back-off until it works; again whenever the lease is lost. */
  private async register(): Promise<void> {
    const { key, value } = ownEntry(this.config);
    const ttlSeconds = this.config.membership.etcd.leaseTtlMs / 1000;
    let delay = RETRY_MIN_MS;
    while (!this.stopped) {
      const lease = this.client.lease(ttlSeconds);
      lease.on('lost', () => undefined); // a failed grant is reported by the put below
      try {
        await lease.put(key).value(value).exec();
      } catch (err) {
        lease.release();
        this.log.warn({ entry: key, err: (err as Error).message, retryInMs: delay }, 'cannot register this host in etcd; retrying');
        await sleep(delay);
        delay = Math.min(delay * 2, RETRY_MAX_MS);
        continue;
      }
      if (this.stopped) {
        await lease.revoke().catch(() => undefined);
        return;
      }
      this.lease = lease;
      this.registered = true;
      lease.removeAllListeners('lost');
      lease.on('lost', (err: Error) => {
        if (this.lease !== lease || this.stopped) return;
        this.lease = null;
        this.registered = false;
        this.log.warn({ entry: key, err: err.message }, 'etcd lease lost; registering again');
        void this.register();
      });
      this.log.info({ entry: key, leaseTtlMs: this.config.membership.etcd.leaseTtlMs }, 'registered in etcd');
      return;
    }
  }

  /** End of a drain: revoke the lease (which deletes this host's entry), stop watching, close the client. */
  async stop(): Promise<void> {
    this.stopped = true;
    const lease = this.lease;
    this.lease = null;
    if (lease) {
      try {
        await lease.revoke({ deadline: Date.now() + 2_000 });
        this.log.info('etcd entry deleted (lease revoked)');
      } catch (err) {
        this.log.warn({ err: (err as Error).message }, 'cannot delete the etcd entry; it goes when its lease expires');
      }
    }
    if (this.checkTimer) clearInterval(this.checkTimer);
    // cancel() waits for etcd's answer, which an unreachable member never sends.
    await Promise.race([this.watcher?.cancel().catch(() => undefined), sleep(1_000)]);
    this.watcher = null;
    this.watching = false;
    this.client.close();
  }
}
