// Turns etcd's entries into peers, against the file's config: the entries are
// taken in the order they were created, and each must pass the same claim
// checks as a peer in the file (config/claims.ts). An entry that fails is
// refused with its reason and the others still count, so a host cannot take
// function CIDRs, a name or an address that an earlier host holds.
import { Claims } from '../config/claims.js';
import { withPeers, type Config, type PeerConfig } from '../config/load.js';
import { decodeEntry, nameOfKey, type EtcdEntry } from './entry.js';

export interface Refusal {
  readonly key: string;
  readonly reason: string;
}

export interface Admission {
  /** The file's config with the admitted entries appended to its peers. */
  readonly config: Config;
  readonly admitted: readonly string[];
  readonly refused: readonly Refusal[];
}

const byCreation = (a: EtcdEntry, b: EtcdEntry): number => {
  const d = BigInt(a.createRevision) - BigInt(b.createRevision);
  return d < 0n ? -1 : d > 0n ? 1 : a.key < b.key ? -1 : a.key > b.key ? 1 : 0;
};

export function admit(file: Config, entries: Iterable<EtcdEntry>): Admission {
  const { prefix } = file.membership.etcd;
  const claims = new Claims({ name: file.node.name, quic: file.listen.quic, localCidrs: file.local.cidrs, failClosedCidrs: file.capture.failClosedCidrs });
  file.peers.forEach((p, i) => claims.add(p, `peers[${i}]`)); // already checked by load.ts
  const peers: PeerConfig[] = [];
  const refused: Refusal[] = [];
  for (const entry of [...entries].sort(byCreation)) {
    if (nameOfKey(prefix, entry.key) === file.node.name) continue; // our own registration
    const decoded = decodeEntry(prefix, file.tls.trustDomain, entry);
    if ('problem' in decoded) {
      refused.push({ key: entry.key, reason: decoded.problem });
      continue;
    }
    const problem = claims.add(decoded.peer, `etcd ${entry.key}`, true);
    if (problem) {
      refused.push({ key: entry.key, reason: problem });
      continue;
    }
    peers.push(decoded.peer);
  }
  return { config: withPeers(file, peers), admitted: peers.map((p) => p.name), refused };
}
