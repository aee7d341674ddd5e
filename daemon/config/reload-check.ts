// What a live reload may change, and what needs a restart. `qmesh check-config`
// and SIGHUP validate a new config the same way (load.ts, certificates, rules);
// this file adds the comparison with the running config. The ansible role keeps
// the same lists (ansible/roles/qmesh/vars/main.yml) to restart instead of
// reloading; test/unit/reload-check.test.ts holds the two together.
import type { Config } from './load.js';
import { formatHostPort } from './formats.js';

/** Each key only a restart can apply, with the value compared (JSON) between the running and the new config. */
const RESTART_ONLY: ReadonlyArray<readonly [string, (c: Config) => unknown]> = [
  ['node.name', (c) => c.node.name],
  ['listen.quic', (c) => formatHostPort(c.listen.quic)],
  ['listen.capture', (c) => c.listen.capture],
  ['listen.admin', (c) => formatHostPort(c.listen.admin)],
  ['tls.trustDomain', (c) => c.tls.trustDomain],
  // tunnel.maxStreams follows reload (native/src/reload.rs); the rest of tunnel.* shapes connections from start.
  ['tunnel', (c) => ({ ...c.tunnel, maxStreams: undefined })],
  ['capture.mark', (c) => c.capture.mark],
  // The etcd session (client, lease, watch) is made at start; the peers it brings follow every change.
  ['membership', (c) => c.membership],
];

/** With etcd membership, also restart-only: this host's entry (its CIDRs, its endpoint) is written at start. */
const RESTART_ONLY_WITH_ETCD: ReadonlyArray<readonly [string, (c: Config) => unknown]> = [['local.cidrs', (c) => c.local.cidrs.map(String)]];

/** The keys of the two lists above, for the ansible role's copy of them. */
export const RESTART_ONLY_KEYS = RESTART_ONLY.map(([key]) => key);
export const RESTART_ONLY_KEYS_WITH_ETCD = RESTART_ONLY_WITH_ETCD.map(([key]) => key);

/** Keys whose new value only a restart can apply, with the old and new values; empty if none. */
export function restartOnlyChanges(running: Config, next: Config): string[] {
  const keys = running.membership.source === 'etcd' ? [...RESTART_ONLY, ...RESTART_ONLY_WITH_ETCD] : RESTART_ONLY;
  const out: string[] = [];
  for (const [key, value] of keys) {
    const a = JSON.stringify(value(running));
    const b = JSON.stringify(value(next));
    if (a !== b) out.push(`${key} (${a} -> ${b})`);
  }
  return out;
}
