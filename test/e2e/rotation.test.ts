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
  if (process.env.ROT_DEBUG) for (const h of mesh.hosts) console.log(`--- ${h.name}\n` + (mesh.daemons.get(h.name)?.log ?? []).filter((l) => !l.includes('connection closed')).slice(-60).join('\n'));
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
async function underLoad(durationMs: number, during: () => Promise<void>): Promise<{ results: any[]; ticker: any }> {
  const fn1 = h1.functions[0]!;
  const target = h2.functions[0]!.ip;
  const ticker = fnClient(mesh, fn1.ns, 'ticker', { ip: target, port: ECHO_PORT, tickBytes: 2048, tickMs: 50, durationMs, timeoutMs: durationMs + 20_000 });
  const results: any[] = [];
  const started = Date.now();
  const loop = (async () => {
    while (Date.now() - started < durationMs) {
      results.push(await fnClient(mesh, fn1.ns, 'rpc', { ip: target, port: RPC_PORT, requestBytes: 300, timeoutMs: 10_000 }));
    }
  })();
  await sleep(500);
  await during();
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
    const { results, ticker } = await underLoad(12_000, async () => {
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
      // 3. The old CA leaves the bundle.
      m1 = mark(h1);
      m2 = mark(h2);
      fs.writeFileSync(path.join(pki(), 'ca.crt.tmp'), newCa);
      fs.renameSync(path.join(pki(), 'ca.crt.tmp'), path.join(pki(), 'ca.crt'));
      await waitLogAfter(h1, m1, (e) => e.msg === 'tunnel re-established', 15_000, 'h1 re-dials with only the new CA');
      await waitLogAfter(h2, m2, (e) => e.msg === 'tunnel re-established', 15_000, 'h2 re-dials with only the new CA');
    });
    console.log(`CA rotation: ${results.length} requests, ${failed(results).length} failed; ticker ${JSON.stringify(ticker)}`);
    expect(results.length).toBeGreaterThan(3);
    expect(failed(results)).toEqual([]);
    expect(ticker).toMatchObject({ connected: true, error: null, gotEnd: true, echoIntact: true });
    // A fresh connection after the old CA is gone still works.
    const after = await fnClient(mesh, h1.functions[0]!.ns, 'rpc', { ip: h2.functions[0]!.ip, port: RPC_PORT, requestBytes: 10, timeoutMs: 10_000 });
    expect(after.error).toBeNull();
  }, 120_000);

  it('warns about a short-lived certificate and re-dials before the peer\'s certificate expires', async () => {
    // h2 gets a certificate ending in 40 s (its notBefore is a minute back for clock skew).
    let m2 = mark(h2);
    const short = await issueHost({ dir: path.join(mesh.dir, 'pki-next'), name: h2.name, lifetimeMs: 40_000 });
    deploy(path.join(mesh.dir, 'pki-next'), h2);
    const warning = await waitLogAfter(h2, m2, (e) => e.msg?.startsWith('own certificate expires soon'), 15_000, 'expiry warning');
    expect(warning.level).toBe('warn');
    expect(warning.expiresInSeconds).toBeLessThanOrEqual(40);
    const s2 = await mesh.status(h2);
    expect(s2.certificate).toMatchObject({ notAfter: short.notAfter.toISOString(), expiringSoon: true });
    expect(s2.certificate.expiresInSeconds).toBeLessThanOrEqual(40);
    // h1 re-dials (new certificate of its own) and so authenticates h2's short certificate.
    const m1 = mark(h1);
    await issueHost({ dir: path.join(mesh.dir, 'pki-next'), name: h1.name, lifetimeMs: 45 * 3_600_000 });
    deploy(path.join(mesh.dir, 'pki-next'), h1);
    await waitLogAfter(h1, m1, (e) => e.msg === 'tunnel re-established' && e.peerNotAfter === short.notAfter.toISOString(), 15_000, 'h1 tunnel on h2\'s short certificate');
    // h2 gets a long certificate again; h1 learns it only by re-dialling before the short one ends.
    m2 = mark(h2);
    const long = await issueHost({ dir: path.join(mesh.dir, 'pki-next'), name: h2.name, lifetimeMs: 44 * 3_600_000 });
    deploy(path.join(mesh.dir, 'pki-next'), h2);
    await waitLogAfter(h2, m2, (e) => e.msg === 'configuration reloaded', 15_000, 'h2 reloads its long certificate');
    const redial = await waitLogAfter(
      h1,
      m1,
      (e) => e.msg === 'tunnel re-established' && e.reason?.includes('expires soon'),
      45_000,
      'h1 re-dials before h2\'s short certificate expires',
    );
    expect(redial.peerNotAfter).toBe(long.notAfter.toISOString());
    expect(new Date(redial.time).getTime()).toBeLessThan(short.notAfter.getTime());
    // Traffic still flows after the short certificate's end.
    await sleep(Math.max(0, short.notAfter.getTime() - Date.now() + 1000));
    const r = await fnClient(mesh, h1.functions[0]!.ns, 'rpc', { ip: h2.functions[0]!.ip, port: RPC_PORT, requestBytes: 10, timeoutMs: 10_000 });
    expect(r.error).toBeNull();
  }, 120_000);
});
