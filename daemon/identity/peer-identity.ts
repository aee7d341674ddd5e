// Identity layer for a peer's TLS leaf certificate. BoringSSL has already verified
// the chain to our CA; this decides whether the leaf names one qmesh host of our
// trust domain (spiffe://<td>/host/<name>) and which. Callers: tunnel/ and inbound/.

import { X509Certificate } from 'node:crypto';
import { x509 } from '../pki/x509.js';

/** A host name is one lowercase DNS label (RFC 1123), so it is also a valid DNS SAN. */
export const HOST_NAME_PATTERN = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;
/** SPIFFE trust domain characters (lowercase letters, digits, '.', '-', '_'), at most 255. */
export const TRUST_DOMAIN_PATTERN = /^[a-z0-9._-]{1,255}$/;

export const isHostName = (name: string): boolean => HOST_NAME_PATTERN.test(name);
export const isTrustDomain = (td: string): boolean => TRUST_DOMAIN_PATTERN.test(td);

/** `spiffe://<trustDomain>/host/<name>`; throws RangeError on an invalid part (a caller bug). */
export function spiffeId(trustDomain: string, name: string): string {
  if (!isTrustDomain(trustDomain)) throw new RangeError(`invalid trust domain ${JSON.stringify(trustDomain)}`);
  if (!isHostName(name)) throw new RangeError(`invalid host name ${JSON.stringify(name)}`);
  return `spiffe://${trustDomain}/host/${name}`;
}

