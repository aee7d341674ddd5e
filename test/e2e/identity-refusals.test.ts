// Issue #4: a peer whose certificate is signed by the mesh CA, names host-2
// (CN and DNS SAN), but is wrong in one way gets no tunnel. host-2 is restarted
// with such a certificate, one case per test: (1) expired, (2) not yet valid,
// (3) CA-flagged, (4) two URI SANs, (5) another trust domain. For each, host-1
// logs the refusal with the reason of that specific check, no tunnel is up in
// either direction, and a connection from host-1's function to host-2's is
// reset (not left hanging). Restoring host-2's own credentials brings the
// tunnel back (the control).
//
// Where the refusal happens: inside the TLS handshake, in the data plane's rustls
// verifiers (native/src/identity/), on both roles. The chain to tls.ca is checked
// first (webpki), then the SPIFFE rules of daemon/identity/peer-identity.ts, with
// the same codes and sentences. So every case is refused before any tunnel exists,
// and the log names the exact check, expired and not-yet-valid included: host-1
// logs "peer handshake failed" (server role) with `code` and `reason`, and its dial
// fails with the same sentence as /status's lastError (client role).
//
// A daemon refuses to start with such a certificate of its own (credentials.ts
// runs the same check on it), so host-2 runs with test/support/own-cert-check-
// bypass.mjs, which disables only that start-up check and logs what it would
// have refused; everything host-2 does on the wire is the real daemon's.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PeerRefusal, type PeerRefusalCode } from '../../daemon/identity/peer-identity.js';
import { signLeaf, type SignLeafOptions } from '../../daemon/pki/sign-leaf.js';
import { daemonOf, destroyMesh, logOf, outboundState, startMesh, waitLog, type HostInfo, type Mesh } from '../support/e2e-mesh.js';
import { FnServer, fnClient, sleep, waitFor } from '../support/fn-net.js';

const TD = 'qmesh.test';
const ECHO_PORT = 7007;
/** How long no tunnel may be reported up after the refusal was seen. */
const OBSERVE_MS = 2_000;
const TEST_MS = 30_000;
const HOUR = 3_600_000;
const HOOKS_URL = new URL('../support/own-cert-check-bypass.mjs', import.meta.url).href;
/** `node --import` this to load the hooks (module.register, Node >= 20.6). */
const BYPASS_IMPORT = `data:text/javascript,import{register}from"node:module";register(${JSON.stringify(HOOKS_URL)})`;
/** The listener appends where the datagrams came from to its identity refusals. */
const FROM_H2 = " (datagrams came from host-2's endpoint)";

let mesh: Mesh;
let h1: HostInfo;
let h2: HostInfo;

beforeAll(async () => {
  mesh = await startMesh({ hosts: 2, functionsPerHost: 1, trustDomain: TD });
  [h1, h2] = mesh.hosts as [HostInfo, HostInfo];
  await FnServer.start(mesh, h2.functions[0]!.ns, 'echo', { ip: h2.functions[0]!.ip, port: ECHO_PORT });
}, 60_000);

afterAll(async () => {
  await destroyMesh(mesh);
}, 60_000);

/** Signs forged/<file>.crt|key with the mesh CA: host-2's profile, changed by `o`. */
async function forge(file: string, o: Partial<SignLeafOptions>): Promise<void> {
  const pki = path.join(mesh.dir, 'pki');
  const now = Date.now();
  const leaf = await signLeaf({
    caCertPem: fs.readFileSync(path.join(pki, 'ca.crt'), 'utf8'),
    caKeyPem: fs.readFileSync(path.join(pki, 'ca.key'), 'utf8'),
    name: 'host-2',
    uris: [`spiffe://${TD}/host/host-2`],
    dnsNames: ['host-2'],
    notBefore: new Date(now - HOUR),
    notAfter: new Date(now + HOUR),
    ...o,
  });
  const dir = path.join(mesh.dir, 'forged');
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, `${file}.crt`), leaf.certPem);
  fs.writeFileSync(path.join(dir, `${file}.key`), leaf.keyPem, { mode: 0o600 });
}

/**
 * Restarts host-2 with forged/<file> (and the start-up check bypassed), or with
 * its own credentials when file is null. Returns host-1's log position and the
 * time host-2's old daemon was gone: host-1's entries at or after both are about
 * the new host-2 (the log may arrive late, so the index alone is not enough).
 */
