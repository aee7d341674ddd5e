// `qmesh run`: loads the config, starts the Daemon and maps signals: SIGTERM
// and SIGINT drain and exit 0 (also when the grace period had to reset some); SIGHUP re-reads the config file and its
// certificates and reloads them (Daemon.reload; a bad file is refused and logged).
// Under systemd (NOTIFY_SOCKET set) it reports READY=1 once started and
// STOPPING=1 when a stop begins (admin/systemd-notify.ts).
// An unexpected exception is a bug: it is logged and the process exits 1 so
// systemd restarts it.
import { loadConfig } from '../config/load.js';
import { Daemon } from '../daemon.js';
import { createLogger } from '../log.js';
import { SystemdNotifier } from '../admin/systemd-notify.js';

export async function runCommand(file: string): Promise<void> {
  const config = loadConfig(file, process.env);
  const log = createLogger(config.log.level);
  const daemon = new Daemon(config, log);
  const systemd = new SystemdNotifier(process.env.NOTIFY_SOCKET, log.child({ component: 'systemd' }));
  const crash = (err: unknown): void => {
    log.fatal({ err: (err as Error)?.stack ?? String(err) }, 'unexpected error; exiting');
    log.flush();
    setTimeout(() => process.exit(1), 50);
  };
  process.on('uncaughtException', crash);
  process.on('unhandledRejection', crash);
  let stopping = false;
  const stop = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'stopping');
    systemd.stopping(`draining open connections (${signal})`);
    daemon
      .stop()
      .then(() => {
        // A requested stop that ran its course is a clean exit, even if the grace period had to
        // reset some connections (daemon.ts logs how many): exit 1 would make systemd restart it.
        log.flush();
        setTimeout(() => process.exit(0), 20);
      })
      .catch(crash);
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  // Reloads run one at a time; a SIGHUP during one runs another afterwards (the file may have changed again).
  let reloading: Promise<void> | null = null;
  let reloadAgain = false;
  const reload = (): void => {
    if (stopping || !daemon.ready) return;
    if (reloading) {
      reloadAgain = true;
      return;
    }
    log.info({ file: config.file }, 'SIGHUP: reloading configuration');
    systemd.reloading('reloading configuration');
    reloading = (async () => {
      try {
        await daemon.reload(loadConfig(file, process.env));
      } catch (err) {
        log.error({ file: config.file, reason: (err as Error).message }, 'reload rejected; the running configuration stays');
      }
    })().finally(() => {
      reloading = null;
      if (!stopping) systemd.ready(`ready: ${daemon.config.peers.length} peer(s)`);
      if (reloadAgain) {
        reloadAgain = false;
        reload();
      }
    });
  };
  process.on('SIGHUP', reload);
  try {
    await daemon.start();
    if (!stopping) systemd.ready(`ready: ${config.peers.length} peer(s)`);
  } catch (err) {
    log.error({ err: String((err as Error).message ?? err) }, 'start failed');
    await daemon.stop(0).catch(() => {});
    log.flush();
    throw err;
  }
}
