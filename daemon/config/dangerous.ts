// Configs that are well-formed but dangerous, refused by the loader (so by
// `qmesh check-config`, `qmesh run` and every reload alike): function CIDRs over
// address ranges that are never a function's, an admin listener off loopback
// without saying so, a drain that the service manager would cut short, and two
// peers (or a peer and this node) on one underlay address. The per-host parts
// (reserved CIDRs, shared addresses) are checked per claim in claims.ts, so etcd
// entries meet them too; the rest is here. Each message names the key.
import { Cidr, IpAddress } from '../policy/cidr.js';
import type { Config } from './load.js';

/** Time after drain.graceMs that a stop still needs: closing tunnels, flushing logs, exiting. */
export const STOP_MARGIN_MS = 5_000;

interface Reserved {
  readonly cidr: Cidr;
  /** "loopback 127.0.0.0/8" */
  readonly what: string;
  readonly why: string;
}

const reserved = (cidr: string, kind: string, why: string): Reserved => ({ cidr: Cidr.parse(cidr), what: `${kind} ${cidr}`, why });
const LOOPBACK_WHY = 'traffic to the host itself would be captured/tunnelled';
const LINK_LOCAL_WHY = 'link-local addresses exist on one link only (neighbour discovery, DHCP, cloud metadata at 169.254.169.254), no function owns them and they cannot be routed to another host';
const MULTICAST_WHY = 'multicast is not unicast TCP: no single host owns a group, so it can be neither captured for one peer nor delivered';

/** Ranges a function CIDR may neither contain nor lie inside (prefix length 0 is refused separately). */
const RESERVED: readonly Reserved[] = [
  reserved('127.0.0.0/8', 'loopback', LOOPBACK_WHY),
  reserved('::1/128', 'loopback', LOOPBACK_WHY),
  reserved('169.254.0.0/16', 'link-local', LINK_LOCAL_WHY),
  reserved('fe80::/10', 'link-local', LINK_LOCAL_WHY),
  reserved(
    '::ffff:0:0/96',
    'IPv4-mapped',
    'these are IPv4 addresses written as IPv6 and the data plane compares them as IPv4 (native/src/addr.rs), so the block would not mean what it says; list the IPv4 block instead',
  ),
  reserved('224.0.0.0/4', 'multicast', MULTICAST_WHY),
  reserved('ff00::/8', 'multicast', MULTICAST_WHY),
];

const LOOPBACK = RESERVED.filter((r) => r.what.startsWith('loopback')).map((r) => r.cidr);

/** Why `cidr` may not be a function CIDR, or null if it may. */
export function reservedRangeProblem(cidr: Cidr): string | null {
  if (cidr.prefixLength === 0) {
    const all = cidr.family === 4 ? '0.0.0.0/0' : '::/0';
    return `${cidr} covers every IPv${cidr.family} address (${all}, prefix length 0): all traffic of the host, the underlay, DNS and the host itself included, would be captured/tunnelled or claimed as this host's functions`;
  }
  const hit = RESERVED.find((r) => r.cidr.overlaps(cidr));
  if (!hit) return null;
  // Two CIDRs that overlap are nested: the one with the shorter prefix contains the other.
  const relation = cidr.prefixLength <= hit.cidr.prefixLength ? 'covers' : 'lies inside';
  return `${cidr} ${relation} ${hit.what}: ${hit.why}`;
}

/** Addresses that name no single remote host: a tunnel endpoint there would reach this host or nobody. */
const NOT_AN_ENDPOINT: ReadonlyArray<{ cidr: Cidr; what: string }> = [
  { cidr: Cidr.parse('0.0.0.0/8'), what: 'an unspecified address ("this network")' },
  { cidr: Cidr.parse('::/128'), what: 'an unspecified address' },
  { cidr: Cidr.parse('127.0.0.0/8'), what: 'a loopback address' },
  { cidr: Cidr.parse('::1/128'), what: 'a loopback address' },
  { cidr: Cidr.parse('169.254.0.0/16'), what: 'a link-local address' },
  { cidr: Cidr.parse('fe80::/10'), what: 'a link-local address' },
  { cidr: Cidr.parse('224.0.0.0/4'), what: 'a multicast address' },
  { cidr: Cidr.parse('ff00::/8'), what: 'a multicast address' },
  { cidr: Cidr.parse('255.255.255.255/32'), what: 'the broadcast address' },
];

/** Why `host` cannot be a tunnel endpoint (a peer's, or the one this host advertises), or null. */
export function endpointProblem(host: string): string | null {
  const ip = IpAddress.parse(host);
  const hit = NOT_AN_ENDPOINT.find((r) => r.cidr.contains(ip));
  return hit ? `${host} is ${hit.what}, not one host's underlay address` : null;
}

export function isLoopback(host: string): boolean {
  const ip = IpAddress.parse(host);
  return LOOPBACK.some((c) => c.contains(ip));
}

/** Throws through `fail` at the first dangerous listener or drain setting, naming its key. */
export function checkDangerous(c: Config, fail: (message: string) => never): void {
  if (!c.listen.adminAllowNonLoopback && !isLoopback(c.listen.admin.host)) {
    fail(
      `listen.admin: ${c.listen.admin.host} is not a loopback address; the admin listener has no authentication and /status and /metrics would be open to other hosts (and functions). Use 127.0.0.1 or ::1, or set listen.adminAllowNonLoopback to true on purpose`,
    );
  }

  if (c.drain.graceMs + STOP_MARGIN_MS > c.drain.stopTimeoutMs) {
    fail(
      `drain.graceMs: ${c.drain.graceMs} ms plus ${STOP_MARGIN_MS} ms to close tunnels and flush logs exceeds drain.stopTimeoutMs (${c.drain.stopTimeoutMs} ms, the unit's TimeoutStopSec); the service manager would kill the daemon in the middle of its drain. Lower drain.graceMs, or raise TimeoutStopSec and drain.stopTimeoutMs together`,
    );
  }
}
