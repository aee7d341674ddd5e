// `qmesh run`: loads the config, starts the Daemon and maps signals: SIGTERM
// and SIGINT drain and exit 0 (also when the grace period had to reset some); SIGHUP,
// or a change of the config file or its certificate files on disk (config/watch.ts),
// re-reads them and reloads (Daemon.reload; a bad file is refused and logged, the old
// config runs on). With membership.source "etcd", the peers come from etcd as well
// (membership/): the first read happens before the daemon starts, and every change
// after it is a reload of the last file config with the new entries.
// Under systemd (NOTIFY_SOCKET set) it reports READY=1 once started and
// STOPPING=1 when a stop begins (admin/systemd-notify.ts).
// An unexpected exception is a bug: it is logged and the process exits 1 so
// systemd restarts it.
import { loadConfig } from '../config/load.js';
import { Daemon } from '../daemon.js';
import { createLogger } from '../log.js';
import { SystemdNotifier } from '../admin/systemd-notify.js';
import { contentHash, FileWatcher } from '../config/watch.js';
import { EtcdMembership } from '../membership/membership.js';

type Trigger = 'SIGHUP' | 'file change' | 'membership change';
/** A pending reload of a higher rank covers one of a lower rank. */
const RANK: Record<Trigger, number> = { SIGHUP: 2, 'file change': 1, 'membership change': 0 };
const MEMBERSHIP_RETRY_MIN_MS = 1_000;
const MEMBERSHIP_RETRY_MAX_MS = 30_000;

