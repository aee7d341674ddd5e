// Certificate rotation under load, with no SIGHUP: new files on disk are picked
// up by the watcher, the tunnels are re-established make-before-break, and no
// request fails while a long-lived connection streams throughout. Also: CA
// rotation with an overlapping bundle, the expiry warning for a short-lived
// certificate, and the re-dial before a peer's certificate expires.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initCa, issueHost } from '../../daemon/pki/index.js';
import { daemonOf, destroyMesh, logOf, startMesh, waitLog, type HostInfo, type Mesh } from '../support/e2e-mesh.js';
import { FnServer, fnClient, sleep, waitFor } from '../support/fn-net.js';

const RPC_PORT = 7101;
const ECHO_PORT = 7102;
let mesh: Mesh;
let h1: HostInfo;
let h2: HostInfo;

beforeAll(async () => {
  mesh = await startMesh({ hosts: 2, functionsPerHost: 1 });
  [h1, h2] = mesh.hosts as [HostInfo, HostInfo];
  await FnServer.start(mesh, h2.functions[0]!.ns, 'rpc', { ip: h2.functions[0]!.ip, port: RPC_PORT, replyBytes: 512 });
  await FnServer.start(mesh, h2.functions[0]!.ns, 'echo', { ip: h2.functions[0]!.ip, port: ECHO_PORT });
}, 60_000);

afterAll(async () => {
  await destroyMesh(mesh);
}, 60_000);

const pki = (): string => path.join(mesh.dir, 'pki');
const logFrom = (h: HostInfo, mark: number): any[] => logOf(daemonOf(mesh, h)).slice(mark);
const mark = (h: HostInfo): number => daemonOf(mesh, h).log.length;
/** Waits for a log line of `h` written after `from` (a mark()) that matches `pred`. */
const waitLogAfter = (h: HostInfo, from: number, pred: (e: any) => boolean, ms: number, what: string): Promise<any> =>
  waitFor(() => logFrom(h, from).find(pred), ms, `${h.name} log: ${what}`, 50);

/**
 * Runs request/response traffic h1 -> h2 (a new connection each) and one long-lived
 * streaming connection for `durationMs`, while `during` runs; returns both outcomes.
 */
async function underLoad(durationMs: number, during: (tickerDone: Promise<any>) => Promise<void>, tickerMs = durationMs): Promise<{ results: any[]; ticker: any }> {
  const fn1 = h1.functions[0]!;
  const target = h2.functions[0]!.ip;
  const ticker = fnClient(mesh, fn1.ns, 'ticker', { ip: target, port: ECHO_PORT, tickBytes: 2048, tickMs: 50, durationMs: tickerMs, timeoutMs: tickerMs + 20_000 });
  const results: any[] = [];
  const started = Date.now();
  const loop = (async () => {
    while (Date.now() - started < durationMs) {
      results.push(await fnClient(mesh, fn1.ns, 'rpc', { ip: target, port: RPC_PORT, requestBytes: 300, timeoutMs: 10_000 }));
    }
  })();
  await sleep(500);
  await during(ticker);
  await loop;
  return { results, ticker: await ticker };
}

const failed = (results: any[]): any[] => results.filter((r) => r.error !== null || r.replyBytes !== 512 || !r.gotEnd);

/** Copies a certificate and key issued elsewhere over a host's files, key first, each by rename (as deploy tools do). */
function deploy(fromDir: string, h: HostInfo): void {
  for (const ext of ['key', 'crt']) {
    const dst = path.join(pki(), `${h.name}.${ext}`);
    fs.copyFileSync(path.join(fromDir, `${h.name}.${ext}`), `${dst}.tmp`);
    fs.renameSync(`${dst}.tmp`, dst);
  }
}

