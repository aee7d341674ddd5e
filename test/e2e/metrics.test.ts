// GET /metrics on a running 2-host mesh: the tunnel is up on both sides, the
// stream byte counters rise by at least what a function sent and received,
// promtool accepts the live exposition, and a real Prometheus server (Debian's
// `prometheus`, when installed) scrapes it and answers queries for the same
// series. Prometheus runs in host-1's namespace, scraping its loopback admin port.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ADMIN_PORT } from '../../daemon/demo/mesh.js';
import { destroyMesh, startMesh, type HostInfo, type Mesh } from '../support/e2e-mesh.js';
import { FnServer, fnClient, waitFor } from '../support/fn-net.js';
import { skipUnlessTool } from '../support/tools.js';

const RPC_PORT = 9100;
const REQUEST_BYTES = 256 * 1024;
const REPLY_BYTES = 512 * 1024;
const PROMETHEUS_PORT = 19090;
const TEST_MS = 30_000;

let mesh: Mesh;
let h1: HostInfo;
let h2: HostInfo;


beforeAll(async () => {
  mesh = await startMesh({ hosts: 2, functionsPerHost: 1 });
  [h1, h2] = mesh.hosts as [HostInfo, HostInfo];
  const f2 = h2.functions[0]!;
  await FnServer.start(mesh, f2.ns, 'rpc', { ip: f2.ip, port: RPC_PORT, replyBytes: REPLY_BYTES });
}, 60_000);

afterAll(async () => {
  await destroyMesh(mesh);
}, 60_000);

async function scrape(host: HostInfo): Promise<string> {
  const r = await mesh.admin(host, '/metrics');
  expect(r.status).toBe(200);
  return r.body;
}

/** The value of the one sample of `name` whose labels include every `labels` pair. */
function value(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = m[2] ?? '';
    if (Object.entries(labels).every(([k, v]) => have.includes(`${k}="${v}"`))) return Number(m[3]);
  }
  return undefined;
}

