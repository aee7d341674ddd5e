// Reads the data plane's counters (dataplane/) into a MetricsSample for metrics.ts,
// once per scrape: both tunnels of each peer, capture, inbound and QUIC counters.
import type { Daemon } from '../daemon.js';
import { trafficOf } from '../dataplane/native.js';
import type { MetricsSample, TunnelSample } from './metrics.js';

export function sampleDaemon(d: Daemon): MetricsSample {
  const stats = d.dataPlane?.stats() ?? null;
  const tunnels: TunnelSample[] = [];
  for (const p of d.config.peers) {
    const s = stats?.peers.find((x) => x.name === p.name);
    const out = s?.outbound;
    const inn = s?.inbound;
    const path = (t: typeof inn) => (t?.up && t.rttMs !== null ? { rttMs: t.rttMs, cwnd: t.cwnd ?? 0, lost: t.lostPackets } : null);
    tunnels.push({
      peer: p.name,
      tunnel: 'outbound',
      up: out?.state === 'up',
      handshakes: out?.handshakes ?? 0,
      reconnects: out?.reconnects ?? 0,
      lostTotal: out?.lostPackets ?? 0,
      path: out?.state === 'up' ? path(out) : null,
      traffic: trafficOf(out),
    });
    tunnels.push({ peer: p.name, tunnel: 'inbound', up: inn?.up ?? false, lostTotal: inn?.lostPackets ?? 0, path: path(inn), traffic: trafficOf(inn) });
  }
  return {
    ready: d.ready,
    certificateNotAfterMs: d.credentials?.notAfter.getTime() ?? null,
    tunnels,
    capture: stats ? stats.capture : null,
    inbound: stats ? stats.inbound : null,
    quic: stats ? stats.quic : null,
    rules: d.rulesHealth(),
    membership: membershipOf(d),
  };
}

function membershipOf(d: Daemon): MetricsSample['membership'] {
  const m = d.membership?.status();
  if (!m) return null;
  return { ageSeconds: m.ageSeconds, watching: m.watching, registered: m.registered, admitted: m.admitted.length, refused: m.refused.length };
}
