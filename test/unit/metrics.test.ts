// daemon/admin/metrics.ts: a scrape of a fake daemon sample is valid Prometheus
// text (every sample line parses; promtool check metrics passes when promtool is
// installed), names every metric qmesh documents, and keeps counters monotonic.
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { MetricsRegistry, type MetricsSample, type TunnelSample } from '../../daemon/admin/metrics.js';
import { skipUnlessTool } from '../support/tools.js';

const traffic = (n: number): TunnelSample['traffic'] => ({ streamsActive: 1, streamsTotal: n, bytesSent: 100 * n, bytesReceived: 200 * n, datagramsSent: n, datagramsReceived: n });

function sample(over: Partial<MetricsSample> = {}, conn: object | null = {}, lost = 3): MetricsSample {
  return {
    ready: true,
    certificateNotAfterMs: Date.parse('2030-01-01T00:00:00Z'),
    tunnels: [
      { peer: 'host-2', tunnel: 'outbound', up: conn !== null, handshakes: 2, reconnects: 1, lostTotal: lost, path: conn ? { rttMs: 1.5, cwnd: 13500, lost } : null, traffic: traffic(4) },
      { peer: 'host-2', tunnel: 'inbound', up: false, lostTotal: 0, path: null, traffic: traffic(0) },
    ],
    capture: { accepted: 5, refused: 1, deniedByPolicy: 3, active: 0 },
    inbound: { accepted: 7, denied: 2, deniedByPolicy: 4, connectFailed: 1, active: 0, limitHits: 1 },
    quic: { droppedDatagrams: 0, refusedHandshakes: 0 },
    rules: { ok: false, drifts: 2, repairs: 1, checkErrors: 0 },
    ...over,
  };
}

const METRIC_NAMES = [
  'qmesh_ready',
  'qmesh_certificate_expiry_timestamp_seconds',
  'qmesh_tunnel_up',
  'qmesh_tunnel_handshakes_total',
  'qmesh_tunnel_reconnects_total',
  'qmesh_tunnel_rtt_seconds',
  'qmesh_tunnel_congestion_window_bytes',
  'qmesh_tunnel_lost_packets_total',
  'qmesh_tunnel_streams_active',
  'qmesh_tunnel_streams_total',
  'qmesh_tunnel_stream_bytes_total',
  'qmesh_tunnel_datagrams_total',
  'qmesh_capture_accepted_total',
  'qmesh_capture_refused_total',
  'qmesh_capture_limit_hits_total',
  'qmesh_capture_denied_by_policy_total',
  'qmesh_capture_connections_active',
  'qmesh_inbound_accepted_total',
  'qmesh_inbound_denied_total',
  'qmesh_inbound_denied_by_policy_total',
  'qmesh_inbound_limit_hits_total',
  'qmesh_inbound_connect_failed_total',
  'qmesh_inbound_connections_active',
  'qmesh_quic_dropped_datagrams_total',
  'qmesh_quic_refused_handshakes_total',
  'qmesh_iptables_rules_ok',
  'qmesh_iptables_drift_total',
  'qmesh_iptables_repairs_total',
  'qmesh_iptables_check_errors_total',
  'qmesh_process_open_fds',
  'qmesh_process_resident_memory_bytes',
  'qmesh_nodejs_eventloop_lag_seconds',
  'qmesh_nodejs_heap_size_used_bytes',
];

/** Parses the text exposition: name -> list of [labels, value]; throws on a line that does not parse. */
function parseExposition(text: string): Map<string, Array<[Record<string, string>, number]>> {
  const out = new Map<string, Array<[Record<string, string>, number]>>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$/.exec(line);
    if (!m) throw new Error(`unparseable exposition line: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of (m[3] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!;
    const value = Number(m[4] === '+Inf' ? Infinity : m[4] === '-Inf' ? -Infinity : m[4]);
    if (Number.isNaN(value) && m[4]!.toLowerCase() !== 'nan') throw new Error(`bad value: ${line}`);
    const list = out.get(m[1]!) ?? [];
    list.push([labels, value]);
    out.set(m[1]!, list);
  }
  return out;
}

const valueOf = (m: ReturnType<typeof parseExposition>, name: string, labels: Record<string, string> = {}): number | undefined =>
  m.get(name)?.find(([l]) => Object.entries(labels).every(([k, v]) => l[k] === v))?.[1];

describe('metrics exposition', () => {
  it('parses and carries every qmesh metric with its values', async () => {
    const text = await new MetricsRegistry(() => sample()).scrape();
    const m = parseExposition(text);
    for (const name of METRIC_NAMES) expect(text, name).toContain(`# TYPE ${name} `);
    expect(valueOf(m, 'qmesh_tunnel_up', { peer: 'host-2', tunnel: 'outbound' })).toBe(1);
    expect(valueOf(m, 'qmesh_tunnel_up', { peer: 'host-2', tunnel: 'inbound' })).toBe(0);
    expect(valueOf(m, 'qmesh_tunnel_rtt_seconds', { tunnel: 'outbound' })).toBeCloseTo(0.0015);
    expect(valueOf(m, 'qmesh_tunnel_rtt_seconds', { tunnel: 'inbound' }), 'no RTT while down').toBeUndefined();
    expect(valueOf(m, 'qmesh_tunnel_stream_bytes_total', { tunnel: 'outbound', direction: 'out' })).toBe(400);
    expect(valueOf(m, 'qmesh_tunnel_stream_bytes_total', { tunnel: 'outbound', direction: 'in' })).toBe(800);
    expect(valueOf(m, 'qmesh_tunnel_handshakes_total', { tunnel: 'outbound' })).toBe(2);
    expect(valueOf(m, 'qmesh_tunnel_handshakes_total', { tunnel: 'inbound' }), 'only the dialling side handshakes').toBeUndefined();
    expect(valueOf(m, 'qmesh_capture_accepted_total')).toBe(5);
    expect(valueOf(m, 'qmesh_inbound_connect_failed_total')).toBe(1);
    expect(valueOf(m, 'qmesh_capture_denied_by_policy_total')).toBe(3);
    expect(valueOf(m, 'qmesh_inbound_denied_by_policy_total')).toBe(4);
    expect(valueOf(m, 'qmesh_certificate_expiry_timestamp_seconds')).toBe(1893456000);
    expect(m.get('qmesh_process_open_fds')?.[0]?.[1]).toBeGreaterThan(0);
  });

  it('reports the data plane\'s lost-packet total (summed over re-dials there), also while the tunnel is down', async () => {
    let current = sample({}, {}, 5);
    const reg = new MetricsRegistry(() => current);
    const lost = async (): Promise<number | undefined> => valueOf(parseExposition(await reg.scrape()), 'qmesh_tunnel_lost_packets_total', { tunnel: 'outbound' });
    expect(await lost()).toBe(5);
    current = sample({}, null, 5); // tunnel down: the total stays
    expect(await lost()).toBe(5);
    current = sample({}, {}, 7);
    expect(await lost()).toBe(7);
  });

  it('passes promtool check metrics (when Debian\'s prometheus package is installed)', async (ctx) => {
    if (skipUnlessTool('promtool', 'prometheus')) return ctx.skip();
    const text = await new MetricsRegistry(() => sample()).scrape();
    const r = spawnSync('promtool', ['check', 'metrics'], { input: text, timeout: 10_000, encoding: 'utf8' });
    expect(r.stdout + r.stderr).toBe('');
    expect(r.status).toBe(0);
  });
});
