// Case 12: the admin endpoint is out of reach of functions and other hosts, and
// redirect loops are refused, not amplified: connections to the daemon's own
// capture or QUIC port from a function or the host, and a tunnelled connection
// whose original destination is the peer daemon's capture listener. Also (issue #14 §4)
// a flow never reaches the receiving host itself: host-2's gateway address lies in its
// local.cidrs, yet delivery refuses it, as it refuses the admin and capture port numbers
// on a function's address.
import type { ChildProcess } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ADMIN_PORT, CAPTURE_PORT, QUIC_PORT } from '../../../daemon/demo/mesh.js';
import { daemonOf, destroyMesh, logOf, startMesh, waitLog, type HostInfo, type Mesh } from '../../support/e2e-mesh.js';
import { FnServer, fnClient, sleep } from '../../support/fn-net.js';
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

/** A TCP listener in `ns` that reports every connection it accepts, the moment it accepts it. */
class Canary {
  accepted = 0;
  private constructor(readonly child: ChildProcess) {}
  static async start(mesh: Mesh, ns: string, ip: string, port: number): Promise<Canary> {
    const script = `require('net').createServer((s) => { console.log('accepted'); s.on('error', () => {}); s.end('HOST SERVICE'); })
      .listen(${port}, ${JSON.stringify(ip)}, () => console.log('ready'));`;
    const c = new Canary(mesh.topo.spawn(ns, [process.execPath, '-e', script], { stdio: ['ignore', 'pipe', 'pipe'] }));
    let err = '';
    c.child.stderr?.setEncoding('utf8').on('data', (d: string) => (err += d));
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`canary ${ip}:${port}: no ready (${err})`)), 10_000);
      c.child.stdout?.setEncoding('utf8').on('data', (d: string) => {
        for (const line of d.split('\n')) {
          if (line === 'ready') (clearTimeout(t), resolve());
          if (line === 'accepted') c.accepted++;
        }
      });
      c.child.once('exit', (code) => (clearTimeout(t), reject(new Error(`canary ${ip}:${port} exited ${code}: ${err}`))));
    });
    return c;
  }
  stop(): void {
    if (this.child.exitCode === null) this.child.kill('SIGKILL');
  }
}

describe('issue #14 §4: delivery never reaches the receiving host itself', () => {
  const HOST_SERVICE_PORT = 8088;
  const ECHO_PORT = 7007;
  let canaries: Canary[] = [];
  let hostService: Canary;
  let gatewayAdmin: Canary;
  let fnAdmin: Canary;
  let fnCapture: Canary;

  beforeAll(async () => {
    const fn2 = h2.functions[0]!;
    hostService = await Canary.start(mesh, h2.ns, '0.0.0.0', HOST_SERVICE_PORT);
    // The admin endpoint listens on 127.0.0.1; this stands in for one reachable on the gateway.
    gatewayAdmin = await Canary.start(mesh, h2.ns, h2.gatewayIp, ADMIN_PORT);
    fnAdmin = await Canary.start(mesh, fn2.ns, fn2.ip, ADMIN_PORT);
    fnCapture = await Canary.start(mesh, fn2.ns, fn2.ip, CAPTURE_PORT);
    canaries = [hostService, gatewayAdmin, fnAdmin, fnCapture];
    await FnServer.start(mesh, fn2.ns, 'echo', { ip: fn2.ip, port: ECHO_PORT });
  }, 60_000);

  afterAll(() => {
    for (const c of canaries) c.stop();
  });

  const refusal = (dst: string, reason: string) =>
    waitLog(daemonOf(mesh, h2), (e) => e.msg === 'inbound stream refused' && e.dst === dst && e.reason === reason, 5_000, `refusal of ${dst}`);

  it('refuses host-2\'s gateway address (admin port, a host service) and a function address on the daemon\'s ports', async () => {
    const fn = h1.functions[0]!.ns;
    const fn2 = h2.functions[0]!;
    const deniedBefore = (await mesh.status(h2)).inbound.denied;
    const cases: Array<[string, number, string, Canary]> = [
      [h2.gatewayIp, HOST_SERVICE_PORT, 'destination is an address of this host', hostService],
      [h2.gatewayIp, ADMIN_PORT, "destination port is the daemon's admin port", gatewayAdmin],
      [fn2.ip, ADMIN_PORT, "destination port is the daemon's admin port", fnAdmin],
      [fn2.ip, CAPTURE_PORT, "destination port is the daemon's capture port", fnCapture],
    ];
    const outcomes: string[] = [];
    for (const [ip, port, reason, canary] of cases) {
      const r = await fnClient(mesh, fn, 'rpc', { ip, port, requestBytes: 64, timeoutMs: 5_000 });
      outcomes.push(`${ip}:${port}=${r.error ?? 'ok'}/${r.replyBytes}B/accepted=${canary.accepted}`);
      expect(r.replyBytes, `${ip}:${port} answered`).toBe(0);
      expect(r.error, `${ip}:${port}`).toMatch(/^(ECONNRESET|EPIPE)$/);
      const line = await refusal(`${ip}:${port}`, reason);
      expect(line).toMatchObject({ peer: h1.name, component: 'inbound' });
    }
    await sleep(500); // an accept would be reported at once
    figure('case-12-own-host', `${outcomes.join(' ')} denied+=${(await mesh.status(h2)).inbound.denied - deniedBefore}`);
    for (const c of canaries) expect(c.accepted, 'nothing reached a listener behind a refused destination').toBe(0);
    expect((await mesh.status(h2)).inbound.denied).toBe(deniedBefore + cases.length);
  }, 60_000);

  it('still delivers to a function on host-2 (the refusal is specific)', async () => {
    const fn2 = h2.functions[0]!;
    const r = await fnClient(mesh, h1.functions[0]!.ns, 'rpc', { ip: fn2.ip, port: ECHO_PORT, requestBytes: 512, timeoutMs: 10_000 });
    expect(r).toMatchObject({ error: null, replyBytes: 512, replySha256: r.requestSha256, gotEnd: true });
  }, 30_000);

  it('refuses an address added to host-2 after its daemon started', async () => {
    const LATE = '198.19.2.77'; // in host-2's function CIDR, put on its bridge only now
    expect(h2.functionCidr).toBe('198.19.2.0/24');
    const added = await mesh.topo.exec(h2.ns, ['ip', 'addr', 'add', `${LATE}/32`, 'dev', 'fbr0']);
    expect(added.code, added.stderr).toBe(0);
    const before = hostService.accepted;
    const r = await fnClient(mesh, h1.functions[0]!.ns, 'rpc', { ip: LATE, port: HOST_SERVICE_PORT, requestBytes: 64, timeoutMs: 5_000 });
    expect(r.replyBytes).toBe(0);
    await refusal(`${LATE}:${HOST_SERVICE_PORT}`, 'destination is an address of this host');
    await sleep(500);
    expect(hostService.accepted).toBe(before);
    expect(logOf(daemonOf(mesh, h2)).some((e) => /ip_nonlocal_bind/.test(e.msg ?? ''))).toBe(false);
  }, 30_000);
});