async function restartHost2(file: string | null): Promise<{ mark: number; since: number }> {
  await mesh.stopDaemon(h2, 'SIGTERM', 5_000);
  const since = Date.now();
  const mark = daemonOf(mesh, h1).log.length;
  mesh.writeConfig(h2, { configFor: () => (file ? { tls: { cert: `forged/${file}.crt`, key: `forged/${file}.key` } } : {}) });
  mesh.nodeArgs = file ? ['--import', BYPASS_IMPORT] : [];
  try {
    await mesh.startDaemon(h2);
  } finally {
    mesh.nodeArgs = [];
  }
  return { mark, since };
}

/** host-1's log entries about host-2 since the restart, from its server (listener) or client (tunnel) role. */
function h1Entries(at: { mark: number; since: number }, role: 'server' | 'client'): any[] {
  return logOf(daemonOf(mesh, h1))
    .slice(at.mark)
    .filter((e) => e.peer === 'host-2' && e.role === role && Date.parse(e.time) >= at.since);
}

/** Samples both directions for OBSERVE_MS: neither host may report its tunnel to the other up. */
async function expectNoTunnel(): Promise<void> {
  const samples: Array<[string, string]> = [];
  const deadline = Date.now() + OBSERVE_MS;
  while (Date.now() < deadline) {
    samples.push(await Promise.all([outboundState(mesh, h1, h2), outboundState(mesh, h2, h1)]));
    await sleep(200);
  }
  expect(samples.length).toBeGreaterThanOrEqual(5);
  expect(samples.filter(([a]) => a === 'up'), 'samples in which host-1 reports its tunnel to host-2 up').toEqual([]);
  expect(samples.filter(([, b]) => b === 'up'), 'samples in which host-2 reports its tunnel to host-1 up').toEqual([]);
  expect((await mesh.status(h1)).peers[0].inbound.state, 'host-2\'s tunnel into host-1').toBe('down');
}

/** A connection from host-1's function to host-2's is reset, promptly. */
async function expectConnectionReset(): Promise<void> {
  const r = await fnClient(mesh, h1.functions[0]!.ns, 'rpc', { ip: h2.functions[0]!.ip, port: ECHO_PORT, requestBytes: 512, timeoutMs: 10_000 });
  expect(r.error, JSON.stringify(r)).toBe('ECONNRESET');
  expect(r.replyBytes).toBe(0);
  expect(r.ms, 'time until the reset (tunnel.connectTimeoutMs is 2 s)').toBeLessThan(3_000);
}

interface RefusalCase {
  title: string;
  file: string;
  forge: () => Partial<SignLeafOptions>;
  /** What host-2's own start-up check says of the certificate (proves it is the forged one). */
  ownCheck: PeerRefusalCode;
  /** The refusal host-1 logs, as either role: its code (the same as ownCheck) and its sentence. */
  reason: RegExp;
}

const CASES: RefusalCase[] = [
  {
    title: 'an expired certificate',
    file: 'expired',
    forge: () => ({ notBefore: new Date(Date.now() - 2 * HOUR), notAfter: new Date(Date.now() - HOUR) }),
    ownCheck: PeerRefusal.EXPIRED,
    reason: /^peer certificate expired at \d{4}-\d\d-\d\dT[\d:.]+Z; reissue it with `qmesh pki issue`$/,
  },
  {
    title: 'a certificate not yet valid',
    file: 'not-yet-valid',
    forge: () => ({ notBefore: new Date(Date.now() + HOUR), notAfter: new Date(Date.now() + 2 * HOUR) }),
    ownCheck: PeerRefusal.NOT_YET_VALID,
    reason: /^peer certificate is not valid before \d{4}-\d\d-\d\dT[\d:.]+Z; check both hosts' clocks$/,
  },
  {
    title: 'a CA-flagged certificate',
    file: 'is-ca',
    forge: () => ({ isCa: true }),
    ownCheck: PeerRefusal.IS_CA,
    reason: /^peer certificate is a CA \(basicConstraints CA:true\); hosts must present a leaf from `qmesh pki issue`$/,
  },
  {
    title: 'a certificate with two URI SANs',
    file: 'two-uris',
    forge: () => ({ uris: [`spiffe://${TD}/host/host-2`, `spiffe://${TD}/host/host-3`] }),
    ownCheck: PeerRefusal.URI_SAN_COUNT,
    reason: /^peer certificate has 2 URI SANs; a host certificate has exactly one$/,
  },
  {
    title: 'a certificate from another trust domain',
    file: 'other-trust-domain',
    forge: () => ({ uris: ['spiffe://other.test/host/host-2'] }),
    ownCheck: PeerRefusal.FOREIGN_TRUST_DOMAIN,
    reason: new RegExp(`^peer spiffe://other\\.test/host/host-2 belongs to trust domain other\\.test, not ${TD.replace('.', '\\.')}$`),
  },
];

