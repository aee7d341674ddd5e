// Tells systemd (Type=notify) what the daemon is doing, through the datagram
// socket named by NOTIFY_SOCKET (sd_notify(3)): READY=1 once Daemon.start() is
// done (when /healthz turns 200), STOPPING=1 when a stop begins. cli/run.ts
// calls it; the datagram goes out through the data plane addon (dataplane/native.ts).
import type { Logger } from '../log.js';
import { tryAddon, type Addon } from '../dataplane/native.js';

export class SystemdNotifier {
  private warned = false;

  /** socketPath: NOTIFY_SOCKET as systemd set it, or undefined when not run by systemd (then every call is a no-op). */
  constructor(
    private readonly socketPath: string | undefined,
    private readonly log: Logger,
    private readonly addon: Pick<Addon, 'sdNotify'> | null = tryAddon(),
  ) {}

  get enabled(): boolean {
    return Boolean(this.socketPath);
  }

  ready(status: string): void {
    this.send(`READY=1\nSTATUS=${status}`);
  }

  /** Around a live reload (systemd's Type=notify reload protocol). */
  reloading(status: string): void {
    this.send(`RELOADING=1\nSTATUS=${status}`);
  }

  stopping(status: string): void {
    this.send(`STOPPING=1\nSTATUS=${status}`);
  }

  /** A failed notification is logged once and never stops the daemon: systemd then times the start out itself. */
  private send(message: string): void {
    if (!this.socketPath) return;
    try {
      if (!this.addon) throw new Error('the native addon is not built (run `npm ci`)');
      this.addon.sdNotify(this.socketPath, message);
      this.log.debug({ message }, 'systemd notified');
    } catch (err) {
      if (this.warned) return;
      this.warned = true;
      this.log.warn({ notifySocket: this.socketPath, err: String((err as Error).message ?? err) }, 'cannot notify systemd');
    }
  }
}
