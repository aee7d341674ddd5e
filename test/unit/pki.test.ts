// daemon/pki: the CA and host certificates are checked with node:crypto and, where
// installed, with openssl itself, never only with the library that wrote them.

import { describe, it, expect, beforeAll } from 'vitest';
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { chmodSync, copyFileSync, existsSync, mkdtempSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { initCa, issueHost, x509 } from '../../daemon/pki/index.js';
import { checkPeerCertificate } from '../../daemon/identity/peer-identity.js';
import { ErrorCodes, QmeshError } from '../../daemon/errors.js';
import { skipUnlessTool } from '../support/tools.js';

const TD = 'test.qmesh';
const NOW = new Date('2030-06-01T12:00:00Z');
const hasOpenssl = !skipUnlessTool('openssl', 'openssl');
const tmp = (): string => mkdtempSync(join(tmpdir(), 'qmesh-pki-'));
const mode = (path: string): number => statSync(path).mode & 0o777;
const read = (path: string): string => readFileSync(path, 'utf8');
const openssl = (...args: string[]): string => execFileSync('openssl', args, { encoding: 'utf8' });

async function expectPkiError(p: Promise<unknown>, message: RegExp): Promise<void> {
  const err: unknown = await p.then(() => undefined, (e: unknown) => e);
  expect(err).toBeInstanceOf(QmeshError);
  expect((err as QmeshError).code).toBe(ErrorCodes.PKI);
  expect((err as QmeshError).message).toMatch(message);
}

describe('initCa', () => {
  let dir: string;
  beforeAll(async () => {
    dir = join(tmp(), 'pki'); // does not exist yet
    await initCa({ dir, trustDomain: TD, now: NOW });
  });

  it('writes a self-signed P-256 CA with key 0600 in a 0700 directory', () => {
    expect(mode(dir)).toBe(0o700);
    expect(mode(join(dir, 'ca.key'))).toBe(0o600);
    const ca = new X509Certificate(read(join(dir, 'ca.crt')));
    const key = createPrivateKey(read(join(dir, 'ca.key')));
    expect(read(join(dir, 'ca.key'))).toMatch(/^-----BEGIN PRIVATE KEY-----\n/); // PKCS#8
    expect(key.asymmetricKeyDetails?.namedCurve).toBe('prime256v1');
    expect(ca.checkPrivateKey(key)).toBe(true);
    expect(ca.verify(ca.publicKey)).toBe(true);
    expect(ca.ca).toBe(true);
    expect(ca.subject).toBe(`CN=qmesh CA ${TD}`);
    expect(ca.subjectAltName).toBe(`URI:spiffe://${TD}`);
    expect(new Date(ca.validTo).getTime()).toBe(NOW.getTime() + 3650 * 86_400_000);
    expect(new Date(ca.validFrom).getTime()).toBe(NOW.getTime() - 60_000);
  });

  it('marks BasicConstraints and KeyUsage critical and carries an SKI', () => {
    const ca = new x509.X509Certificate(read(join(dir, 'ca.crt')));
    const bc = ca.getExtension(x509.BasicConstraintsExtension);
    const ku = ca.getExtension(x509.KeyUsagesExtension);
    expect(bc?.critical).toBe(true);
    expect(bc?.ca).toBe(true);
    expect(ku?.critical).toBe(true);
    expect(ku?.usages).toBe(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign);
    expect(ca.getExtension(x509.SubjectKeyIdentifierExtension)?.keyId).toMatch(/^[0-9a-f]{40}$/);
  });

  it('refuses to overwrite ca.key unless forced', async () => {
    const before = read(join(dir, 'ca.key'));
    await expectPkiError(initCa({ dir, trustDomain: TD }), /already exists.*--force/);
    expect(read(join(dir, 'ca.key'))).toBe(before);
    const d = tmp();
    await initCa({ dir: d, trustDomain: TD });
    const first = read(join(d, 'ca.key'));
    await initCa({ dir: d, trustDomain: TD, force: true });
    expect(read(join(d, 'ca.key'))).not.toBe(first);
    expect(new X509Certificate(read(join(d, 'ca.crt'))).checkPrivateKey(createPrivateKey(read(join(d, 'ca.key'))))).toBe(true);
  });

  it('rejects a trust domain that cannot appear in a SPIFFE ID', async () => {
    for (const trustDomain of ['', 'Upper.example', 'a/b', 'spiffe://x']) {
      await expectPkiError(initCa({ dir: tmp(), trustDomain }), /invalid trust domain/);
    }
  });
});

describe('issueHost', () => {
  let dir: string;
  let ca: X509Certificate;
  beforeAll(async () => {
    dir = tmp();
    await initCa({ dir, trustDomain: TD, now: NOW });
    await issueHost({ dir, name: 'web-1', now: NOW });
    ca = new X509Certificate(read(join(dir, 'ca.crt')));
  });

  it('writes a leaf that the CA signed and whose key matches, key 0600', async () => {
    const pem = read(join(dir, 'web-1.crt'));
    expect(pem.match(/-----BEGIN CERTIFICATE-----/g)).toHaveLength(1);
    expect(pem.endsWith('-----END CERTIFICATE-----\n')).toBe(true);
    const leaf = new X509Certificate(pem);
    expect(leaf.verify(ca.publicKey)).toBe(true);
    expect(leaf.checkIssued(ca)).toBe(true);
    expect(leaf.checkPrivateKey(createPrivateKey(read(join(dir, 'web-1.key'))))).toBe(true);
    expect(mode(join(dir, 'web-1.key'))).toBe(0o600);
    const other = tmp();
    await initCa({ dir: other, trustDomain: TD });
    expect(leaf.verify(new X509Certificate(read(join(other, 'ca.crt'))).publicKey)).toBe(false);
  });

  it('names exactly spiffe://<td>/host/<name> and DNS <name>', () => {
    const leaf = new X509Certificate(read(join(dir, 'web-1.crt')));
    expect(leaf.subject).toBe('CN=web-1');
    expect(leaf.subjectAltName).toBe(`URI:spiffe://${TD}/host/web-1, DNS:web-1`);
    expect(leaf.ca).toBe(false);
    expect(leaf.keyUsage.sort()).toEqual(['1.3.6.1.5.5.7.3.1', '1.3.6.1.5.5.7.3.2']);
    expect(checkPeerCertificate(leaf.raw, { trustDomain: TD, expectedName: 'web-1', now: NOW })).toEqual({
      ok: true, name: 'web-1', uri: `spiffe://${TD}/host/web-1`, notBefore: new Date(leaf.validFrom), notAfter: new Date(leaf.validTo),
    });
  });

  it('sets critical constraints, SKI, AKI = CA SKI, a 16-byte positive serial and a skewed start', () => {
    const leaf = new x509.X509Certificate(read(join(dir, 'web-1.crt')));
    const caSki = new x509.X509Certificate(read(join(dir, 'ca.crt'))).getExtension(x509.SubjectKeyIdentifierExtension)?.keyId;
    expect(leaf.getExtension(x509.BasicConstraintsExtension)).toMatchObject({ ca: false, critical: true });
    expect(leaf.getExtension(x509.KeyUsagesExtension)).toMatchObject({ usages: x509.KeyUsageFlags.digitalSignature, critical: true });
    expect(leaf.getExtension(x509.SubjectKeyIdentifierExtension)?.keyId).toMatch(/^[0-9a-f]{40}$/);
    expect(leaf.getExtension(x509.AuthorityKeyIdentifierExtension)?.keyId).toBe(caSki);
    expect(leaf.serialNumber).toMatch(/^[0-7][0-9a-f]{31}$/);
    expect(leaf.serialNumber).not.toMatch(/^00/);
    expect(leaf.notBefore.getTime()).toBe(NOW.getTime() - 60_000);
    expect(leaf.notAfter.getTime()).toBe(NOW.getTime() + 24 * 3_600_000);
  });

  it.skipIf(!hasOpenssl)('openssl shows the EKUs and constraints and verifies both TLS purposes', async () => {
    const d = tmp();
    await initCa({ dir: d, trustDomain: TD });
    await issueHost({ dir: d, name: 'fn-2' });
    const text = openssl('x509', '-in', join(d, 'fn-2.crt'), '-text', '-noout');
    expect(text).toMatch(/X509v3 Extended Key Usage: *\n\s*TLS Web Server Authentication, TLS Web Client Authentication/);
    expect(text).toMatch(/X509v3 Basic Constraints: critical\n\s*CA:FALSE/);
    expect(text).toMatch(/X509v3 Key Usage: critical\n\s*Digital Signature\n/);
    expect(text).toMatch(/URI:spiffe:\/\/test\.qmesh\/host\/fn-2, DNS:fn-2/);
    expect(text).toMatch(/ASN1 OID: prime256v1/);
    for (const purpose of ['sslclient', 'sslserver']) {
      const out = openssl('verify', '-x509_strict', '-purpose', purpose, '-CAfile', join(d, 'ca.crt'), join(d, 'fn-2.crt'));
      expect(out.trim()).toBe(`${join(d, 'fn-2.crt')}: OK`);
    }
  });

  it('never lets a leaf outlive its CA and refuses an expired CA', async () => {
    const d = tmp();
    const caResult = await initCa({ dir: d, trustDomain: TD, lifetimeDays: 1, now: NOW });
    const leaf = await issueHost({ dir: d, name: 'a', lifetimeMs: 48 * 3_600_000, now: NOW });
    expect(leaf.notAfter.getTime()).toBe(caResult.notAfter.getTime());
    await expectPkiError(issueHost({ dir: d, name: 'b', now: new Date(NOW.getTime() + 2 * 86_400_000) }), /expired.*pki init --force/);
  });

  it('rewrites a host key 0600 even when the old file was readable by all', async () => {
    const d = tmp();
    await initCa({ dir: d, trustDomain: TD });
    await issueHost({ dir: d, name: 'db' });
    const oldKey = read(join(d, 'db.key'));
    chmodSync(join(d, 'db.key'), 0o644);
    await issueHost({ dir: d, name: 'db' });
    expect(mode(join(d, 'db.key'))).toBe(0o600);
    expect(read(join(d, 'db.key'))).not.toBe(oldKey);
    expect(readdirSync(d).filter((f) => f.includes('.tmp-'))).toEqual([]);
  });

  it('rejects names that are not one lowercase DNS label, and the reserved name ca', async () => {
    const cases: [string, RegExp][] = [
      ['', /1 to 63/], ['x'.repeat(64), /1 to 63/], ['Web', /uppercase.*"web"/], ['-a', /dash/], ['a-', /dash/],
      ['a.b', /one DNS label/], ['a_b', /lowercase letters/], ['ca', /overwrite the CA/],
    ];
    for (const [name, why] of cases) {
      await expectPkiError(issueHost({ dir, name }), why);
      if (name !== '' && name !== 'ca') expect(existsSync(join(dir, `${name}.crt`))).toBe(false);
    }
    expect(new X509Certificate(read(join(dir, 'ca.crt'))).ca).toBe(true);
  });

  it('says which command to run when the CA is missing or does not match its key', async () => {
    const d = tmp();
    await expectPkiError(issueHost({ dir: d, name: 'web' }), /ca\.key not found in .*qmesh pki init --dir .* --trust-domain/);
    await initCa({ dir: d, trustDomain: TD });
    const other = tmp();
    await initCa({ dir: other, trustDomain: TD });
    copyFileSync(join(other, 'ca.key'), join(d, 'ca.key'));
    await expectPkiError(issueHost({ dir: d, name: 'web' }), /does not belong to the CA certificate/);
    expect(existsSync(join(d, 'web.crt'))).toBe(false);
  });
});
