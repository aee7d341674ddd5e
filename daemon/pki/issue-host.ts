// Issues a host's certificate from the CA in DIR: DIR/<name>.crt (the leaf alone)
// and DIR/<name>.key, identity spiffe://<td>/host/<name>. `qmesh pki issue` calls
// it; the daemon loads the pair for its QUIC endpoint (tunnel/).

import { join } from 'node:path';
import { ErrorCodes, QmeshError } from '../errors.js';
import { isHostName, isTrustDomain, spiffeId } from '../identity/peer-identity.js';
import { CA_CERT_FILE, CERT_MODE, KEY_MODE, readCaFiles, writeFileAtomic } from './pki-files.js';
import { parseCaCert, signLeaf } from './sign-leaf.js';
import { CLOCK_SKEW_MS, x509 } from './x509.js';

/** Short-lived by default: a day, renewed by the rollout, so revocation is rarely needed. */
export const DEFAULT_HOST_LIFETIME_MS = 24 * 3_600_000;

export interface IssueHostOptions {
  dir: string;
  name: string;
  lifetimeMs?: number;
  /** Defaults to now minus one minute of clock skew. */
  notBefore?: Date;
  now?: Date;
}

export interface IssueHostResult {
  certPath: string;
  keyPath: string;
  spiffeId: string;
  serialHex: string;
  notBefore: Date;
  notAfter: Date;
}

/** DIR/ca.crt and DIR/ca.key belong to the CA, so no host may be called this. */
const RESERVED_NAME = 'ca';

/** Why `name` is not a host name, or null when it is one. */
export function hostNameProblem(name: string): string | null {
  if (name === RESERVED_NAME) return "'ca' would overwrite the CA's own ca.crt and ca.key; pick another name";
  if (isHostName(name)) return null;
  if (name.length === 0 || name.length > 63) return `it has ${name.length} characters, not 1 to 63`;
  if (/[A-Z]/.test(name)) return `it has uppercase letters; use ${JSON.stringify(name.toLowerCase())}`;
  if (name.startsWith('-') || name.endsWith('-')) return 'it starts or ends with a dash';
  return "it may hold only lowercase letters a-z, digits and '-' (one DNS label, no dots)";
}

/** Reads the trust domain from the CA's URI SAN spiffe://<td> (written by initCa). */
export function caTrustDomain(ca: x509.X509Certificate, caPath: string): string {
  const uris = ca
    .getExtensions(x509.SubjectAlternativeNameExtension)
    .flatMap((san) => san.names.items.filter((n) => n.type === 'url').map((n) => n.value));
  const td = uris.map((u) => /^spiffe:\/\/([^/?#]+)\/?$/.exec(u)?.[1]).find((m) => m !== undefined && isTrustDomain(m));
  if (td === undefined) {
    throw new QmeshError(ErrorCodes.PKI, `${caPath} has no URI SAN spiffe://<trust-domain>, so it was not made by \`qmesh pki init\`: create a qmesh CA with it`);
  }
  return td;
}

export async function issueHost(opts: IssueHostOptions): Promise<IssueHostResult> {
  const { dir, name, lifetimeMs = DEFAULT_HOST_LIFETIME_MS } = opts;
  const problem = hostNameProblem(name);
  if (problem !== null) {
    throw new QmeshError(ErrorCodes.PKI, `invalid host name ${JSON.stringify(name)}: ${problem}`);
  }
  if (!Number.isFinite(lifetimeMs) || lifetimeMs <= 0) {
    throw new QmeshError(ErrorCodes.PKI, `invalid certificate lifetime ${lifetimeMs} ms: give a positive duration`);
  }
  const { caCertPem, caKeyPem } = readCaFiles(dir);
  const ca = parseCaCert(caCertPem);
  const trustDomain = caTrustDomain(ca, join(dir, CA_CERT_FILE));

  const now = opts.now ?? new Date();
  if (now.getTime() >= ca.notAfter.getTime()) {
    throw new QmeshError(ErrorCodes.PKI, `the CA in ${dir} expired at ${ca.notAfter.toISOString()}: create a new one with \`qmesh pki init --force\` and reissue every host`);
  }
  const notBefore = opts.notBefore ?? new Date(now.getTime() - CLOCK_SKEW_MS);
  // A leaf never outlives its CA: peers would refuse it past the CA's end anyway.
  const notAfter = new Date(Math.min(now.getTime() + lifetimeMs, ca.notAfter.getTime()));
  const id = spiffeId(trustDomain, name);
  const leaf = await signLeaf({ caCertPem, caKeyPem, name, uris: [id], dnsNames: [name], notBefore, notAfter });

  const certPath = join(dir, `${name}.crt`);
  const keyPath = join(dir, `${name}.key`);
  writeFileAtomic(keyPath, leaf.keyPem, KEY_MODE);
  writeFileAtomic(certPath, leaf.certPem, CERT_MODE);
  const issued = new x509.X509Certificate(leaf.certPem); // report the dates as encoded (whole seconds)
  return { certPath, keyPath, spiffeId: id, serialHex: leaf.serialHex, notBefore: issued.notBefore, notAfter: issued.notAfter };
}
