// identity/peer-identity: every refusal is driven by a real certificate forged with
// signLeaf under a real CA, and asserted by its stable code.

import { describe, it, expect, beforeAll } from 'vitest';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { initCa, signLeaf, x509, EKU_CLIENT_AUTH, EKU_SERVER_AUTH, type SignLeafOptions } from '../../daemon/pki/index.js';
import { checkPeerCertificate, PeerRefusal, spiffeId, parseHostSpiffeId } from '../../daemon/identity/peer-identity.js';

const TD = 'test.qmesh';
const NOW = new Date('2030-06-01T12:00:00Z');
const HOUR = 3_600_000;
const ID = `spiffe://${TD}/host/web-1`;

let ca: { caCertPem: string; caKeyPem: string };

beforeAll(async () => {
  const dir = mkdtempSync(join(tmpdir(), 'qmesh-peer-'));
  await initCa({ dir, trustDomain: TD, now: new Date(NOW.getTime() - 400 * 86_400_000) });
  ca = { caCertPem: readFileSync(join(dir, 'ca.crt'), 'utf8'), caKeyPem: readFileSync(join(dir, 'ca.key'), 'utf8') };
});

/** DER of a leaf with the good host profile, changed by `over`. */
async function forge(over: Partial<SignLeafOptions> = {}): Promise<Uint8Array> {
  const { certPem } = await signLeaf({
    ...ca, name: 'web-1', uris: [ID], dnsNames: ['web-1'],
    notBefore: new Date(NOW.getTime() - HOUR), notAfter: new Date(NOW.getTime() + HOUR), ...over,
  });
  const der = new X509Certificate(certPem).raw;
  // Every forged certificate is validly signed by our CA: only identity rules refuse it.
  expect(new X509Certificate(certPem).verify(new X509Certificate(ca.caCertPem).publicKey)).toBe(true);
  return der;
}

const check = (der: Uint8Array, expectedName?: string, now = NOW) =>
  checkPeerCertificate(der, { trustDomain: TD, now, ...(expectedName !== undefined ? { expectedName } : {}) });