export async function runCommand(file: string): Promise<void> {
  const config = loadConfig(file, process.env);
  const log = createLogger(config.log.level);
  // Until the handlers below are in place (etcd's first read alone may take 3 s), a signal is held
  // rather than left to Node's default, which ends the process even for SIGHUP; it is replayed after.
  const held = holdSignals(['SIGTERM', 'SIGINT', 'SIGHUP'], (signal) => log.info({ signal }, 'signal held until the daemon has started'));
  // The files as this config was read from them: an edit made while the daemon starts is reloaded after.
  const watchedFilesOf = (c: typeof config): string[] => [c.file, c.tls.ca, c.tls.cert, c.tls.key];
  let lastHash = contentHash(watchedFilesOf(config));
  const membership = config.membership.source === 'etcd' ? new EtcdMembership(config, log.child({ component: 'membership' })) : null;
  if (membership) await membership.start();
  // The file's config of the config in force: a membership change is applied on top of it.
  let fileConfig = config;
  const daemon = new Daemon(membership ? membership.configFor(config) : config, log, { membership });
  const systemd = new SystemdNotifier(process.env.NOTIFY_SOCKET, log.child({ component: 'systemd' }));
  const crash = (err: unknown): void => {
    log.fatal({ err: (err as Error)?.stack ?? String(err) }, 'unexpected error; exiting');
    log.flush();
    setTimeout(() => process.exit(1), 50);
  };
  process.on('uncaughtException', crash);
  process.on('unhandledRejection', crash);
  // Settles when daemon.start() has: true once started, false if it failed (the start's own path then
  // stops it and exits 1). A stop asked for meanwhile waits for it, so the start's rules and tunnels
  // are stopped in order rather than raced.
  let startSettled!: (started: boolean) => void;
  const started = new Promise<boolean>((resolve) => (startSettled = resolve));
  let stopping = false;
  const stop = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    const askedAt = Date.now();
    log.info({ signal }, 'stopping');
    systemd.stopping(`draining open connections (${signal})`);
    watcher.close();
    started
      .then(async (ok) => {
        if (!ok) return;
        // The drain's budget runs from the signal (drain.stopTimeoutMs covers graceMs + 5 s), not
        // from the end of a start it had to wait for.
        await daemon.stop(Math.max(0, daemon.config.drain.graceMs - (Date.now() - askedAt)));
        // A requested stop that ran its course is a clean exit, even if the grace period had to
        // reset some connections (daemon.ts logs how many): exit 1 would make systemd restart it.
        log.flush();
        setTimeout(() => process.exit(0), 20);
      })
      .catch(crash);
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  // Reloads run one at a time; a request during one runs another afterwards (the files may have changed again).
  // SIGHUP always reloads; the file watcher only when the files' content differs from the last attempt.
  const watchedFiles = (): string[] => watchedFilesOf(daemon.config);
  let reloading: Promise<void> | null = null;
  let again: Trigger | null = null;
  // Set by every change of etcd's entries, cleared by any reload (each one admits the entries of the moment),
  // and set again when that reload is refused: the change is retried, with back-off, until it lands.
  let membershipPending = false;
  let membershipRetryMs = MEMBERSHIP_RETRY_MIN_MS;
  let membershipRetry: NodeJS.Timeout | null = null;
  const reload = (trigger: Trigger): void => {
    if (stopping) return;
    if (reloading || !daemon.ready) {
      if (!again || RANK[trigger] > RANK[again]) again = trigger;
      return;
    }
    const hash = contentHash(watchedFiles());
    if (trigger === 'file change' && hash === lastHash) {
      log.debug({ file: config.file }, 'files touched but their content is unchanged; nothing to reload');
      if (!membershipPending) return;
      trigger = 'membership change';
    }
    membershipPending = false;
    if (trigger === 'membership change') {
      log.info({ trigger }, 'membership changed: reloading with the file\'s configuration in force');
    } else {
      lastHash = hash;
      log.info({ file: config.file, trigger }, `${trigger}: reloading configuration`);
      systemd.reloading('reloading configuration');
    }
    reloading = (async () => {
      try {
        const nextFile = trigger === 'membership change' ? fileConfig : loadConfig(file, process.env);
        const result = await daemon.reload(membership ? membership.configFor(nextFile) : nextFile);
        if (result.ok) {
          membership?.applied();
          membershipRetryMs = MEMBERSHIP_RETRY_MIN_MS;
          fileConfig = nextFile;
          // The new config may name other certificate files; the hash covers what was just read. A
          // membership reload used the file config in force, so an edit on disk stays to be reloaded.
          if (trigger !== 'membership change') {
            watcher.watch(watchedFiles());
            lastHash = contentHash(watchedFiles());
          }
        } else if (membership) {
          retryMembership();
        }
      } catch (err) {
        log.error({ file: config.file, reason: (err as Error).message }, 'reload rejected; the running configuration stays');
        if (membership) retryMembership();
      }
    })().finally(() => {
      reloading = null;
      if (!stopping && trigger !== 'membership change') systemd.ready(`ready: ${daemon.config.peers.length} peer(s)`);
      const next = again ?? (membershipPending ? 'membership change' : null);
      again = null;
      if (next) reload(next);
    });
  };
  // A refused reload may have carried a membership change: try it again later, on the file config in force.
  const retryMembership = (): void => {
    if (membershipRetry || stopping) return;
    log.warn({ retryInMs: membershipRetryMs }, 'the membership change is not in force; retrying');
    membershipRetry = setTimeout(() => {
      membershipRetry = null;
      membershipPending = true;
      reload('membership change');
    }, membershipRetryMs);
    membershipRetry.unref();
    membershipRetryMs = Math.min(membershipRetryMs * 2, MEMBERSHIP_RETRY_MAX_MS);
  };
  membership?.onChange(() => {
    membershipPending = true;
    reload('membership change');
  });
  const watcher = new FileWatcher(() => daemon.config.reload.debounceMs, () => {
    if (daemon.config.reload.watch) reload('file change');
  }, log.child({ component: 'reload' }));
  process.on('SIGHUP', () => reload('SIGHUP'));
  held.replay();
  try {
    await daemon.start();
    startSettled(true);
    if (stopping) return;
    membership?.applied();
    watcher.watch(watchedFiles());
    systemd.ready(`ready: ${daemon.config.peers.length} peer(s)`);
    // What arrived while the daemon started: a SIGHUP, an edit of its files, a membership change. The
    // highest wins; a SIGHUP or file reload carries the membership of the moment too.
    const fileChanged = contentHash(watchedFiles()) !== lastHash;
    const next: Trigger | null =
      again === 'SIGHUP' ? 'SIGHUP' : fileChanged ? 'file change' : (again ?? (membershipPending ? 'membership change' : null));
    again = null;
    if (next) reload(next);
  } catch (err) {
    startSettled(false);
    log.error({ err: String((err as Error).message ?? err) }, 'start failed');
    await daemon.stop(0).catch(() => {});
    log.flush();
    throw err;
  }
}

/** Holds the given signals (instead of their default action) until replay(), which re-emits each once. */
function holdSignals(signals: NodeJS.Signals[], onHeld: (signal: NodeJS.Signals) => void): { replay(): void } {
  const got: NodeJS.Signals[] = [];
  const hold = (signal: NodeJS.Signals): void => {
    onHeld(signal);
    if (!got.includes(signal)) got.push(signal);
  };
  for (const signal of signals) process.on(signal, hold);
  return {
    replay(): void {
      for (const signal of signals) process.off(signal, hold);
      for (const signal of got) process.emit(signal, signal);
    },
  };
}
