// Fault case 4 (issue #6): the underlay path black-holed (iptables DROP of QUIC
// both ways in host-2's namespace: no ICMP, just silence) and then restored. host-1 declares
// the tunnel down within tunnel.idleTimeoutMs, resets the connection open through
// it, resets new connections within tunnel.connectTimeoutMs meanwhile, carries
// traffic again within seconds of the restore, and never sends plaintext.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { QUIC_PORT } from '../../../daemon/demo/mesh.js';
import { daemonOf, destroyMesh, logOf, outboundState, startMesh, type HostInfo, type Mesh } from '../../support/e2e-mesh.js';
import { FnServer, fnClient, plaintextMarker, sleep, waitFor } from '../../support/fn-net.js';
import { WireCapture } from '../../support/wire-capture.js';
import { faultClient } from './fault-net.js';
import { figure } from './profile.js';

const ECHO_PORT = 7301;
const IDLE_TIMEOUT_MS = 2_000;
const CONNECT_TIMEOUT_MS = 1_000;
/**
 * On top of the configured times: QUIC restarts its idle timer with the first keep-alive
 * after the last packet heard (+ tunnel.keepAliveMs, 0.5 s here), /status polling, and a
 * loaded machine's scheduling. Measured: down 2.2-2.5 s after the drop.
 */
const SLACK_MS = 2_500;
const RECOVER_WITHIN_MS = 5_000;
const marker = plaintextMarker('fault-blackhole');
/** Both directions: a one-way drop still lets host-2's keep-alives reach host-1 until host-2 gives up. */
const DROP_RULES = ['INPUT', 'OUTPUT'].flatMap((chain) => [
  [chain, '-p', 'udp', '--dport', String(QUIC_PORT), '-j', 'DROP'],
  [chain, '-p', 'udp', '--sport', String(QUIC_PORT), '-j', 'DROP'],
]);

let mesh: Mesh;
let h1: HostInfo;
let h2: HostInfo;

beforeAll(async () => {
  mesh = await startMesh({
    hosts: 2,
    functionsPerHost: 1,
    configFor: () => ({ tunnel: { idleTimeoutMs: IDLE_TIMEOUT_MS, keepAliveMs: 500, connectTimeoutMs: CONNECT_TIMEOUT_MS, reconnectMaxMs: 1_000 } }),
  });
  [h1, h2] = mesh.hosts as [HostInfo, HostInfo];
  await FnServer.start(mesh, h2.functions[0]!.ns, 'echo', { ip: h2.functions[0]!.ip, port: ECHO_PORT });
}, 60_000);

afterAll(async () => {
  await destroyMesh(mesh);
}, 60_000);

async function iptables(op: '-I' | '-D'): Promise<void> {
  for (const [chain, ...rule] of DROP_RULES) {
    const r = await mesh.topo.exec(h2.ns, ['iptables', '-w', op, chain!, ...rule]);
    if (r.code !== 0) throw new Error(`iptables ${op} ${chain} in ${h2.ns}: ${r.stderr}`);
  }
}

const request = () => fnClient(mesh, h1.functions[0]!.ns, 'rpc', { ip: h2.functions[0]!.ip, port: ECHO_PORT, requestBytes: 1024, marker, timeoutMs: 10_000 });

describe('fault: underlay black hole', () => {
  it('case 4: tunnel down within the idle timeout, fast failures meanwhile, recovery after the restore, no plaintext', async () => {
    const ok = await request();
    expect(ok).toMatchObject({ error: null, replyBytes: 1024, replySha256: ok.requestSha256 });
    const wire = await WireCapture.start(mesh, { name: 'blackhole' });
    let held: any, during: any, downMs = 0, recoverMs = 0;
    try {
      const open = faultClient(mesh, h1.functions[0]!.ns, 'idle', { ip: h2.functions[0]!.ip, port: ECHO_PORT, idleMs: 15_000 }, 25_000);
      await waitFor(async () => (await mesh.status(h1)).capture.active >= 1, 10_000, 'open connection', 50);
      await sleep(300);
      const dropAt = Date.now();
      await iptables('-I');
      try {
        await waitFor(async () => (await outboundState(mesh, h1, h2)) !== 'up', IDLE_TIMEOUT_MS + 10_000, 'host-1 declares the tunnel down', 100);
        downMs = Date.now() - dropAt;
        held = await open;
        held.resetAfterMs = held.closedAt - dropAt;
        during = await request();
      } finally {
        await iptables('-D');
      }
      const restoreAt = Date.now();
      await waitFor(async () => (await request()).replyBytes === 1024, 20_000, 'traffic again', 100);
      recoverMs = Date.now() - restoreAt;
    } finally {
      await wire.stop();
    }
    const s = await wire.summarize(mesh.hosts.map((h) => h.underlayIp), QUIC_PORT);
    figure(
      'case-4 blackhole',
      `tunnel declared down ${(downMs / 1000).toFixed(1)} s after the drop (idleTimeoutMs ${IDLE_TIMEOUT_MS / 1000} s); open connection ${held.how} after ${(held.resetAfterMs / 1000).toFixed(1)} s; ` +
        `new connection meanwhile: ${during.error} in ${during.ms} ms (connectTimeoutMs ${CONNECT_TIMEOUT_MS}); traffic again ${(recoverMs / 1000).toFixed(1)} s after the restore; plaintext on the wire: ${wire.contains(marker) ? 'FOUND' : 0}`,
    );
    expect(downMs).toBeLessThan(IDLE_TIMEOUT_MS + SLACK_MS);
    expect(held.firstEcho).toBe(true);
    expect(held.how, 'the open connection is reset when the tunnel dies').toBe('ECONNRESET');
    expect(held.resetAfterMs).toBeLessThan(IDLE_TIMEOUT_MS + SLACK_MS);
    expect(during.error, 'a new connection fails, it does not hang').toBe('ECONNRESET');
    expect(during.replyBytes).toBe(0);
    expect(during.ms).toBeLessThan(CONNECT_TIMEOUT_MS + SLACK_MS);
    expect(recoverMs).toBeLessThan(RECOVER_WITHIN_MS);
    expect(logOf(daemonOf(mesh, h1)).some((e) => e.msg === 'tunnel down' && e.reason === 'idle timeout (peer silent)'), 'logged as an idle timeout').toBe(true);
    expect(s.tcp, 'no TCP on the underlay').toEqual([]);
    expect(wire.contains(marker), 'no plaintext on the underlay').toBe(false);
  }, 90_000);
});