describe('checkPeerCertificate', () => {
  it('accepts a host leaf and returns its name, SPIFFE ID and validity', async () => {
    const der = await forge();
    const validity = { notBefore: new Date('2030-06-01T11:00:00.000Z'), notAfter: new Date('2030-06-01T13:00:00.000Z') };
    expect(check(der)).toEqual({ ok: true, name: 'web-1', uri: ID, ...validity });
    expect(check(der, 'web-1')).toEqual({ ok: true, name: 'web-1', uri: ID, ...validity });
  });

  it('accepts a leaf without EKU (any purpose), as the SPIFFE profile allows', async () => {
    expect(check(await forge({ extKeyUsages: null })).ok).toBe(true);
  });

  it('refuses bytes that are not a certificate', async () => {
    const good = await forge();
    for (const der of [new Uint8Array(0), new Uint8Array([0x30, 0x03, 1, 2, 3]), good.subarray(0, good.length - 10)]) {
      expect(check(der)).toMatchObject({ ok: false, code: PeerRefusal.UNPARSEABLE });
    }
  });

  it('refuses a CA certificate, and a leaf that may sign certificates', async () => {
    expect(check(await forge({ isCa: true }))).toMatchObject({ ok: false, code: PeerRefusal.IS_CA, reason: expect.stringMatching(/CA:true/) });
    const signer = await forge({ keyUsages: x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyCertSign });
    expect(check(signer)).toMatchObject({ ok: false, code: PeerRefusal.IS_CA, reason: expect.stringMatching(/keyCertSign/) });
  });

  it('refuses a leaf without digitalSignature key usage, or with no key usage at all', async () => {
    for (const keyUsages of [x509.KeyUsageFlags.keyEncipherment, null]) {
      expect(check(await forge({ keyUsages }))).toMatchObject({ ok: false, code: PeerRefusal.NO_DIGITAL_SIGNATURE });
    }
  });

  it('refuses an EKU that lacks clientAuth or serverAuth', async () => {
    for (const ekus of [[EKU_SERVER_AUTH], [EKU_CLIENT_AUTH], [x509.ExtendedKeyUsage.codeSigning], []]) {
      expect(check(await forge({ extKeyUsages: ekus }))).toMatchObject({ ok: false, code: PeerRefusal.EKU_LACKS_TLS_AUTH });
    }
  });

  it('refuses zero or several URI SANs', async () => {
    expect(check(await forge({ uris: [] }))).toMatchObject({ ok: false, code: PeerRefusal.URI_SAN_COUNT, reason: expect.stringMatching(/0 URI SANs/) });
    const two = await forge({ uris: [ID, `spiffe://${TD}/host/web-2`] });
    expect(check(two)).toMatchObject({ ok: false, code: PeerRefusal.URI_SAN_COUNT, reason: expect.stringMatching(/2 URI SANs/) });
    expect(check(await forge({ uris: [], dnsNames: [] }))).toMatchObject({ ok: false, code: PeerRefusal.URI_SAN_COUNT });
  });

  it('refuses a URI that is not spiffe://<td>/host/<name>', async () => {
    const uris = [
      `spiffe://${TD}/workload/web-1`, `https://${TD}/host/web-1`, `spiffe://${TD}/host/web-1/x`, `spiffe://${TD}/host/Web-1`,
      `spiffe://${TD}/host/`, `spiffe://${TD}/host/web-1?x=1`, `spiffe://TEST.qmesh/host/web-1`, `spiffe://${TD}/host/a.b`,
    ];
    for (const uri of uris) {
      expect(check(await forge({ uris: [uri] })), uri).toMatchObject({ ok: false, code: PeerRefusal.NOT_HOST_ID });
    }
  });

  it('refuses a host of another trust domain, even one our CA signed', async () => {
    const der = await forge({ uris: ['spiffe://other.qmesh/host/web-1'] });
    expect(check(der)).toMatchObject({ ok: false, code: PeerRefusal.FOREIGN_TRUST_DOMAIN });
    expect(checkPeerCertificate(der, { trustDomain: 'other.qmesh', now: NOW }).ok).toBe(true);
  });

  it('refuses a name other than the expected one: exact match only', async () => {
    const der = await forge();
    for (const expected of ['web-2', 'web', 'web-10', 'WEB-1', '*', '']) {
      expect(check(der, expected), expected).toMatchObject({ ok: false, code: PeerRefusal.NAME_MISMATCH });
    }
  });

  it('refuses an expired leaf, valid through its last second', async () => {
    const notAfter = new Date(NOW.getTime() - HOUR);
    const der = await forge({ notBefore: new Date(NOW.getTime() - 2 * HOUR), notAfter });
    expect(check(der)).toMatchObject({ ok: false, code: PeerRefusal.EXPIRED });
    expect(check(der, undefined, notAfter).ok).toBe(true);
    expect(check(der, undefined, new Date(notAfter.getTime() + 1000))).toMatchObject({ code: PeerRefusal.EXPIRED });
    expect(checkPeerCertificate(await forge({ notBefore: new Date('2020-01-01Z'), notAfter: new Date('2020-01-02Z') }), { trustDomain: TD }))
      .toMatchObject({ ok: false, code: PeerRefusal.EXPIRED });
  });

  it('re-judges parsed (cached) certificates on every call: name, trust domain, time; callers cannot alter them', async () => {
    const der = await forge();
    const first = check(der, 'web-1');
    expect(first.ok).toBe(true);
    if (first.ok) first.notAfter.setTime(0); // a careless caller must not change the next answer
    expect(check(der, 'web-1')).toMatchObject({ ok: true, notAfter: new Date(NOW.getTime() + HOUR) });
    expect(check(der, 'web-2')).toMatchObject({ ok: false, code: PeerRefusal.NAME_MISMATCH });
    expect(checkPeerCertificate(der, { trustDomain: 'other.qmesh', now: NOW })).toMatchObject({ ok: false, code: PeerRefusal.FOREIGN_TRUST_DOMAIN });
    expect(check(der, 'web-1', new Date(NOW.getTime() + 2 * HOUR))).toMatchObject({ ok: false, code: PeerRefusal.EXPIRED });
    expect(check(der.subarray(0, der.length - 8), 'web-1')).toMatchObject({ ok: false, code: PeerRefusal.UNPARSEABLE });
  });

  it('refuses a leaf that is not valid yet', async () => {
    const notBefore = new Date(NOW.getTime() + HOUR);
    const der = await forge({ notBefore, notAfter: new Date(NOW.getTime() + 2 * HOUR) });
    expect(check(der)).toMatchObject({ ok: false, code: PeerRefusal.NOT_YET_VALID, reason: expect.stringMatching(/clocks/) });
    expect(check(der, undefined, notBefore).ok).toBe(true);
  });

  it('gives each refusal its own code', () => {
    const codes = Object.values(PeerRefusal);
    expect(new Set(codes).size).toBe(codes.length);
    expect(codes).toHaveLength(10);
  });
});

describe('spiffeId', () => {
  it('builds and parses host IDs and refuses invalid parts', () => {
    expect(spiffeId(TD, 'web-1')).toBe(ID);
    expect(parseHostSpiffeId(ID)).toEqual({ trustDomain: TD, name: 'web-1' });
    expect(() => spiffeId('Bad TD', 'web-1')).toThrow(RangeError);
    expect(() => spiffeId(TD, 'web.1')).toThrow(RangeError);
    expect(() => spiffeId(TD, '')).toThrow(RangeError);
  });
});
