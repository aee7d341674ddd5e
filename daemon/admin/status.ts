// Builds the /status document from the running daemon: each peer with its
// outbound tunnel (state, RTT, handshakes, reconnects) and the traffic both
// ways (streams and bytes), plus capture and inbound counters.
import { formatHostPort } from '../config/formats.js';
import type { Daemon } from '../daemon.js';
import { expiringSoon } from '../identity/validity.js';

export function buildStatus(d: Daemon): unknown {
  const { config } = d;
  const peers = config.peers.map((p) => {
    const t = d.pool?.tunnels.get(p.name);
    const inConn = d.listener?.fromPeer.get(p.name);
    const inTraffic = d.listener?.traffic.get(p.name);
    const path = t?.connection?.verified ? t.connection.pathStats() : null;
    return {
      name: p.name,
      endpoint: formatHostPort(p.endpoint),
      cidrs: p.cidrs.map(String),
      state: t?.state ?? 'down',
      outbound: {
        state: t?.state ?? 'down',
        upSince: t?.upSince ? new Date(t.upSince).toISOString() : null,
        handshakes: t?.handshakes ?? 0,
        reconnects: t?.reconnects ?? 0,
        renewals: t?.renewals ?? 0,
        lastError: t?.lastError ?? null,
        rttMs: path ? Number(path.rttMs.toFixed(3)) : null,
        lostPackets: path?.lost ?? 0,
        streamsActive: t?.traffic.streamsActive ?? 0,
        streamsTotal: t?.traffic.streamsTotal ?? 0,
        bytesSent: t?.traffic.bytesSent ?? 0,
        bytesReceived: t?.traffic.bytesReceived ?? 0,
        datagramsSent: t?.traffic.datagramsSent ?? 0,
        datagramsReceived: t?.traffic.datagramsReceived ?? 0,
      },
      inbound: {
        state: inConn && !inConn.closed ? 'up' : 'down',
        streamsActive: inTraffic?.streamsActive ?? 0,
        streamsTotal: inTraffic?.streamsTotal ?? 0,
        bytesSent: inTraffic?.bytesSent ?? 0,
        bytesReceived: inTraffic?.bytesReceived ?? 0,
        datagramsSent: inTraffic?.datagramsSent ?? 0,
        datagramsReceived: inTraffic?.datagramsReceived ?? 0,
      },
    };
  });
  return {
    node: config.node.name,
    identity: d.credentials?.identity ?? null,
    certificateNotAfter: d.credentials?.notAfter.toISOString() ?? null,
    certificate: d.credentials
      ? {
          identity: d.credentials.identity,
          notBefore: d.credentials.notBefore.toISOString(),
          notAfter: d.credentials.notAfter.toISOString(),
          expiresInSeconds: Math.round((d.credentials.notAfter.getTime() - Date.now()) / 1000),
          expiringSoon: expiringSoon(d.credentials),
        }
      : null,
    ready: d.ready,
    uptimeSeconds: Math.round((Date.now() - d.startedAt) / 1000),
    listen: { quic: formatHostPort(config.listen.quic), capture: config.listen.capture },
    peers,
    capture: d.capture ? { ...d.capture.counters } : null,
    inbound: d.inbound ? { ...d.inbound.counters } : null,
    quic: d.listener
      ? {
          droppedDatagrams: d.listener.droppedDatagrams,
          refusedHandshakes: d.listener.refusedHandshakes,
          retriesSent: d.listener.retriesSent,
          // quiche connections the listener holds (handshaking or up): what an Initial flood would grow.
          connections: d.listener.connections().length,
          handshaking: d.listener.handshakesInProgress,
        }
      : null,
  };
}
