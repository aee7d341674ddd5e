// Creates a qmesh trust domain's CA: a self-signed ECDSA P-256 certificate and key
// in DIR/ca.crt and DIR/ca.key. `qmesh pki init` calls it; issue-host.ts then
// signs host certificates with the pair.

import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { ErrorCodes, QmeshError } from '../errors.js';
import { isTrustDomain } from '../identity/peer-identity.js';
import { CA_CERT_FILE, CA_KEY_FILE, CERT_MODE, ensurePkiDir, KEY_MODE, writeFileAtomic } from './pki-files.js';
import { CLOCK_SKEW_MS, endWithNewline, generateP256KeyPair, P256_SIGNING, privateKeyToPem, randomSerialHex, x509 } from './x509.js';

const DAY_MS = 86_400_000;

export interface InitCaOptions {
  dir: string;
  trustDomain: string;
  lifetimeDays?: number;
  /** Overwrite an existing ca.key (every host certificate must then be reissued). */
  force?: boolean;
  now?: Date;
}

export interface InitCaResult {
  certPath: string;
  keyPath: string;
  trustDomain: string;
  notBefore: Date;
  notAfter: Date;
}

/** The CA carries its trust domain as URI SAN spiffe://<td>, as SPIFFE bundles do. */
export const trustDomainUri = (trustDomain: string): string => `spiffe://${trustDomain}`;

export async function initCa(opts: InitCaOptions): Promise<InitCaResult> {
  const { dir, trustDomain, lifetimeDays = 3650, force = false } = opts;
  if (!isTrustDomain(trustDomain)) {
    throw new QmeshError(ErrorCodes.PKI, `invalid trust domain ${JSON.stringify(trustDomain)}: use lowercase letters, digits, '.', '-' and '_' (e.g. prod.example.org)`);
  }
  if (!Number.isFinite(lifetimeDays) || lifetimeDays <= 0) {
    throw new QmeshError(ErrorCodes.PKI, `invalid CA lifetime ${lifetimeDays} days: give a positive number of days`);
  }
  const certPath = join(dir, CA_CERT_FILE);
  const keyPath = join(dir, CA_KEY_FILE);
  if (existsSync(keyPath) && !force) {
    throw new QmeshError(ErrorCodes.PKI, `${keyPath} already exists: keep it, or pass --force to replace the CA (every host certificate must then be reissued)`);
  }
  ensurePkiDir(dir);

  const now = (opts.now ?? new Date()).getTime();
  const notBefore = new Date(now - CLOCK_SKEW_MS);
  const notAfter = new Date(now + lifetimeDays * DAY_MS);
  const keys = await generateP256KeyPair();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: randomSerialHex(),
    name: [{ CN: [`qmesh CA ${trustDomain}`] }],
    notBefore,
    notAfter,
    keys,
    signingAlgorithm: P256_SIGNING,
    extensions: [
      new x509.BasicConstraintsExtension(true, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      new x509.SubjectAlternativeNameExtension([{ type: 'url', value: trustDomainUri(trustDomain) }], false),
    ],
  });

  // Key first: a crash between the two writes leaves a key without a certificate,
  // which a rerun with --force repairs, never a certificate whose key is lost.
  writeFileAtomic(keyPath, endWithNewline(await privateKeyToPem(keys.privateKey)), KEY_MODE);
  writeFileAtomic(certPath, endWithNewline(cert.toString('pem')), CERT_MODE);
  return { certPath, keyPath, trustDomain, notBefore: cert.notBefore, notAfter: cert.notAfter };
}