describe('GET /metrics', () => {
  it('shows the tunnel up both ways, an RTT, and process metrics', async () => {
    const [t1, t2] = [await scrape(h1), await scrape(h2)];
    expect(value(t1, 'qmesh_tunnel_up', { peer: h2.name, tunnel: 'outbound' })).toBe(1);
    expect(value(t2, 'qmesh_tunnel_up', { peer: h1.name, tunnel: 'outbound' })).toBe(1);
    expect(value(t1, 'qmesh_tunnel_handshakes_total', { peer: h2.name })).toBeGreaterThanOrEqual(1);
    // The binding reports RTT in whole milliseconds: on a veth it may well be 0.
    expect(value(t1, 'qmesh_tunnel_rtt_seconds', { peer: h2.name, tunnel: 'outbound' })).toBeGreaterThanOrEqual(0);
    expect(value(t1, 'qmesh_tunnel_congestion_window_bytes', { peer: h2.name, tunnel: 'outbound' })).toBeGreaterThan(0);
    expect(value(t1, 'qmesh_ready')).toBe(1);
    expect(value(t1, 'qmesh_process_open_fds')).toBeGreaterThan(0);
  }, TEST_MS);

  it('counts a function\'s bytes both ways on both hosts', async () => {
    const f2 = h2.functions[0]!;
    const out1 = { peer: h2.name, tunnel: 'outbound' };
    const in2 = { peer: h1.name, tunnel: 'inbound' };
    const [b1, b2] = [await scrape(h1), await scrape(h2)];
    const r = await fnClient(mesh, h1.functions[0]!.ns, 'rpc', { ip: f2.ip, port: RPC_PORT, requestBytes: REQUEST_BYTES, timeoutMs: 15_000 });
    expect(r).toMatchObject({ error: null, replyBytes: REPLY_BYTES });
    const [a1, a2] = [await scrape(h1), await scrape(h2)];
    const grew = (before: string, after: string, labels: Record<string, string>): number =>
      (value(after, 'qmesh_tunnel_stream_bytes_total', labels) ?? 0) - (value(before, 'qmesh_tunnel_stream_bytes_total', labels) ?? 0);
    expect(grew(b1, a1, { ...out1, direction: 'out' })).toBeGreaterThanOrEqual(REQUEST_BYTES);
    expect(grew(b1, a1, { ...out1, direction: 'in' })).toBeGreaterThanOrEqual(REPLY_BYTES);
    expect(grew(b2, a2, { ...in2, direction: 'in' })).toBeGreaterThanOrEqual(REQUEST_BYTES);
    expect(grew(b2, a2, { ...in2, direction: 'out' })).toBeGreaterThanOrEqual(REPLY_BYTES);
    expect(value(a1, 'qmesh_tunnel_streams_total', out1)).toBeGreaterThan(value(b1, 'qmesh_tunnel_streams_total', out1) ?? 0);
    expect(value(a1, 'qmesh_capture_accepted_total')).toBeGreaterThan(value(b1, 'qmesh_capture_accepted_total') ?? 0);
    expect(value(a2, 'qmesh_inbound_accepted_total')).toBeGreaterThan(value(b2, 'qmesh_inbound_accepted_total') ?? 0);
  }, TEST_MS);

  it.skipIf(skipUnlessTool('promtool', 'prometheus'))('passes promtool check metrics on the live output', async () => {
    const r = spawnSync('promtool', ['check', 'metrics'], { input: await scrape(h1), timeout: 10_000, encoding: 'utf8' });
    expect(r.stdout + r.stderr).toBe('');
    expect(r.status).toBe(0);
  }, TEST_MS);

  it.skipIf(skipUnlessTool('prometheus', 'prometheus'))('is scraped by a real Prometheus server whose query API returns tunnel-up and byte counters', async () => {
    const dir = path.join(mesh.dir, 'prometheus');
    fs.mkdirSync(dir);
    const configFile = path.join(dir, 'prometheus.yml');
    fs.writeFileSync(
      configFile,
      ['global:', '  scrape_interval: 1s', 'scrape_configs:', '  - job_name: qmesh', '    static_configs:', `      - targets: ['127.0.0.1:${ADMIN_PORT}']`, ''].join('\n'),
    );
    const child = mesh.topo.spawn(h1.ns, [
      'prometheus',
      `--config.file=${configFile}`,
      `--storage.tsdb.path=${path.join(dir, 'data')}`,
      `--web.listen-address=127.0.0.1:${PROMETHEUS_PORT}`,
      '--log.level=warn',
    ], { stdio: 'ignore' });
    try {
      const query = async (q: string): Promise<any[]> => {
        const r = await mesh.topo.exec(h1.ns, ['curl', '-s', '-m', '2', '--get', '--data-urlencode', `query=${q}`, `http://127.0.0.1:${PROMETHEUS_PORT}/api/v1/query`], { timeoutMs: 3_000 });
        const body = JSON.parse(r.stdout);
        return body.status === 'success' ? body.data.result : [];
      };
      const up = await waitFor(async () => (await query(`qmesh_tunnel_up{peer="${h2.name}",tunnel="outbound"}`))[0], 20_000, 'prometheus sample of qmesh_tunnel_up');
      expect(Number(up.value[1])).toBe(1);
      const bytes = await query(`qmesh_tunnel_stream_bytes_total{peer="${h2.name}",tunnel="outbound",direction="in"}`);
      expect(Number(bytes[0]?.value[1])).toBeGreaterThanOrEqual(REPLY_BYTES);
      const target = await mesh.topo.exec(h1.ns, ['curl', '-s', '-m', '2', `http://127.0.0.1:${PROMETHEUS_PORT}/api/v1/targets`], { timeoutMs: 3_000 });
      expect(JSON.parse(target.stdout).data.activeTargets[0]).toMatchObject({ health: 'up', lastError: '' });
    } finally {
      child.kill('SIGKILL');
    }
  }, TEST_MS);
});
