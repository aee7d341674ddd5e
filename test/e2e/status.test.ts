// `qmesh status` as an operator runs it on a host: a table of peers with tunnel
// health and traffic (exit 0), the same as JSON with --json, a peer whose daemon
// stopped shown as not up, and one stderr line with exit 1 when the local
// daemon is not running.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, QUIC_PORT } from '../../daemon/demo/mesh.js';
import { destroyMesh, outboundState, startMesh, type HostInfo, type Mesh } from '../support/e2e-mesh.js';
import { FnServer, fnClient, waitFor } from '../support/fn-net.js';

const RPC_PORT = 9200;
const REPLY_BYTES = 300 * 1024;
const TEST_MS = 30_000;

let mesh: Mesh;
let h1: HostInfo;
let h2: HostInfo;

beforeAll(async () => {
  mesh = await startMesh({ hosts: 2, functionsPerHost: 1 });
  [h1, h2] = mesh.hosts as [HostInfo, HostInfo];
  const f2 = h2.functions[0]!;
  await FnServer.start(mesh, f2.ns, 'rpc', { ip: f2.ip, port: RPC_PORT, replyBytes: REPLY_BYTES });
  const r = await fnClient(mesh, h1.functions[0]!.ns, 'rpc', { ip: f2.ip, port: RPC_PORT, requestBytes: 1024, timeoutMs: 10_000 });
  if (r.error) throw new Error(`traffic before the status checks failed: ${r.error}`);
}, 60_000);

afterAll(async () => {
  await destroyMesh(mesh);
}, 60_000);

/** `qmesh status` on `host`, inside its namespace (the admin listener is on its loopback). */
async function status(host: HostInfo, ...extra: string[]) {
  return mesh.topo.exec(host.ns, [process.execPath, CLI, 'status', '--config', mesh.configPath(host), ...extra], { timeoutMs: 10_000 });
}

describe('qmesh status', () => {
  it('prints a table with the peer, its endpoint, both tunnels up, an RTT and the bytes', async () => {
    const r = await status(h1);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`^node ${h1.name}: ready, up \\d+`, 'm'));
    expect(r.stdout).toMatch(/^PEER\s+ENDPOINT\s+OUTBOUND\s+RTT\s+STREAMS\s+BYTES IN\s+BYTES OUT\s+INBOUND$/m);
    const row = r.stdout.split('\n').find((l) => l.startsWith(`${h2.name} `));
    expect(row, r.stdout).toBeDefined();
    expect(row!.split(/\s{2,}/)).toEqual([h2.name, `${h2.underlayIp}:${QUIC_PORT}`, 'up', expect.stringMatching(/^\d+(\.\d+)? ms$/), expect.stringMatching(/^0\/[1-9]\d*$/), expect.stringMatching(/^3\d\d\.\d KiB$/), expect.stringMatching(/ (B|KiB)$/), 'up']);
  }, TEST_MS);

  it('prints the /status document with --json', async () => {
    const r = await status(h1, '--json');
    expect(r.code).toBe(0);
    const doc = JSON.parse(r.stdout);
    expect(doc).toMatchObject({ node: h1.name, ready: true, peers: [{ name: h2.name, outbound: { state: 'up' }, inbound: { state: 'up' } }] });
    expect(doc.peers[0].outbound.bytesReceived).toBeGreaterThanOrEqual(REPLY_BYTES);
  }, TEST_MS);

  it('shows a peer whose daemon stopped as not up, and still exits 0', async () => {
    await mesh.stopDaemon(h2);
    await waitFor(async () => (await outboundState(mesh, h1, h2)) !== 'up', 10_000, 'host-1 notices host-2 is gone');
    const r = await status(h1);
    expect(r.code).toBe(0);
    const row = r.stdout.split('\n').find((l) => l.startsWith(`${h2.name} `))!;
    expect(row.split(/\s{2,}/)[2]).toMatch(/^(down|connecting)$/);
  }, TEST_MS);

  it('exits 1 with one line naming the admin address when the daemon is not running', async () => {
    await mesh.stopDaemon(h1);
    const r = await status(h1);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/^qmesh: QMESH_ERR_ADMIN_UNREACHABLE: qmesh is not reachable on its admin listener 127\.0\.0\.1:15000 \(ECONNREFUSED\)/);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
  }, TEST_MS);
});
