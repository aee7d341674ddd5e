// Loads this host's TLS material (CA bundle, certificate, key) named in the
// config and checks it before any tunnel uses it: the files parse, the key
// belongs to the certificate, the certificate chains to the CA and carries
// exactly this node's SPIFFE id. Used by `run` and by `check-config`.
import crypto from 'node:crypto';
import fs from 'node:fs';
import type { Config } from '../config/load.js';
import { ErrorCodes, QmeshError } from '../errors.js';
import { checkPeerCertificate } from './peer-identity.js';

/** The PEM material the data plane's TLS uses. */
export interface TlsMaterial {
  readonly caPem: Uint8Array;
  readonly certPem: Uint8Array;
  readonly keyPem: Uint8Array;
}

export interface Credentials extends TlsMaterial {
  readonly notBefore: Date;
  readonly notAfter: Date;
  readonly identity: string;
  /** Secret for stateless-reset tokens: stable across restarts, never leaves the host. */
  readonly resetKey: Buffer;
}

const PEM_CERT = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

function read(path: string, what: string, key: string): Buffer {
  try {
    return fs.readFileSync(path);
  } catch (err) {
    throw new QmeshError(ErrorCodes.TLS_FILES, `${key}: cannot read ${what} ${path} (${(err as NodeJS.ErrnoException).code}); create it with \`qmesh pki\``, { cause: err });
  }
}

/** The certificates of a PEM CA bundle; throws on one that does not parse. */
export function parseCaBundle(caPem: Uint8Array): crypto.X509Certificate[] {
  return (Buffer.from(caPem).toString('utf8').match(PEM_CERT) ?? []).map((p) => new crypto.X509Certificate(p));
}

/** Whether a leaf (DER) was signed by one of `cas`: a peer still trusted after the bundle changed. */
export function issuedByAny(leafDer: Uint8Array, cas: readonly crypto.X509Certificate[]): boolean {
  try {
    const leaf = new crypto.X509Certificate(leafDer);
    return cas.some((ca) => leaf.checkIssued(ca) && leaf.verify(ca.publicKey));
  } catch {
    return false;
  }
}

export function loadCredentials(config: Config): Credentials {
  const fail = (msg: string): never => {
    throw new QmeshError(ErrorCodes.TLS_FILES, msg);
  };
  const caPem = read(config.tls.ca, 'CA bundle', 'tls.ca');
  const certPem = read(config.tls.cert, 'certificate', 'tls.cert');
  const keyPem = read(config.tls.key, 'private key', 'tls.key');
  const cas = (caPem.toString('utf8').match(PEM_CERT) ?? []).map((p) => {
    try {
      return new crypto.X509Certificate(p);
    } catch {
      return fail(`tls.ca: ${config.tls.ca} holds a certificate that does not parse`);
    }
  });
  if (cas.length === 0) fail(`tls.ca: ${config.tls.ca} holds no PEM certificate`);
  const leafPem = certPem.toString('utf8').match(PEM_CERT)?.[0];
  if (!leafPem) return fail(`tls.cert: ${config.tls.cert} holds no PEM certificate`);
  const leaf = new crypto.X509Certificate(leafPem);
  let key: crypto.KeyObject;
  try {
    key = crypto.createPrivateKey(keyPem);
  } catch {
    return fail(`tls.key: ${config.tls.key} is not a PEM private key`);
  }
  if (!leaf.checkPrivateKey(key)) fail(`tls.key: ${config.tls.key} does not belong to the certificate ${config.tls.cert}`);
  if (!cas.some((ca) => leaf.checkIssued(ca) && leaf.verify(ca.publicKey))) {
    fail(`tls.cert: ${config.tls.cert} is not signed by any CA in ${config.tls.ca}`);
  }
  const own = checkPeerCertificate(leaf.raw, { trustDomain: config.tls.trustDomain, expectedName: config.node.name });
  if (!own.ok) fail(`tls.cert: ${config.tls.cert} is not a valid certificate for node ${config.node.name}: ${own.reason}`);
  const der = key.export({ type: 'pkcs8', format: 'der' });
  const resetKey = crypto.createHmac('sha256', der).update('qmesh stateless reset v1').digest();
  return {
    caPem,
    certPem: Buffer.from(leafPem),
    keyPem: Buffer.from(key.export({ type: 'pkcs8', format: 'pem' }) as string),
    notBefore: new Date(leaf.validFrom),
    notAfter: new Date(leaf.validTo),
    identity: own.ok ? own.uri : '',
    resetKey,
  };
}
