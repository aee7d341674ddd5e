// When a tunnel must be re-established because a certificate it was
// authenticated with runs out, and when our own certificate counts as
// "expiring soon". Used by tunnel/ (schedules) and admin/ (status, warnings).

export interface Validity {
  readonly notBefore: Date;
  readonly notAfter: Date;
}

const RENEW_MARGIN_MAX_MS = 5 * 60_000;
const EXPIRING_SOON_MS = 60 * 60_000;

/** The validity that ends first (the tunnel's authentication ends with it). */
export function earliest(a: Validity, b: Validity): Validity {
  return a.notAfter.getTime() <= b.notAfter.getTime() ? a : b;
}

/** Re-dial this long before notAfter: 10% of the lifetime, at most 5 minutes. */
export function renewMarginMs(v: Validity): number {
  const lifetime = Math.max(0, v.notAfter.getTime() - v.notBefore.getTime());
  return Math.min(lifetime / 10, RENEW_MARGIN_MAX_MS);
}

/** Under a third of the lifetime or under an hour left (whichever comes first). */
export function expiringSoon(v: Validity, now = Date.now()): boolean {
  const left = v.notAfter.getTime() - now;
  const lifetime = v.notAfter.getTime() - v.notBefore.getTime();
  return left < lifetime / 3 || left < EXPIRING_SOON_MS;
}

/** setTimeout caps delays at 2^31-1 ms (~24.8 days); a longer wait re-arms on the way. */
export function timerAt(at: number, fn: () => void): NodeJS.Timeout {
  const MAX = 2 ** 31 - 1;
  const delay = Math.max(0, at - Date.now());
  const t = delay > MAX ? setTimeout(() => timerAt(at, fn), MAX) : setTimeout(fn, delay);
  t.unref();
  return t;
}