/** Parses a host SPIFFE ID; null when the URI is not exactly of that form. */
export function parseHostSpiffeId(uri: string): { trustDomain: string; name: string } | null {
  const m = /^spiffe:\/\/([^/?#]+)\/host\/([^/?#]+)$/.exec(uri);
  if (!m || !isTrustDomain(m[1]!) || !isHostName(m[2]!)) return null;
  return { trustDomain: m[1]!, name: m[2]! };
}

/** Stable reason codes: log and count these, and match on them in tests. */
export const PeerRefusal = {
  UNPARSEABLE: 'unparseable',
  IS_CA: 'is_ca',
  NO_DIGITAL_SIGNATURE: 'no_digital_signature',
  EKU_LACKS_TLS_AUTH: 'eku_lacks_tls_auth',
  URI_SAN_COUNT: 'uri_san_count',
  NOT_HOST_ID: 'not_host_spiffe_id',
  FOREIGN_TRUST_DOMAIN: 'foreign_trust_domain',
  NAME_MISMATCH: 'name_mismatch',
  EXPIRED: 'expired',
  NOT_YET_VALID: 'not_yet_valid',
} as const;
export type PeerRefusalCode = (typeof PeerRefusal)[keyof typeof PeerRefusal];

export type PeerCheck =
  | { ok: true; name: string; uri: string; notBefore: Date; notAfter: Date }
  | { ok: false; reason: string; code: PeerRefusalCode };

export interface PeerCheckOptions {
  trustDomain: string;
  /** When set, the peer must be exactly this host (no wildcard, no prefix). */
  expectedName?: string;
  now?: Date;
}

const SERVER_AUTH = '1.3.6.1.5.5.7.3.1';
const CLIENT_AUTH = '1.3.6.1.5.5.7.3.2';

const refuse = (code: PeerRefusalCode, reason: string): PeerCheck => ({ ok: false, code, reason });

interface LeafFacts {
  isCa: boolean;
  keyUsage: number | null;
  extKeyUsage: string[] | null;
  uris: string[];
  notBefore: Date;
  notAfter: Date;
}

/**
 * Parsing costs 3-10 ms a certificate (most of it in @peculiar/x509's ASN.1 layer), paid on
 * both sides of every handshake. The facts are a pure function of the DER bytes, so a peer's
 * re-dials reuse them; time is still checked on every call. Bounded: certificates churn slowly.
 */
const LEAF_CACHE_MAX = 256;
const leafCache = new Map<string, Readonly<LeafFacts>>();

function leafFacts(der: Uint8Array): Readonly<LeafFacts> {
  const key = Buffer.from(der.buffer, der.byteOffset, der.byteLength).toString('base64');
  const hit = leafCache.get(key);
  if (hit) return hit;
  const facts = Object.freeze(readLeaf(der)); // an unparseable certificate throws and is not cached
  if (leafCache.size >= LEAF_CACHE_MAX) leafCache.delete(leafCache.keys().next().value!);
  leafCache.set(key, facts);
  return facts;
}

/** node:crypto decides parseability and CA:true; @peculiar/x509 reads what node does not expose. */
function readLeaf(der: Uint8Array): LeafFacts {
  const nodeCert = new X509Certificate(der);
  const cert = new x509.X509Certificate(new Uint8Array(der)); // a copy: plain ArrayBuffer, as the library wants
  const ku = cert.getExtension(x509.KeyUsagesExtension);
  const eku = cert.getExtension(x509.ExtendedKeyUsageExtension);
  const uris = cert
    .getExtensions(x509.SubjectAlternativeNameExtension)
    .flatMap((san) => san.names.items.filter((n) => n.type === 'url').map((n) => n.value));
  return {
    isCa: nodeCert.ca || cert.getExtension(x509.BasicConstraintsExtension)?.ca === true,
    keyUsage: ku ? ku.usages : null,
    extKeyUsage: eku ? eku.usages.map(String) : null,
    uris,
    notBefore: cert.notBefore,
    notAfter: cert.notAfter,
  };
}

/**
 * Decides whether a verified peer leaf (DER) is a qmesh host of `trustDomain`.
 * Rules follow the SPIFFE X509-SVID profile: not a CA, keyUsage present with
 * digitalSignature and without keyCertSign, exactly one URI SAN; an EKU, when
 * present, must allow both TLS client and server, since every host is both.
 */
export function checkPeerCertificate(der: Uint8Array, opts: PeerCheckOptions): PeerCheck {
  let leaf: Readonly<LeafFacts>;
  try {
    leaf = leafFacts(der);
  } catch (err) {
    return refuse(PeerRefusal.UNPARSEABLE, `peer certificate cannot be parsed: ${(err as Error).message}`);
  }
  if (leaf.isCa) return refuse(PeerRefusal.IS_CA, 'peer certificate is a CA (basicConstraints CA:true); hosts must present a leaf from `qmesh pki issue`');
  if (leaf.keyUsage !== null && (leaf.keyUsage & x509.KeyUsageFlags.keyCertSign) !== 0) {
    return refuse(PeerRefusal.IS_CA, 'peer certificate may sign certificates (keyUsage keyCertSign); hosts must present a leaf from `qmesh pki issue`');
  }
  if (leaf.keyUsage === null || (leaf.keyUsage & x509.KeyUsageFlags.digitalSignature) === 0) {
    return refuse(PeerRefusal.NO_DIGITAL_SIGNATURE, 'peer certificate lacks keyUsage digitalSignature, which TLS 1.3 needs');
  }
  if (leaf.extKeyUsage !== null && !(leaf.extKeyUsage.includes(SERVER_AUTH) && leaf.extKeyUsage.includes(CLIENT_AUTH))) {
    return refuse(PeerRefusal.EKU_LACKS_TLS_AUTH, `peer certificate's extendedKeyUsage [${leaf.extKeyUsage.join(', ')}] lacks serverAuth or clientAuth; every host needs both`);
  }
  if (leaf.uris.length !== 1) {
    return refuse(PeerRefusal.URI_SAN_COUNT, `peer certificate has ${leaf.uris.length} URI SANs; a host certificate has exactly one`);
  }
  const uri = leaf.uris[0]!;
  const id = parseHostSpiffeId(uri);
  if (!id) return refuse(PeerRefusal.NOT_HOST_ID, `peer URI SAN ${JSON.stringify(uri)} is not of the form spiffe://<trust-domain>/host/<name>`);
  if (id.trustDomain !== opts.trustDomain) {
    return refuse(PeerRefusal.FOREIGN_TRUST_DOMAIN, `peer ${uri} belongs to trust domain ${id.trustDomain}, not ${opts.trustDomain}`);
  }
  if (opts.expectedName !== undefined && id.name !== opts.expectedName) {
    return refuse(PeerRefusal.NAME_MISMATCH, `peer is host ${id.name}, expected ${opts.expectedName}`);
  }
  const now = opts.now ?? new Date();
  if (now.getTime() > leaf.notAfter.getTime()) {
    return refuse(PeerRefusal.EXPIRED, `peer certificate expired at ${leaf.notAfter.toISOString()}; reissue it with \`qmesh pki issue\``);
  }
  if (now.getTime() < leaf.notBefore.getTime()) {
    return refuse(PeerRefusal.NOT_YET_VALID, `peer certificate is not valid before ${leaf.notBefore.toISOString()}; check both hosts' clocks`);
  }
  // Copies: the cached facts are shared between calls.
  return { ok: true, name: id.name, uri, notBefore: new Date(leaf.notBefore), notAfter: new Date(leaf.notAfter) };
}
