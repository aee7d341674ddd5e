// The one way into @peculiar/x509: loads the Reflect polyfill it needs, binds it to
// Node's WebCrypto, and holds the ECDSA P-256 key helpers. Used by init-ca.ts,
// sign-leaf.ts, issue-host.ts and identity/peer-identity.ts.

import 'reflect-metadata'; // @peculiar/x509 (tsyringe) needs the Reflect metadata API
import { createPrivateKey, randomBytes, webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';
import { ErrorCodes, QmeshError } from '../errors.js';

x509.cryptoProvider.set(webcrypto as unknown as Crypto);

export { x509 };

/** Every qmesh key is ECDSA on P-256: what BoringSSL and every TLS stack handle fastest. */
export const P256_KEY = { name: 'ECDSA', namedCurve: 'P-256' } as const;
export const P256_SIGNING = { name: 'ECDSA', hash: 'SHA-256' } as const;

/** Start leaves and the CA this long before "now" so peers with slow clocks accept them. */
export const CLOCK_SKEW_MS = 60_000;

export function generateP256KeyPair(): Promise<CryptoKeyPair> {
  return webcrypto.subtle.generateKey(P256_KEY, true, ['sign', 'verify']) as Promise<CryptoKeyPair>;
}

export async function privateKeyToPem(key: CryptoKey): Promise<string> {
  const pkcs8 = await webcrypto.subtle.exportKey('pkcs8', key as webcrypto.CryptoKey);
  return x509.PemConverter.encode(pkcs8, 'PRIVATE KEY');
}

/** Imports a PEM private key (PKCS#8 or SEC1) for signing; `what` names it in errors. */
export async function importP256SigningKey(pem: string, what: string): Promise<CryptoKey> {
  let keyObject;
  try {
    keyObject = createPrivateKey(pem);
  } catch (err) {
    throw new QmeshError(ErrorCodes.PKI, `${what} is not a readable PEM private key: replace it or run \`qmesh pki init --force\``, { cause: err });
  }
  const curve = keyObject.asymmetricKeyDetails?.namedCurve;
  if (keyObject.asymmetricKeyType !== 'ec' || curve !== 'prime256v1') {
    throw new QmeshError(ErrorCodes.PKI, `${what} is a ${keyObject.asymmetricKeyType ?? 'unknown'} ${curve ?? ''} key; qmesh signs only with ECDSA P-256 keys made by \`qmesh pki init\``);
  }
  const der = keyObject.export({ type: 'pkcs8', format: 'der' });
  return (await webcrypto.subtle.importKey('pkcs8', der, P256_KEY, false, ['sign'])) as CryptoKey;
}

/**
 * 16 random bytes, first byte 0x01..0x7f: a positive INTEGER that DER encodes in
 * exactly 16 bytes (no sign padding, no stripped zero), with 126 random bits.
 */
export function randomSerialHex(): string {
  const bytes = randomBytes(16);
  bytes[0] = ((bytes[0] ?? 0) & 0x7f) | 0x01;
  return bytes.toString('hex');
}

/** PEM text with exactly one trailing newline, as openssl writes it. */
export const endWithNewline = (pem: string): string => pem.replace(/\s*$/, '\n');
