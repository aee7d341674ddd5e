// GET /metrics: the Prometheus text exposition (prom-client, a registry of its
// own). Receives a MetricsSample (metrics-sample.ts builds it from the running
// daemon) at scrape time through collect() callbacks: nothing on the data path
// is instrumented. admin-server.ts serves what scrape() returns.
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';

export const METRIC_PREFIX = 'qmesh_';

/** One QUIC connection to a peer: the one this host dialled (outbound) or the one the peer dialled (inbound). */
export interface TunnelSample {
  readonly peer: string;
  readonly tunnel: 'outbound' | 'inbound';
  readonly up: boolean;
  /** Only the outbound side dials, so only it counts handshakes and re-dials. */
  readonly handshakes?: number;
  readonly reconnects?: number;
  /** Packets declared lost on connections to the peer, summed over re-dials (monotonic). */
  readonly lostTotal: number;
  readonly path: { readonly rttMs: number; readonly cwnd: number; readonly lost: number } | null;
  readonly traffic: {
    readonly streamsActive: number;
    readonly streamsTotal: number;
    readonly bytesSent: number;
    readonly bytesReceived: number;
    readonly datagramsSent: number;
    readonly datagramsReceived: number;
  };
}

export interface MetricsSample {
  readonly ready: boolean;
  readonly certificateNotAfterMs: number | null;
  readonly tunnels: readonly TunnelSample[];
  readonly capture: { readonly accepted: number; readonly refused: number; readonly deniedByPolicy?: number; readonly limitHits?: number; readonly idleTimeouts?: number; readonly closedByPolicy?: number; readonly active: number } | null;
  readonly inbound: { readonly accepted: number; readonly denied: number; readonly deniedByPolicy?: number; readonly connectFailed: number; readonly idleTimeouts?: number; readonly closedByPolicy?: number; readonly limitHits?: number; readonly active: number } | null;
  readonly quic: { readonly droppedDatagrams: number; readonly refusedHandshakes: number } | null;
  /** The iptables rules' health (iptables/rule-watch.ts); null when the daemon does not watch them. */
  readonly rules: { readonly ok: boolean; readonly drifts: number; readonly repairs: number; readonly checkErrors: number } | null;
  /** membership.source "etcd" (membership/membership.ts); null with "file". */
  readonly membership: { readonly ageSeconds: number; readonly watching: boolean; readonly registered: boolean; readonly admitted: number; readonly refused: number } | null;
}

type TunnelLabels = 'peer' | 'tunnel';
type Labels = Record<string, string>;
type Value = number | null | undefined;
const finite = (v: Value): v is number => typeof v === 'number' && Number.isFinite(v);

export class MetricsRegistry {
  readonly registry = new Registry();
  private current: MetricsSample | null = null;

