// Case 12: the admin endpoint is out of reach of functions and other hosts, and
// redirect loops are refused, not amplified: connections to the daemon's own
// capture or QUIC port from a function or the host, and a tunnelled connection
// whose original destination is the peer daemon's capture listener.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ADMIN_PORT, CAPTURE_PORT, QUIC_PORT } from '../../../daemon/demo/mesh.js';
import { destroyMesh, startMesh, type HostInfo, type Mesh } from '../../support/e2e-mesh.js';
import { sleep } from '../../support/fn-net.js';
import { figure } from './profile.js';

let mesh: Mesh;
let h1: HostInfo;
let h2: HostInfo;

beforeAll(async () => {
  mesh = await startMesh({ hosts: 2, functionsPerHost: 1 });
  [h1, h2] = mesh.hosts as [HostInfo, HostInfo];
}, 60_000);

afterAll(async () => {
  await destroyMesh(mesh);
}, 60_000);

/** TCP connects from `ns` to each target, `times` each; the outcome of each: "connected", an errno, or "TIMEOUT". */
async function connects(ns: string, targets: Array<[string, number]>, times = 1): Promise<string[]> {
  const script = `
    const net = require('net');
    const targets = ${JSON.stringify(targets)};
    const one = ([ip, port]) => new Promise((resolve) => {
      const s = net.connect(port, ip);
      const t = setTimeout(() => { s.destroy(); resolve('TIMEOUT'); }, 3000);
      const done = (r) => { clearTimeout(t); s.destroy(); resolve(r); };
      // A captured connection is accepted locally first; only data or close says what became of it.
      s.on('connect', () => s.write('GET /status HTTP/1.0\\r\\n\\r\\n'));
      s.on('data', () => done('connected'));
      s.on('error', (e) => done(e.code));
      s.on('close', () => done('closed'));
    });
    (async () => { const out = []; for (let i = 0; i < ${times}; i++) for (const t of targets) out.push(await one(t)); console.log(JSON.stringify(out)); })();`;
  const r = await mesh.topo.exec(ns, [process.execPath, '-e', script], { timeoutMs: 10_000 + targets.length * times * 3_500 });
  return JSON.parse(r.stdout.trim());
}

const counts = async (h: HostInfo): Promise<{ captured: number; inbound: number; inboundFailed: number; streams: number }> => {
  const s = await mesh.status(h);
  const streams = (s.peers as any[]).reduce((n, p) => n + p.outbound.streamsTotal + p.inbound.streamsTotal, 0);
  return { captured: s.capture.accepted + s.capture.refused, inbound: s.inbound.accepted, inboundFailed: s.inbound.connectFailed + s.inbound.denied, streams };
};

describe('case 12: admin endpoint and redirect loops', () => {
  it('the admin endpoint answers on the host loopback only', async () => {
    const fn = h1.functions[0]!.ns;
    const loopback = await mesh.admin(h1, '/healthz');
    const fromFunction = await connects(fn, [
      [h1.gatewayIp, ADMIN_PORT],
      [h1.underlayIp, ADMIN_PORT],
      [h2.underlayIp, ADMIN_PORT],
    ]);
    const fromPeerHost = await connects(h2.ns, [[h1.underlayIp, ADMIN_PORT]]);
    figure('case-12-admin', `loopback=${loopback.status} fromFunction=${fromFunction.join(',')} fromPeerHost=${fromPeerHost.join(',')}`);
    expect(loopback.status).toBe(200);
    for (const r of [...fromFunction, ...fromPeerHost]) expect(r).not.toBe('connected');
  }, 60_000);

  it('connections to the daemon ports and to a peer daemon capture port are refused, not amplified', async () => {
    const ATTEMPTS = 10;
    const [b1, b2] = [await counts(h1), await counts(h2)];
    const fn = h1.functions[0]!.ns;
    // Own ports, straight: the capture port takes only redirected connections; QUIC is UDP.
    const ownFromFunction = await connects(fn, [
      [h1.gatewayIp, CAPTURE_PORT],
      [h1.underlayIp, CAPTURE_PORT],
      [h1.underlayIp, QUIC_PORT],
    ]);
    const ownFromHost = await connects(h1.ns, [
      ['127.0.0.1', CAPTURE_PORT],
      [h1.underlayIp, CAPTURE_PORT],
      [h1.underlayIp, QUIC_PORT],
    ]);
    const own1 = await counts(h1);
    // The peer's bridge address lies in its function CIDR: captured here, tunnelled, and delivered
    // there to its own capture port, which must refuse it rather than capture it again.
    const loop = await connects(fn, [[h2.gatewayIp, CAPTURE_PORT]], ATTEMPTS);
    const loopFromHost = await connects(h1.ns, [[h2.gatewayIp, CAPTURE_PORT]], ATTEMPTS);
    await sleep(2000); // a loop would keep counting up after the clients are gone
    const [a1, a2] = [await counts(h1), await counts(h2)];
    await sleep(2000);
    const [c1, c2] = [await counts(h1), await counts(h2)];
    figure(
      'case-12-loops',
      `own ports fromFunction=${ownFromFunction.join(',')} fromHost=${ownFromHost.join(',')} captured+=${own1.captured - b1.captured}; ` +
        `to peer capture port: attempts=${2 * ATTEMPTS} outcomes=${[...new Set([...loop, ...loopFromHost])].join(',')} ` +
        `host-1 captured+=${a1.captured - b1.captured} streams+=${a1.streams - b1.streams}; host-2 streams+=${a2.streams - b2.streams} ` +
        `inboundRefusedOrFailed+=${a2.inboundFailed - b2.inboundFailed} delivered+=${a2.inbound - b2.inbound}; growth 2 s later=${c1.streams - a1.streams + c2.streams - a2.streams}`,
    );
    for (const r of [...ownFromFunction, ...ownFromHost, ...loop, ...loopFromHost]) expect(r).not.toBe('connected');
    expect(own1.captured).toBe(b1.captured); // nothing straight to the ports was captured
    // Each attempt costs at most one capture and one stream on each side; no loop.
    expect(a1.captured - b1.captured).toBeLessThanOrEqual(2 * ATTEMPTS);
    expect(a2.streams - b2.streams).toBeLessThanOrEqual(2 * ATTEMPTS);
    expect(a2.inboundFailed - b2.inboundFailed).toBe(2 * ATTEMPTS); // each refused at delivery, named in /status
    expect(a2.inbound).toBe(b2.inbound);
    expect(c1.streams).toBe(a1.streams);
    expect(c2.streams).toBe(a2.streams);
    expect(c1.captured).toBe(a1.captured);
  }, 90_000);
});