describe('peer identity refusals (issue #4)', () => {
  it('brings the tunnel up between correctly configured hosts (control)', async () => {
    expect(await outboundState(mesh, h1, h2)).toBe('up');
    expect(await outboundState(mesh, h2, h1)).toBe('up');
  });

  for (const c of CASES) {
    it(`gives no tunnel to a peer presenting ${c.title}`, async () => {
      await forge(c.file, c.forge());
      const before = await mesh.status(h1);
      const at = await restartHost2(c.file);
      // host-2 really loaded the forged certificate, which its own check would refuse.
      const bypassed = await waitLog(daemonOf(mesh, h2), (e) => e.msg === 'own certificate check bypassed', 5_000, 'start-up check bypassed');
      expect(bypassed.code).toBe(c.ownCheck);

      // host-1 as server: host-2 dials it at start-up and is refused.
      const failed = (await waitFor(
        () => {
          const list = h1Entries(at, 'server').filter((e) => e.msg === 'peer handshake failed');
          return list.length > 0 ? list : null;
        },
        10_000,
        'host-1 logs a failed handshake from host-2',
        50,
      ))!;
      // Refused inside the handshake: the code of the exact check, its sentence, where it came from.
      for (const e of failed) {
        expect(e.code).toBe(c.ownCheck);
        expect(e.reason.endsWith(FROM_H2), e.reason).toBe(true);
        expect(e.reason.slice(0, -FROM_H2.length)).toMatch(c.reason);
      }

      await expectNoTunnel();
      const reconnectsBefore = (await mesh.status(h1)).peers[0].outbound.reconnects as number;
      await expectConnectionReset();

      // host-1 as client: its dial to host-2 (the connection above triggers one) is refused for the same reason.
      const out = await waitFor(
        async () => {
          const o = (await mesh.status(h1)).peers[0].outbound;
          return o.reconnects > reconnectsBefore && typeof o.lastError === 'string' && c.reason.test(o.lastError) ? o : null;
        },
        8_000,
        `host-1's dial to host-2 fails with ${c.reason}`,
      );
      expect(out.state).not.toBe('up');
      const clientRefusal = await waitFor(
        () => h1Entries(at, 'client').find((e) => e.msg === 'tunnel handshake refused' && e.code === c.ownCheck && c.reason.test(e.reason)),
        5_000,
        'host-1 logs its refusal of host-2 as a client',
        50,
      );
      expect(clientRefusal).toBeTruthy();
      const after = await mesh.status(h1);
      expect(after.peers[0].outbound.handshakes, 'tunnels host-1 brought up to host-2').toBe(before.peers[0].outbound.handshakes);
      expect(after.quic.refusedHandshakes).toBeGreaterThan(before.quic.refusedHandshakes);
    }, TEST_MS);
  }

  it('brings the tunnel back once host-2 has its own credentials again (control)', async () => {
    await restartHost2(null);
    await mesh.waitTunnelsUp(15_000);
    expect(logOf(daemonOf(mesh, h2)).filter((e) => e.msg === 'own certificate check bypassed')).toEqual([]);
    const r = await fnClient(mesh, h1.functions[0]!.ns, 'rpc', { ip: h2.functions[0]!.ip, port: ECHO_PORT, requestBytes: 512, timeoutMs: 10_000 });
    expect(r).toMatchObject({ error: null, replyBytes: 512, replySha256: r.requestSha256, gotEnd: true });
  }, TEST_MS);
});