  constructor(private readonly sample: () => MetricsSample) {
    const r = this.registry;
    // Event-loop lag, heap and RSS, open file descriptors, CPU, GC: prefixed qmesh_.
    collectDefaultMetrics({ register: r, prefix: METRIC_PREFIX });
    // prom-client names three gauges *_total, which Prometheus reserves for counters
    // (promtool check metrics flags them); the per-type nodejs_active_* gauges stay.
    for (const name of ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total']) r.removeSingleMetric(METRIC_PREFIX + name);

    this.gauge('ready', 'Whether the daemon is ready (1, as GET /healthz answers 200) or not (0).', [], (s) => [[{}, s.ready ? 1 : 0]]);
    this.gauge('certificate_expiry_timestamp_seconds', 'When this host\'s certificate expires, seconds since the Unix epoch.', [], (s) =>
      s.certificateNotAfterMs === null ? [] : [[{}, s.certificateNotAfterMs / 1000]],
    );

    const perTunnel = (value: (t: TunnelSample) => Value, only?: TunnelSample['tunnel']) => (s: MetricsSample): Array<[Labels, Value]> =>
      s.tunnels.filter((t) => !only || t.tunnel === only).map((t) => [{ peer: t.peer, tunnel: t.tunnel }, value(t)]);
    const tl: TunnelLabels[] = ['peer', 'tunnel'];
    this.gauge('tunnel_up', 'Whether the QUIC connection to the peer is up (1) or not (0).', tl, perTunnel((t) => (t.up ? 1 : 0)));
    this.counter('tunnel_handshakes_total', 'Handshakes this host completed as client towards the peer.', tl, perTunnel((t) => t.handshakes, 'outbound'));
    this.counter('tunnel_reconnects_total', 'Times this host re-dialled the peer after losing its tunnel.', tl, perTunnel((t) => t.reconnects, 'outbound'));
    this.gauge('tunnel_rtt_seconds', 'Smoothed round-trip time of the connection (QUIC path stats); absent while it is down.', tl, perTunnel((t) => (t.path && t.up ? t.path.rttMs / 1000 : null)));
    this.gauge('tunnel_congestion_window_bytes', 'Congestion window of the connection; absent while it is down.', tl, perTunnel((t) => (t.path && t.up ? t.path.cwnd : null)));
    this.counter('tunnel_lost_packets_total', 'Packets declared lost on connections to the peer, summed over re-dials.', tl, perTunnel((t) => t.lostTotal));
    this.gauge('tunnel_streams_active', 'Streams (tunnelled TCP connections) open on the connection.', tl, perTunnel((t) => t.traffic.streamsActive));
    this.counter('tunnel_streams_total', 'Streams (tunnelled TCP connections) opened on the connection.', tl, perTunnel((t) => t.traffic.streamsTotal));
    const directions = (sent: (t: TunnelSample) => number, received: (t: TunnelSample) => number) => (s: MetricsSample): Array<[Labels, Value]> =>
      s.tunnels.flatMap((t): Array<[Labels, Value]> => [
        [{ peer: t.peer, tunnel: t.tunnel, direction: 'out' }, sent(t)],
        [{ peer: t.peer, tunnel: t.tunnel, direction: 'in' }, received(t)],
      ]);
    const tdl = ['peer', 'tunnel', 'direction'];
    this.counter('tunnel_stream_bytes_total', 'Stream payload bytes (TCP payload) towards the peer (out) and from it (in).', tdl, directions((t) => t.traffic.bytesSent, (t) => t.traffic.bytesReceived));
    this.counter('tunnel_datagrams_total', 'UDP datagrams sent to (out) and received from (in) the peer.', tdl, directions((t) => t.traffic.datagramsSent, (t) => t.traffic.datagramsReceived));

    this.counter('capture_accepted_total', 'Captured TCP connections handed to a tunnel.', [], (s) => [[{}, s.capture?.accepted]]);
    this.counter('capture_limit_hits_total', 'Captured TCP connections reset because capture.maxConnections (or, from one source, capture.maxConnectionsPerSource) were open.', [], (s) => [[{}, s.capture?.limitHits]]);
    this.counter('capture_refused_total', 'Captured TCP connections reset: no original destination, local or unknown destination, or tunnel down.', [], (s) => [[{}, s.capture?.refused]]);
    this.counter('capture_denied_by_policy_total', 'Captured TCP connections reset because this host\'s policy denies them: they never left the host.', [], (s) => [[{}, s.capture?.deniedByPolicy]]);
    this.counter('idle_timeouts_total', 'Tunnelled TCP connections reset after capture.idleTimeoutMs without a byte, by the side that timed out (capture or inbound).', ['side'], (s) => [
      [{ side: 'capture' }, s.capture?.idleTimeouts],
      [{ side: 'inbound' }, s.inbound?.idleTimeouts],
    ]);
    this.gauge('capture_connections_active', 'Captured TCP connections open now.', [], (s) => [[{}, s.capture?.active]]);
    this.counter('inbound_accepted_total', 'Inbound streams delivered to a local destination.', [], (s) => [[{}, s.inbound?.accepted]]);
    this.counter('inbound_denied_total', 'Inbound streams refused: destination outside local.cidrs, source outside the peer\'s cidrs, bad header, draining.', [], (s) => [[{}, s.inbound?.denied]]);
    this.counter('inbound_denied_by_policy_total', 'Inbound streams refused by the policy.', [], (s) => [[{}, s.inbound?.deniedByPolicy]]);
    this.counter('inbound_limit_hits_total', 'Inbound streams reset because their peer had tunnel.maxStreams connections open towards this host.', [], (s) => [[{}, s.inbound?.limitHits]]);
    this.counter('closed_by_policy_total', 'Open connections reset because a reloaded policy denies them (reload.deniedConnections close).', ['direction'], (s) => [
      [{ direction: 'outbound' }, s.capture?.closedByPolicy],
      [{ direction: 'inbound' }, s.inbound?.closedByPolicy],
    ]);
    this.counter('inbound_connect_failed_total', 'Inbound streams whose TCP connect to the local destination failed.', [], (s) => [[{}, s.inbound?.connectFailed]]);
    this.gauge('inbound_connections_active', 'Inbound streams being delivered now.', [], (s) => [[{}, s.inbound?.active]]);
    this.counter('quic_dropped_datagrams_total', 'Connection attempts dropped before any state: not from a configured peer, or not accepted by QUIC.', [], (s) => [[{}, s.quic?.droppedDatagrams]]);
    this.gauge('iptables_rules_ok', 'Whether the iptables capture and fail-closed rules were in place at the last look (1) or missing or unreadable (0).', [], (s) => [[{}, s.rules ? (s.rules.ok ? 1 : 0) : null]]);
    this.counter('iptables_drift_total', 'Looks (every capture.ruleCheckIntervalMs, and at /healthz) that found the iptables rules drifted from the configuration.', [], (s) => [[{}, s.rules?.drifts]]);
    this.counter('iptables_repairs_total', 'Times drifted iptables rules were put back (capture.applyRules).', [], (s) => [[{}, s.rules?.repairs]]);
    this.counter('iptables_check_errors_total', 'Looks that could not read the iptables rules.', [], (s) => [[{}, s.rules?.checkErrors]]);
    this.gauge('membership_age_seconds', 'Seconds since etcd last confirmed the membership in force (0 while the watch is up and reads succeed; since start if etcd was never read); it grows while etcd is unreachable, and the last membership stays in force.', [], (s) => [[{}, s.membership?.ageSeconds]]);
    this.gauge('membership_etcd_watching', 'Whether the watch on the etcd prefix is established (1) or reconnecting (0).', [], (s) => [[{}, s.membership ? (s.membership.watching ? 1 : 0) : null]]);
    this.gauge('membership_etcd_registered', 'Whether this host\'s entry is written under a live lease (1) or being registered again (0).', [], (s) => [[{}, s.membership ? (s.membership.registered ? 1 : 0) : null]]);
    this.gauge('membership_peers', 'Peers admitted from etcd entries.', [], (s) => [[{}, s.membership?.admitted]]);
    this.gauge('membership_refused_entries', 'etcd entries refused (bad entry, name or identity mismatch, a claim that conflicts with an earlier host).', [], (s) => [[{}, s.membership?.refused]]);
    this.counter('quic_refused_handshakes_total', 'Handshakes the QUIC listener refused (peer identity, limits).', [], (s) => [[{}, s.quic?.refusedHandshakes]]);
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  /** The exposition text; the daemon is sampled once per scrape. */
  async scrape(): Promise<string> {
    this.current = this.sample();
    try {
      return await this.registry.metrics();
    } finally {
      this.current = null;
    }
  }

  private now(): MetricsSample {
    return this.current ?? this.sample();
  }

  private gauge(name: string, help: string, labelNames: string[], values: (s: MetricsSample) => Array<[Labels, Value]>): void {
    const self = this;
    new Gauge({
      name: METRIC_PREFIX + name,
      help,
      labelNames,
      registers: [this.registry],
      collect() {
        this.reset();
        for (const [labels, v] of values(self.now())) if (finite(v)) this.set(labels, v);
      },
    });
  }

  private counter(name: string, help: string, labelNames: string[], values: (s: MetricsSample) => Array<[Labels, Value]>): void {
    const self = this;
    new Counter({
      name: METRIC_PREFIX + name,
      help,
      labelNames,
      registers: [this.registry],
      collect() {
        this.reset();
        for (const [labels, v] of values(self.now())) if (finite(v)) this.inc(labels, v);
      },
    });
  }
}
