// Decides where a captured connection goes: to the peer owning the destination
// (longest-prefix match over every peer's CIDRs), nowhere if the destination is
// local (local CIDRs never enter a tunnel), or nowhere at all if no host owns it.
// A pure function of the config; capture/ asks it, tunnel/ carries out the answer.
import type { Config, PeerConfig } from '../config/load.js';
import type { Cidr, IpAddress } from './cidr.js';

export type RouteDecision =
  | { readonly kind: 'peer'; readonly peer: PeerConfig; readonly cidr: Cidr }
  | { readonly kind: 'local'; readonly cidr: Cidr }
  | { readonly kind: 'none' };

interface Entry {
  readonly cidr: Cidr;
  readonly peer: PeerConfig | null; // null: local
}

export class RouteTable {
  private readonly entries: Entry[];

  constructor(config: Pick<Config, 'local' | 'peers'>) {
    const entries: Entry[] = config.local.cidrs.map((cidr) => ({ cidr, peer: null }));
    for (const peer of config.peers) for (const cidr of peer.cidrs) entries.push({ cidr, peer });
    // Longest prefix first, so the first match is the longest match.
    this.entries = entries.sort((a, b) => b.cidr.prefixLength - a.cidr.prefixLength);
  }

  lookup(destination: IpAddress): RouteDecision {
    for (const e of this.entries) {
      if (!e.cidr.contains(destination)) continue;
      return e.peer ? { kind: 'peer', peer: e.peer, cidr: e.cidr } : { kind: 'local', cidr: e.cidr };
    }
    return { kind: 'none' };
  }

  /** Is `ip` inside one of this host's own function CIDRs? (inbound: never an open relay) */
  isLocal(ip: IpAddress): boolean {
    return this.lookup(ip).kind === 'local';
  }

  /**
   * May `peer` claim `ip` as the source of a connection? Its functions' addresses (longest
   * prefix), and its own underlay address, which host processes on it connect from.
   */
  ownedBy(peer: PeerConfig, ip: IpAddress): boolean {
    if (ip.text === peer.endpoint.host) return true;
    const r = this.lookup(ip);
    return r.kind === 'peer' && r.peer.name === peer.name;
  }
}
