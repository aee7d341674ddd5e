// Signs one leaf certificate with a CA given as PEM text, for a fresh P-256 key.
// issue-host.ts calls it with qmesh's host profile; tests call it directly to
// forge the bad certificates that identity/peer-identity.ts must refuse.

import { createPrivateKey, X509Certificate as NodeX509Certificate } from 'node:crypto';
import { ErrorCodes, QmeshError } from '../errors.js';
import { endWithNewline, generateP256KeyPair, importP256SigningKey, P256_SIGNING, privateKeyToPem, randomSerialHex, x509 } from './x509.js';

export const EKU_SERVER_AUTH = x509.ExtendedKeyUsage.serverAuth;
export const EKU_CLIENT_AUTH = x509.ExtendedKeyUsage.clientAuth;

export interface SignLeafOptions {
  caCertPem: string;
  caKeyPem: string;
  /** Subject CN. */
  name: string;
  uris: string[];
  dnsNames: string[];
  /** BasicConstraints CA flag (critical). Default false. */
  isCa?: boolean;
  /** KeyUsage bit flags (x509.KeyUsageFlags, critical); null omits the extension. Default digitalSignature. */
  keyUsages?: number | null;
  /** EKU OIDs; null omits the extension. Default serverAuth + clientAuth. */
  extKeyUsages?: string[] | null;
  notBefore: Date;
  notAfter: Date;
}

export interface SignedLeaf {
  certPem: string;
  keyPem: string;
  serialHex: string;
}

/** Parses the CA certificate PEM, with an error that says which file to fix. */
export function parseCaCert(caCertPem: string): x509.X509Certificate {
  try {
    new NodeX509Certificate(caCertPem); // node's parser is the stricter one
    return new x509.X509Certificate(caCertPem);
  } catch (err) {
    throw new QmeshError(ErrorCodes.PKI, `CA certificate is not a readable PEM certificate: ${(err as Error).message}; restore ca.crt or run \`qmesh pki init --force\``, { cause: err });
  }
}

export async function signLeaf(opts: SignLeafOptions): Promise<SignedLeaf> {
  const caCert = parseCaCert(opts.caCertPem);
  const caKey = await importP256SigningKey(opts.caKeyPem, 'ca.key');
  if (!new NodeX509Certificate(opts.caCertPem).checkPrivateKey(createPrivateKey(opts.caKeyPem))) {
    throw new QmeshError(ErrorCodes.PKI, 'the CA key (ca.key) does not belong to the CA certificate (ca.crt): restore the matching pair or run `qmesh pki init --force` and reissue every host');
  }
  const keys = await generateP256KeyPair();
  const caSki = caCert.getExtension(x509.SubjectKeyIdentifierExtension);
  const aki = caSki
    ? new x509.AuthorityKeyIdentifierExtension(caSki.keyId)
    : await x509.AuthorityKeyIdentifierExtension.create(caCert.publicKey);

  const extensions: x509.Extension[] = [
    new x509.BasicConstraintsExtension(opts.isCa ?? false, undefined, true),
    await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    aki,
  ];
  const keyUsages = opts.keyUsages === undefined ? x509.KeyUsageFlags.digitalSignature : opts.keyUsages;
  if (keyUsages !== null) extensions.push(new x509.KeyUsagesExtension(keyUsages, true));
  const ekus = opts.extKeyUsages === undefined ? [EKU_SERVER_AUTH, EKU_CLIENT_AUTH] : opts.extKeyUsages;
  if (ekus !== null) extensions.push(new x509.ExtendedKeyUsageExtension(ekus, false));
  const sans = [
    ...opts.uris.map((value) => ({ type: 'url' as const, value })),
    ...opts.dnsNames.map((value) => ({ type: 'dns' as const, value })),
  ];
  if (sans.length > 0) extensions.push(new x509.SubjectAlternativeNameExtension(sans, false));

  const serialHex = randomSerialHex();
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serialHex,
    subject: [{ CN: [opts.name] }],
    issuer: caCert.subjectName,
    notBefore: opts.notBefore,
    notAfter: opts.notAfter,
    publicKey: keys.publicKey,
    signingKey: caKey,
    signingAlgorithm: P256_SIGNING,
    extensions,
  });
  return {
    certPem: endWithNewline(cert.toString('pem')),
    keyPem: endWithNewline(await privateKeyToPem(keys.privateKey)),
    serialHex,
  };
}
