// What a live reload may change, and what needs a restart. `qmesh check-config`
// and SIGHUP validate a new config the same way (load.ts, certificates, rules);
// this file adds the comparison with the running config.
import type { Config } from './load.js';
import { formatHostPort } from './formats.js';

/** Keys whose new value only a restart can apply, with the old and new values; empty if none. */
export function restartOnlyChanges(running: Config, next: Config): string[] {
  const same = (a: unknown, b: unknown): boolean => JSON.stringify(a) === JSON.stringify(b);
  const out: string[] = [];
  const check = (key: string, a: unknown, b: unknown): void => {
    if (!same(a, b)) out.push(`${key} (${JSON.stringify(a)} -> ${JSON.stringify(b)})`);
  };
  check('node.name', running.node.name, next.node.name);
  check('listen.quic', formatHostPort(running.listen.quic), formatHostPort(next.listen.quic));
  check('listen.capture', running.listen.capture, next.listen.capture);
  check('listen.admin', formatHostPort(running.listen.admin), formatHostPort(next.listen.admin));
  check('tls.trustDomain', running.tls.trustDomain, next.tls.trustDomain);
  // tunnel.maxStreams follows reload (native/src/reload.rs); the rest of tunnel.* shapes connections from start.
  const fixed = (t: Config['tunnel']) => ({ ...t, maxStreams: undefined });
  check('tunnel', fixed(running.tunnel), fixed(next.tunnel));
  check('capture.mark', running.capture.mark, next.capture.mark);
  // The etcd session (client, lease, watch) is made at start; the peers it brings follow every change.
  check('membership', running.membership, next.membership);
  // With etcd, this host's entry (its CIDRs, its endpoint) is written at start.
  if (running.membership.source === 'etcd') check('local.cidrs', running.local.cidrs.map(String), next.local.cidrs.map(String));
  return out;
}
