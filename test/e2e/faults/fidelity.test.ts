// Fault cases 9 and 10 (issue #6). Half-close and reset fidelity: after the
// client's shutdown(SHUT_WR) a large reply still arrives whole, a server that
// speaks first works, and a reset (SO_LINGER 0) on either end reaches the other
// end as a reset. Then, after thousands of short connections, no socket is left
// in CLOSE_WAIT or FIN_WAIT2 in any host or function namespace.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { destroyMesh, startMesh, type HostInfo, type Mesh } from '../../support/e2e-mesh.js';
import { FnServer, fnClient, waitFor } from '../../support/fn-net.js';
import { faultClient, WatchServer } from './fault-net.js';
import { figure, PROFILE, testMs } from './profile.js';

const BULK_REPLY_PORT = 7901;
const BANNER_PORT = 7902;
const RESETTING_PORT = 7903;
const WATCH_PORT = 7904;
/** Sockets in these states after everyone closed mean a lost FIN somewhere. */
const STUCK_STATES = ['close-wait', 'fin-wait-2'] as const;

let mesh: Mesh;
let h1: HostInfo;
let h2: HostInfo;
let bulk: FnServer;
let watch: WatchServer;

beforeAll(async () => {
  mesh = await startMesh({ hosts: 2, functionsPerHost: 1 });
  [h1, h2] = mesh.hosts as [HostInfo, HostInfo];
  const f2 = h2.functions[0]!;
  bulk = await FnServer.start(mesh, f2.ns, 'rpc', { ip: f2.ip, port: BULK_REPLY_PORT, replyBytes: PROFILE.halfCloseBytes });
  await FnServer.start(mesh, f2.ns, 'banner', { ip: f2.ip, port: BANNER_PORT, banner: 'fault-suite ESMTP' });
  await WatchServer.start(mesh, f2.ns, { ip: f2.ip, port: RESETTING_PORT, resetAfterBytes: 1 });
  watch = await WatchServer.start(mesh, f2.ns, { ip: f2.ip, port: WATCH_PORT });
}, 60_000);

afterAll(async () => {
  await destroyMesh(mesh);
}, 60_000);

/** Sockets in `state` in namespace `ns` (ss prints a header line first). */
async function countState(ns: string, state: string): Promise<number> {
  const r = await mesh.topo.exec(ns, ['ss', '-tanH', 'state', state]);
  if (r.code !== 0) throw new Error(`ss in ${ns}: ${r.stderr}`);
  return r.stdout.split('\n').filter((l) => l.trim()).length;
}

async function stuckSockets(): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const h of mesh.hosts) {
    for (const ns of [h.ns, ...h.functions.map((f) => f.ns)]) {
      for (const state of STUCK_STATES) {
        const n = await countState(ns, state);
        if (n > 0) out[`${ns} ${state}`] = n;
      }
    }
  }
  return out;
}

describe('fault: half-close and reset fidelity', () => {
  it(`case 9a: after shutdown(SHUT_WR) ${PROFILE.halfCloseBytes / 2 ** 20} MiB come back complete`, async () => {
    const before = bulk.conns.length;
    const r = await fnClient(mesh, h1.functions[0]!.ns, 'rpc', { ip: h2.functions[0]!.ip, port: BULK_REPLY_PORT, requestBytes: 1024, timeoutMs: testMs(40_000, 120_000) });
    const seen = (await bulk.waitConns(before + 1, 10_000))[before];
    figure('case-9a half-close', `${PROFILE.halfCloseBytes / 2 ** 20} MiB after the client's FIN: ${r.replySha256 === seen.replySha256 ? 'sha256 equal' : 'DIFFERENT'}, ${((PROFILE.halfCloseBytes / 1e6) / (r.ms / 1000)).toFixed(0)} MB/s`);
    expect(r.error).toBeNull();
    expect(seen).toMatchObject({ requestBytes: 1024, requestSha256: r.requestSha256, requestDone: true });
    expect(r).toMatchObject({ replyBytes: PROFILE.halfCloseBytes, replySha256: seen.replySha256, gotEnd: true });
  }, testMs(60_000, 180_000));

  it('case 9b: a server that speaks first works', async () => {
    const r = await fnClient(mesh, h1.functions[0]!.ns, 'banner', { ip: h2.functions[0]!.ip, port: BANNER_PORT, timeoutMs: 10_000 });
    figure('case-9b server-first', `banner ${JSON.stringify(r.banner)}, then ${JSON.stringify(r.rest)}, gotEnd ${r.gotEnd}`);
    expect(r).toMatchObject({ error: null, banner: '220 fault-suite ESMTP', rest: '221 bye\r\n', gotEnd: true });
  }, 30_000);

  it('case 9c: a server reset reaches the client as ECONNRESET', async () => {
    const r = await fnClient(mesh, h1.functions[0]!.ns, 'rpc', { ip: h2.functions[0]!.ip, port: RESETTING_PORT, requestBytes: 4096, sendAfterEnd: false, timeoutMs: 10_000 });
    figure('case-9c server-reset', `client saw ${r.error} after ${r.ms} ms, gotEnd ${r.gotEnd}`);
    expect(r.error).toBe('ECONNRESET');
    expect(r.gotEnd).toBe(false);
  }, 30_000);

  it('case 9d: a client reset reaches the server as a reset', async () => {
    const before = watch.conns.length;
    const r = await faultClient(mesh, h1.functions[0]!.ns, 'reset', { ip: h2.functions[0]!.ip, port: WATCH_PORT }, 10_000);
    const seen = await watch.conn(before, 10_000);
    figure('case-9d client-reset', `server saw ${seen.how} ${seen.closedAt - r.resetAt} ms after the client's reset`);
    expect(r.echoed).toBe(true);
    expect(seen.how).toBe('ECONNRESET');
  }, 30_000);

  it(`case 10: no CLOSE_WAIT or FIN_WAIT2 left after ${PROFILE.shortConns} short connections`, async () => {
    const targets = [
      { ip: h2.functions[0]!.ip, port: WATCH_PORT },
      { ip: h2.functions[0]!.ip, port: WATCH_PORT },
    ];
    const r = await faultClient(mesh, h1.functions[0]!.ns, 'conns', { targets, count: PROFILE.shortConns, concurrency: 32, bytes: 200, connTimeoutMs: 15_000 }, testMs(120_000, 400_000));
    // Closes still in flight are fine; a socket stuck after a few seconds is not.
    let stuck: Record<string, number> = {};
    const settled = await waitFor(async () => Object.keys((stuck = await stuckSockets())).length === 0, 10_000, 'no stuck sockets').catch(() => false);
    figure('case-10 stuck-sockets', `${r.total} connections in ${(r.ms / 1000).toFixed(1)} s (${JSON.stringify(r.outcomes)}); CLOSE_WAIT/FIN_WAIT2 left: ${settled ? 0 : JSON.stringify(stuck)}`);
    expect(r.outcomes).toEqual({ ok: PROFILE.shortConns });
    // The counter itself sees sockets: the four servers' listening ones.
    expect(await countState(h2.functions[0]!.ns, 'listening')).toBeGreaterThanOrEqual(4);
    expect(stuck).toEqual({});
  }, testMs(180_000, 600_000));
});
