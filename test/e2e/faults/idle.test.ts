// Fault case 11 (issue #6): idleness. A TCP connection silent for 2.5 times the
// QUIC idle timeout still echoes afterwards (keep-alives hold the tunnel, which is
// never re-dialled meanwhile); a connection silent past capture.idleTimeoutMs is
// reset at both ends, logged and counted.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { daemonOf, destroyMesh, logOf, startMesh, type HostInfo, type Mesh } from '../../support/e2e-mesh.js';
import { waitFor } from '../../support/fn-net.js';
import { faultClient, WatchServer } from './fault-net.js';
import { figure } from './profile.js';

const ECHO_PORT = 7111;
const TUNNEL_IDLE_MS = 2_000;
const TCP_IDLE_MS = 8_000;
const IDLE_LOG = 'idle connection reset (capture.idleTimeoutMs)';

let mesh: Mesh;
let h1: HostInfo;
let h2: HostInfo;
let server: WatchServer;

beforeAll(async () => {
  mesh = await startMesh({
    hosts: 2,
    functionsPerHost: 1,
    configFor: () => ({ tunnel: { idleTimeoutMs: TUNNEL_IDLE_MS, keepAliveMs: 500 }, capture: { idleTimeoutMs: TCP_IDLE_MS } }),
  });
  [h1, h2] = mesh.hosts as [HostInfo, HostInfo];
  server = await WatchServer.start(mesh, h2.functions[0]!.ns, { ip: h2.functions[0]!.ip, port: ECHO_PORT });
}, 60_000);

afterAll(async () => {
  await destroyMesh(mesh);
}, 60_000);

describe('fault: idle connections', () => {
  it(`case 11a: a connection silent for ${(2.5 * TUNNEL_IDLE_MS) / 1000} s (2.5 x tunnel.idleTimeoutMs) still echoes`, async () => {
    const handshakes = (await mesh.status(h1)).peers[0].outbound.handshakes;
    const idleMs = 2.5 * TUNNEL_IDLE_MS;
    const r = await faultClient(mesh, h1.functions[0]!.ns, 'idle', { ip: h2.functions[0]!.ip, port: ECHO_PORT, idleMs }, 30_000);
    const after = (await mesh.status(h1)).peers[0].outbound;
    figure('case-11a idle-keepalive', `silent ${idleMs / 1000} s then echo: ${r.secondEcho}, closed as ${r.how}; tunnel handshakes ${handshakes} -> ${after.handshakes}`);
    expect(r).toMatchObject({ firstEcho: true, secondEcho: true, how: 'end' });
    expect(after.state).toBe('up');
    expect(after.handshakes, 'the tunnel was never re-dialled').toBe(handshakes);
  }, 40_000);

  it(`case 11b: a connection silent past capture.idleTimeoutMs (${TCP_IDLE_MS / 1000} s) is reset at both ends, logged and counted`, async () => {
    const before = server.conns.length;
    const r = await faultClient(mesh, h1.functions[0]!.ns, 'idle', { ip: h2.functions[0]!.ip, port: ECHO_PORT, idleMs: 3 * TCP_IDLE_MS }, 40_000);
    const seen = await server.conn(before, 10_000);
    const clientAfter = r.closedAt - r.idleFrom;
    const serverAfter = seen.closedAt - r.idleFrom;
    const s1 = await mesh.status(h1);
    const s2 = await mesh.status(h2);
    const counted = s1.capture.idleTimeouts + s2.inbound.idleTimeouts;
    const idleLines = () => [...logOf(daemonOf(mesh, h1)), ...logOf(daemonOf(mesh, h2))].filter((e) => e.msg === IDLE_LOG);
    // pino writes asynchronously: give the lines a moment to arrive.
    const logged = await waitFor(() => (idleLines().length >= counted ? idleLines() : null), 3_000, 'idle log lines').catch(() => idleLines());
    figure(
      'case-11b tcp-idle-timeout',
      `client ${r.how} after ${(clientAfter / 1000).toFixed(1)} s silent, server ${seen.how} after ${(serverAfter / 1000).toFixed(1)} s (capture.idleTimeoutMs ${TCP_IDLE_MS / 1000} s); counted capture ${s1.capture.idleTimeouts} + inbound ${s2.inbound.idleTimeouts}; log lines ${logged.length}`,
    );
    expect(r.firstEcho).toBe(true);
    expect(r.secondEcho, 'it was closed during the silence').toBe(false);
    expect(r.how).toBe('ECONNRESET');
    expect(seen.how).toBe('ECONNRESET');
    for (const t of [clientAfter, serverAfter]) {
      expect(t).toBeGreaterThanOrEqual(TCP_IDLE_MS - 200);
      expect(t).toBeLessThan(TCP_IDLE_MS + 4_000);
    }
    // Both timers start together; the first to fire resets, the other side follows the stream reset.
    expect(counted).toBeGreaterThanOrEqual(1);
    expect(logged.length).toBe(counted);
    expect(logged[0]).toMatchObject({ outcome: 'idle timeout', idleTimeoutMs: TCP_IDLE_MS });
    const metrics = (await mesh.admin(h1, '/metrics')).body + (await mesh.admin(h2, '/metrics')).body;
    expect(metrics).toMatch(/qmesh_idle_timeouts_total\{side="(capture|inbound)"\} 1/);
  }, 60_000);
});