describe('certificate rotation (file watcher, make-before-break)', () => {
  it('re-issues both hosts\' certificates under load: zero failed requests, the long-lived connection intact, tunnels re-established with the new certificates', async () => {
    const m1 = mark(h1);
    const m2 = mark(h2);
    let new1!: Date;
    let new2!: Date;
    const { results, ticker } = await underLoad(8_000, async () => {
      new1 = (await issueHost({ dir: pki(), name: h1.name, lifetimeMs: 48 * 3_600_000 })).notAfter;
      await waitLog(daemonOf(mesh, h1), (e) => e.msg === 'tunnel re-established' && e.ownNotAfter === new1.toISOString(), 15_000, 'h1 re-dials with its new certificate');
      new2 = (await issueHost({ dir: pki(), name: h2.name, lifetimeMs: 47 * 3_600_000 })).notAfter;
      await waitLog(daemonOf(mesh, h2), (e) => e.msg === 'tunnel re-established' && e.ownNotAfter === new2.toISOString(), 15_000, 'h2 re-dials with its new certificate');
    });
    console.log(`rotation: ${results.length} requests, ${failed(results).length} failed; ticker ${JSON.stringify(ticker)}`);
    expect(results.length).toBeGreaterThan(3);
    expect(failed(results)).toEqual([]);
    expect(ticker).toMatchObject({ connected: true, error: null, gotEnd: true, echoIntact: true });
    expect(ticker.ticks).toBeGreaterThan(20);
    // Reloaded by the watcher, not by a signal.
    expect(logFrom(h1, m1).some((e) => e.msg === 'file change: reloading configuration')).toBe(true);
    expect(logFrom(h1, m1).some((e) => e.msg === 'configuration reloaded' && e.newCredentials === true)).toBe(true);
    // The old connection that carried the long-lived stream closed only after it finished.
    await waitLogAfter(h1, m1, (e) => e.msg === 'old tunnel connection closed after its streams finished', 10_000, 'old connection retired');
    const s1 = await mesh.status(h1);
    expect(s1.certificate.notAfter).toBe(new1.toISOString());
    expect(s1.peers[0].outbound.renewals).toBeGreaterThanOrEqual(1);
    expect(s1.peers[0].outbound.state).toBe('up');
    // h1's new tunnel was authenticated with h2's certificate of the time; h2's rotation re-dialled h2's own.
    expect(logFrom(h2, m2).some((e) => e.msg === 'peer tunnel accepted')).toBe(true);
  }, 90_000);

  it('moves to a new CA with an overlapping bundle, host by host, under load: zero failures', async () => {
    const oldCa = fs.readFileSync(path.join(pki(), 'ca.crt'), 'utf8');
    const nextDir = path.join(mesh.dir, 'pki-next');
    await initCa({ dir: nextDir, trustDomain: mesh.trustDomain });
    const newCa = fs.readFileSync(path.join(nextDir, 'ca.crt'), 'utf8');
    for (const h of [h1, h2]) await issueHost({ dir: nextDir, name: h.name, lifetimeMs: 46 * 3_600_000 });
    const reloaded = async (h: HostInfo, from: number, what: string): Promise<void> => {
      await waitLogAfter(h, from, (e) => e.msg === 'configuration reloaded', 15_000, what);
    };
    // The long-lived connection ends before the old CA goes: one still riding a connection that
    // the old CA authenticated would be reset then (fail closed; README "Rotation runbook").
    const { results, ticker } = await underLoad(14_000, async (tickerDone) => {
      // 1. Both CAs trusted everywhere.
      let m1 = mark(h1);
      let m2 = mark(h2);
      fs.writeFileSync(path.join(pki(), 'ca.crt.tmp'), oldCa + newCa);
      fs.renameSync(path.join(pki(), 'ca.crt.tmp'), path.join(pki(), 'ca.crt'));
      await reloaded(h1, m1, 'h1 trusts both CAs');
      await reloaded(h2, m2, 'h2 trusts both CAs');
      // 2. Hosts move to certificates of the new CA one by one.
      for (const h of [h1, h2]) {
        const m = mark(h);
        deploy(nextDir, h);
        await waitLogAfter(h, m, (e) => e.msg === 'tunnel re-established', 15_000, `${h.name} on the new CA`);
      }
      // 3. The old CA leaves the bundle (once the long-lived connection opened under it has ended).
      await tickerDone;
      await sleep(500); // the connection that carried it closes once its last stream is done
      m1 = mark(h1);
      m2 = mark(h2);
      fs.writeFileSync(path.join(pki(), 'ca.crt.tmp'), newCa);
      fs.renameSync(path.join(pki(), 'ca.crt.tmp'), path.join(pki(), 'ca.crt'));
      await waitLogAfter(h1, m1, (e) => e.msg === 'tunnel re-established', 15_000, 'h1 re-dials with only the new CA');
      await waitLogAfter(h2, m2, (e) => e.msg === 'tunnel re-established', 15_000, 'h2 re-dials with only the new CA');
      // Every connection in use was authenticated by the new CA: none had to be closed.
      expect([...logFrom(h1, m1), ...logFrom(h2, m2)].filter((e) => e.reason?.startsWith('peer certificate no longer trusted'))).toEqual([]);
    }, 5_000);
    console.log(`CA rotation: ${results.length} requests, ${failed(results).length} failed; ticker ${JSON.stringify(ticker)}`);
    expect(results.length).toBeGreaterThan(3);
    expect(failed(results)).toEqual([]);
    expect(ticker).toMatchObject({ connected: true, error: null, gotEnd: true, echoIntact: true });
    // A fresh connection after the old CA is gone still works.
    const after = await fnClient(mesh, h1.functions[0]!.ns, 'rpc', { ip: h2.functions[0]!.ip, port: RPC_PORT, requestBytes: 10, timeoutMs: 10_000 });
    expect(after.error).toBeNull();
  }, 120_000);

  it('warns about a short-lived certificate; peers follow its rotation, re-dial before it expires and close at its end (fail closed)', async () => {
    // h2 gets a certificate ending in 30 s (its notBefore is a minute back for clock skew: margin 9 s).
    let m2 = mark(h2);
    const m1 = mark(h1);
    const nextDir = path.join(mesh.dir, 'pki-next');
    const short = await issueHost({ dir: nextDir, name: h2.name, lifetimeMs: 30_000 });
    deploy(nextDir, h2);
    const warning = await waitLogAfter(h2, m2, (e) => e.msg?.startsWith('own certificate expires soon'), 15_000, 'expiry warning');
    expect(warning.level).toBe('warn');
    expect(warning.expiresInSeconds).toBeLessThanOrEqual(30);
    const s2 = await mesh.status(h2);
    expect(s2.certificate).toMatchObject({ notAfter: short.notAfter.toISOString(), expiringSoon: true });
    expect(s2.certificate.expiresInSeconds).toBeLessThanOrEqual(30);
    // h2's re-dial to h1 shows h1 the new certificate: h1 re-establishes its own tunnel to h2.
    const followed = await waitLogAfter(h1, m1, (e) => e.msg === 'tunnel re-established' && e.peerNotAfter === short.notAfter.toISOString(), 15_000, 'h1 follows h2\'s rotation');
    expect(followed.reason).toBe('peer presented a new certificate');
    // Before the short certificate ends, h1 tries to re-establish (h2 still presents the same one)...
    const early = await waitLogAfter(h1, m1, (e) => e.msg === 're-establishing tunnel (make-before-break)' && e.reason?.includes('expires soon'), 40_000, 'h1 re-dials before expiry');
    expect(new Date(early.time).getTime()).toBeLessThan(short.notAfter.getTime());
    // ...and at its end closes the tunnel: nothing is carried on an expired authentication.
    // (h2 closes its side at the same instant, so either end may be first.)
    await waitLogAfter(
      h1,
      m1,
      (e) => e.msg === 'a certificate this tunnel was authenticated with expired; closing it' || (e.msg === 'tunnel down' && /certificate expired/.test(e.reason ?? '')),
      20_000,
      'the tunnel closes at expiry',
    );
    // Both tunnels between them rest on h2's certificate and each end closes its own at notAfter:
    // wait until host-1 holds neither (the one h2 dialled may close a moment after the other).
    await waitFor(async () => {
      const p = (await mesh.status(h1)).peers.find((x: any) => x.name === h2.name);
      return (p.outbound.state !== 'up' && p.inbound.state !== 'up') || undefined;
    }, 10_000, 'host-1 holds no tunnel to host-2');
    const request = () => fnClient(mesh, h1.functions[0]!.ns, 'rpc', { ip: h2.functions[0]!.ip, port: RPC_PORT, requestBytes: 10, timeoutMs: 10_000 });
    const refused = await request();
    expect(refused.error).not.toBeNull();
    expect(refused.replyBytes).toBe(0);
    // A valid certificate deployed on h2: traffic flows again.
    m2 = mark(h2);
    const long = await issueHost({ dir: nextDir, name: h2.name, lifetimeMs: 44 * 3_600_000 });
    deploy(nextDir, h2);
    await waitLogAfter(h2, m2, (e) => e.msg === 'configuration reloaded', 15_000, 'h2 reloads its long certificate');
    await waitFor(async () => (await request()).error === null, 20_000, 'traffic flows again');
    // (A request may ride before the server confirms us, so the "up" line can come a little later.)
    await waitLogAfter(h1, m1, (e) => (e.msg === 'tunnel up' || e.msg === 'tunnel re-established') && e.peerNotAfter === long.notAfter.toISOString(), 10_000, 'h1 tunnel on h2\'s new certificate');
  }, 120_000);

  it('closes at once the tunnels of a peer whose CA leaves this host\'s bundle (fail closed), and re-dials when it is back', async () => {
    const thirdDir = path.join(mesh.dir, 'pki-third');
    await initCa({ dir: thirdDir, trustDomain: mesh.trustDomain });
    await issueHost({ dir: thirdDir, name: h2.name, lifetimeMs: 43 * 3_600_000 });
    const nextCa = fs.readFileSync(path.join(mesh.dir, 'pki-next', 'ca.crt'), 'utf8');
    const thirdCa = fs.readFileSync(path.join(thirdDir, 'ca.crt'), 'utf8');
    // Both hosts trust both CAs; host-2 moves to a certificate of the third CA.
    let m1 = mark(h1);
    let m2 = mark(h2);
    fs.writeFileSync(path.join(pki(), 'ca.crt.tmp'), nextCa + thirdCa);
    fs.renameSync(path.join(pki(), 'ca.crt.tmp'), path.join(pki(), 'ca.crt'));
    await waitLogAfter(h1, m1, (e) => e.msg === 'configuration reloaded', 15_000, 'h1 trusts the third CA');
    await waitLogAfter(h2, m2, (e) => e.msg === 'configuration reloaded', 15_000, 'h2 trusts the third CA');
    m2 = mark(h2);
    deploy(thirdDir, h2);
    await waitLogAfter(h2, m2, (e) => e.msg === 'tunnel re-established', 15_000, 'h2 on the third CA');
    const request = () => fnClient(mesh, h1.functions[0]!.ns, 'rpc', { ip: h2.functions[0]!.ip, port: RPC_PORT, requestBytes: 10, timeoutMs: 10_000 });
    expect((await request()).error).toBeNull();
    // host-1 drops the third CA: every connection with host-2 closes now, not when the certificate expires.
    fs.writeFileSync(path.join(mesh.dir, 'h1-ca.crt'), nextCa);
    m1 = mark(h1);
    mesh.writeConfig(h1, { configFor: () => ({ tls: { ca: 'h1-ca.crt' } }) });
    await waitLogAfter(h1, m1, (e) => e.msg === 'configuration reloaded', 15_000, 'h1 without the third CA');
    const closing = logFrom(h1, m1).filter((e) => e.reason === 'peer certificate no longer trusted (CA removed from tls.ca)');
    // Both the connection host-2 dialled to us and the one we dialled to it.
    expect(closing.map((e) => e.msg)).toEqual(expect.arrayContaining(['closing peer tunnel', 'closing tunnel']));
    const refused = await request();
    expect(refused.error).not.toBeNull();
    expect(refused.replyBytes).toBe(0);
    expect((await mesh.status(h1)).peers[0].outbound.state).not.toBe('up');
    // The third CA back in host-1's bundle: the tunnel comes up again.
    m1 = mark(h1);
    mesh.writeConfig(h1, {});
    await waitLogAfter(h1, m1, (e) => e.msg === 'configuration reloaded', 15_000, 'h1 with the third CA again');
    await waitFor(async () => (await request()).error === null, 20_000, 'traffic flows again');
  }, 120_000);
});
