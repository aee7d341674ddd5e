// Warns while this host's own certificate is close to expiry: at start, on each
// reload and every few minutes, so an operator sees it in the log before the
// tunnels fail closed. /status shows the same (admin/status.ts).
import type { Logger } from '../log.js';
import { expiringSoon, type Validity } from './validity.js';

const CHECK_EVERY_MS = 5 * 60_000;

export class ExpiryWatch {
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly current: () => (Validity & { readonly identity: string }) | undefined,
    private readonly log: Logger,
  ) {}

  /** Checks now, and keeps checking periodically. */
  check(when: string): void {
    if (!this.timer) {
      this.timer = setInterval(() => this.check('periodic'), CHECK_EVERY_MS);
      this.timer.unref();
    }
    const c = this.current();
    if (!c || !expiringSoon(c)) return;
    const left = Math.round((c.notAfter.getTime() - Date.now()) / 1000);
    const fields = { identity: c.identity, notAfter: c.notAfter.toISOString(), expiresInSeconds: left, check: when };
    if (left <= 0) this.log.error(fields, 'own certificate has expired: peers refuse new tunnels; issue and deploy a new one');
    else this.log.warn(fields, 'own certificate expires soon: issue and deploy a new one (README "Rotation runbook")');
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }
}
