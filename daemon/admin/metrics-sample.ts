// Reads the running daemon's live objects into a MetricsSample for metrics.ts,
// once per scrape: the outbound tunnels (tunnel/tunnel-pool.ts), the connections
// peers dialled (tunnel/quic-listener.ts), capture and inbound counters.
import type { Daemon } from '../daemon.js';
import type { MetricsSample, TunnelSample } from './metrics.js';

const ZERO_TRAFFIC: TunnelSample['traffic'] = { streamsActive: 0, streamsTotal: 0, bytesSent: 0, bytesReceived: 0, datagramsSent: 0, datagramsReceived: 0 };

export function sampleDaemon(d: Daemon): MetricsSample {
  const tunnels: TunnelSample[] = [];
  for (const p of d.config.peers) {
    const t = d.pool?.tunnels.get(p.name);
    const out = t?.connection && t.connection.verified && !t.connection.closed ? t.connection : null;
    tunnels.push({
      peer: p.name,
      tunnel: 'outbound',
      up: t?.state === 'up',
      handshakes: t?.handshakes ?? 0,
      reconnects: t?.reconnects ?? 0,
      connection: out,
      path: out ? out.pathStats() : null,
      traffic: t?.traffic ?? ZERO_TRAFFIC,
    });
    const inConn = d.listener?.fromPeer.get(p.name);
    const live = inConn && !inConn.closed ? inConn : null;
    tunnels.push({
      peer: p.name,
      tunnel: 'inbound',
      up: live !== null,
      connection: live,
      path: live ? live.pathStats() : null,
      traffic: d.listener?.traffic.get(p.name) ?? ZERO_TRAFFIC,
    });
  }
  // deniedByPolicy: counted where policy/ is wired in; absent otherwise.
  const c = d.capture?.counters as (typeof d.capture.counters & { deniedByPolicy?: number }) | undefined;
  const i = d.inbound?.counters as (typeof d.inbound.counters & { deniedByPolicy?: number }) | undefined;
  return {
    ready: d.ready,
    certificateNotAfterMs: d.credentials?.notAfter.getTime() ?? null,
    tunnels,
    capture: c ? { accepted: c.accepted, refused: c.refused, deniedByPolicy: c.deniedByPolicy, limitHits: c.limitHits, idleTimeouts: c.idleTimeouts, closedByPolicy: c.closedByPolicy, active: c.active } : null,
    inbound: i ? { accepted: i.accepted, denied: i.denied, deniedByPolicy: i.deniedByPolicy, connectFailed: i.connectFailed, idleTimeouts: i.idleTimeouts, closedByPolicy: i.closedByPolicy, active: i.active } : null,
    quic: d.listener ? { droppedDatagrams: d.listener.droppedDatagrams, refusedHandshakes: d.listener.refusedHandshakes } : null,
  };
}
