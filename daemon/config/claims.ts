// Who owns what: each host's name, underlay address and function CIDRs. One
// Claims is filled with this node, then with each peer in order; a peer whose
// claim conflicts with an earlier one is refused, so the earlier owner keeps
// what it had. load.ts checks the file's peers this way (the first conflict
// refuses the file), and membership/admit.ts checks etcd's entries the same
// way (a conflicting entry is refused and logged, the others are admitted).
// Tunnel endpoints must also lie outside capture.failClosedCidrs, whose rules
// would drop the QUIC packets themselves.
import { Cidr, IpAddress } from '../policy/cidr.js';
import { endpointProblem, reservedRangeProblem } from './dangerous.js';
import type { HostPort } from './formats.js';

export interface PeerClaim {
  readonly name: string;
  readonly endpoint: HostPort;
  readonly cidrs: readonly Cidr[];
}

interface Owned {
  readonly cidr: Cidr;
  /** "local.cidrs", "peers[1].cidrs", "etcd entry host-3.cidrs" */
  readonly owner: string;
}

export class Claims {
  private readonly names = new Set<string>();
  private readonly owned: Owned[] = [];
  /** Underlay IP -> the key that holds it; one address is one host, whatever the port. */
  private readonly addresses = new Map<string, string>();
  private readonly endpoints: Array<{ key: string; host: string }> = [];
  private readonly failClosed: readonly Cidr[];

  constructor(node: { readonly name: string; readonly quic: HostPort; readonly localCidrs: readonly Cidr[]; readonly failClosedCidrs?: readonly Cidr[] }) {
    this.failClosed = node.failClosedCidrs ?? [];
    this.names.add(node.name);
    this.addresses.set(node.quic.host, 'listen.quic');
    this.endpoints.push({ key: 'listen.quic', host: node.quic.host });
    for (const cidr of node.localCidrs) this.owned.push({ cidr, owner: 'local.cidrs' });
  }

  /** Every name claimed so far: this node's and each admitted peer's. */
  get hostNames(): ReadonlySet<string> {
    return this.names;
  }

  /**
   * Why `peer` (named `key` in messages: "peers[2]") cannot be admitted next to the claims so far, or null;
   * on null its claims are recorded. `fromEtcd`: an entry someone else wrote, held to more: it may claim
   * only addresses inside capture.failClosedCidrs, and no part of an earlier host's CIDRs (in the file,
   * an operator may nest a peer's block inside another's on purpose; from etcd, nesting would let a later
   * host take part of an earlier one's traffic).
   */
  add(peer: PeerClaim, key: string, fromEtcd = false): string | null {
    for (const [j, cidr] of peer.cidrs.entries()) {
      const problem = reservedRangeProblem(cidr);
      if (problem) return `${key}.cidrs[${j}]: ${problem}`;
      if (fromEtcd && !this.failClosed.some((f) => f.prefixLength <= cidr.prefixLength && f.overlaps(cidr))) {
        return `${key}.cidrs[${j}]: ${cidr} lies outside capture.failClosedCidrs (${this.failClosed.join(', ') || 'none'}); an etcd entry may claim only the fleet's function addresses`;
      }
    }
    const host = peer.endpoint.host;
    const notEndpoint = endpointProblem(host);
    if (notEndpoint) return `${key}.endpoint: ${notEndpoint}`;
    const holder = this.addresses.get(host);
    if (holder === 'listen.quic') return `${key}.endpoint: ${host} is this node's own address (listen.quic); a host is not its own peer`;
    if (holder) {
      return `${key}.endpoint: ${host} is also the address of ${holder}; peers are told apart by source IP (the QUIC listener and the iptables rules), so two peers cannot share one, whatever their ports`;
    }
    if (this.names.has(peer.name)) return `${key}.name: "${peer.name}" is used twice (or is this node's own name)`;
    for (const cidr of peer.cidrs) {
      for (const o of this.owned) {
        if (!o.cidr.overlaps(cidr)) continue;
        // File peers may nest (the longest prefix owns an address); local CIDRs never overlap a peer's,
        // two hosts never claim the very same block, and an etcd entry overlaps nothing earlier.
        if (fromEtcd || o.owner === 'local.cidrs' || o.cidr.prefixLength === cidr.prefixLength) {
          return `${key}.cidrs: ${cidr} overlaps ${o.cidr} in ${o.owner}; every function address must belong to exactly one host`;
        }
      }
    }
    // The underlay must not sit inside a function CIDR: the fail-closed rules drop plaintext
    // towards peer CIDRs, which would then include the QUIC packets themselves.
    const ip = IpAddress.parse(host);
    const problem = this.failClosedProblem(`${key}.endpoint`, ip);
    if (problem) return problem;
    const inside = [...this.owned, ...peer.cidrs.map((cidr) => ({ cidr, owner: `${key}.cidrs` }))].find((o) => o.cidr.contains(ip));
    if (inside) return `${key}.endpoint: ${host} lies inside ${inside.cidr} (${inside.owner}); tunnel endpoints must be underlay addresses outside every function CIDR`;
    for (const e of this.endpoints) {
      const cidr = peer.cidrs.find((c) => c.contains(IpAddress.parse(e.host)));
      if (cidr) return `${e.key}: ${e.host} lies inside ${cidr} (${key}.cidrs); tunnel endpoints must be underlay addresses outside every function CIDR`;
    }
    this.names.add(peer.name);
    this.addresses.set(host, `${key}.endpoint`);
    this.endpoints.push({ key: `${key}.endpoint`, host });
    for (const cidr of peer.cidrs) this.owned.push({ cidr, owner: `${key}.cidrs` });
    return null;
  }

  /** Why this node's own claims cannot stand (a reserved local CIDR, listen.quic inside one), or null. Two local CIDRs may overlap. */
  nodeProblem(): string | null {
    const local = this.owned.filter((o) => o.owner === 'local.cidrs');
    for (const [i, o] of local.entries()) {
      const problem = reservedRangeProblem(o.cidr);
      if (problem) return `local.cidrs[${i}]: ${problem}`;
    }
    const [quic] = this.endpoints;
    const inside = quic && local.find((o) => o.cidr.contains(IpAddress.parse(quic.host)));
    if (quic && inside) return `listen.quic: ${quic.host} lies inside ${inside.cidr} (local.cidrs); tunnel endpoints must be underlay addresses outside every function CIDR`;
    for (const [i, cidr] of this.failClosed.entries()) {
      const problem = reservedRangeProblem(cidr);
      if (problem) return `capture.failClosedCidrs[${i}]: ${problem}`;
    }
    return quic ? this.failClosedProblem('listen.quic', IpAddress.parse(quic.host)) : null;
  }

  /** Why tunnel endpoint `ip` (named `key`) cannot lie where it does: inside a fail-closed CIDR, or null. */
  private failClosedProblem(key: string, ip: IpAddress): string | null {
    const inside = this.failClosed.find((c) => c.contains(ip));
    if (!inside) return null;
    return `${key}: ${ip} lies inside ${inside} (capture.failClosedCidrs); tunnel endpoints must be underlay addresses outside the fail-closed CIDRs, or the QUIC packets themselves would be dropped`;
  }
}
