// One host's entry in etcd: the key <prefix><name> holds
//   { "id": "spiffe://<trust domain>/host/<name>", "name", "endpoint": "addr:port", "cidrs": [...] }.
// The entry says where a host is and which function CIDRs it owns; it proves
// nothing about who the host is. The name in the key, the name and SPIFFE ID in
// the value, and (when the tunnel comes up) the peer's certificate must agree:
// the data plane dials <name> and accepts only spiffe://<trust domain>/host/<name>.
import type { Config, PeerConfig } from '../config/load.js';
import { formatHostPort, parseHostPort } from '../config/formats.js';
import { checkPeerObject, hostName } from '../config/schema.js';
import { Cidr } from '../policy/cidr.js';

/** A key-value pair as read from etcd; revisions are decimal strings (int64). */
export interface EtcdEntry {
  readonly key: string;
  readonly value: string;
  /** The revision that created the key: who claimed first (admit.ts). */
  readonly createRevision: string;
  readonly modRevision: string;
}

/** An entry may claim this many CIDRs at most: each costs rules on every host. */
export const MAX_ENTRY_CIDRS = 64;
const MAX_VALUE_BYTES = 16 * 1024;

export const spiffeIdOf = (trustDomain: string, name: string): string => `spiffe://${trustDomain}/host/${name}`;

/** The key and value this host registers. */
export function ownEntry(config: Config): { key: string; value: string } {
  const name = config.node.name;
  const value = {
    id: spiffeIdOf(config.tls.trustDomain, name),
    name,
    endpoint: formatHostPort(config.listen.quic),
    cidrs: config.local.cidrs.map(String),
  };
  return { key: `${config.membership.etcd.prefix}${name}`, value: JSON.stringify(value) };
}

/** The host name a key under `prefix` names, or null when the key is not directly under it. */
export function nameOfKey(prefix: string, key: string): string | null {
  if (!key.startsWith(prefix)) return null;
  const name = key.slice(prefix.length);
  return name.includes('/') ? null : name;
}

/** The peer an entry describes, or why it is not one. */
export function decodeEntry(prefix: string, trustDomain: string, entry: EtcdEntry): { peer: PeerConfig } | { problem: string } {
  const name = nameOfKey(prefix, entry.key);
  if (name === null) return { problem: `key ${entry.key} is not <prefix><host name>` };
  try {
    hostName(name);
  } catch (err) {
    return { problem: `key ${entry.key}: the host name ${JSON.stringify(name)} ${(err as Error).message}` };
  }
  if (Buffer.byteLength(entry.value) > MAX_VALUE_BYTES) return { problem: `the value is over ${MAX_VALUE_BYTES} bytes` };
  let value: unknown;
  try {
    value = JSON.parse(entry.value);
  } catch {
    return { problem: 'the value is not JSON' };
  }
  try {
    checkPeerObject(value, 'value', ['id']);
  } catch (err) {
    return { problem: (err as Error).message };
  }
  const v = value as { id?: unknown; name: string; endpoint: string; cidrs: string[] };
  if (v.cidrs.length > MAX_ENTRY_CIDRS) return { problem: `value.cidrs holds ${v.cidrs.length} CIDRs; an entry may claim at most ${MAX_ENTRY_CIDRS}` };
  if (v.name !== name) return { problem: `value.name "${v.name}" is not the key's host name "${name}"` };
  const id = spiffeIdOf(trustDomain, name);
  if (v.id !== id) return { problem: `value.id ${JSON.stringify(v.id)} is not ${id}, the identity of the key's host name` };
  return { peer: { name, endpoint: parseHostPort(v.endpoint), cidrs: v.cidrs.map((c) => Cidr.parse(c)) } };
}
