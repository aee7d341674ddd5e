// Builds the /status document from the running daemon: each peer with its
// outbound tunnel (state, RTT, handshakes, reconnects) and the traffic both
// ways (streams and bytes), plus capture and inbound counters, all read from
// the data plane's counters (dataplane/) when scraped.
import { formatHostPort } from '../config/formats.js';
import type { Daemon } from '../daemon.js';
import { expiringSoon } from '../identity/validity.js';
import { trafficOf } from '../dataplane/native.js';

export function buildStatus(d: Daemon): unknown {
  const { config } = d;
  const stats = d.dataPlane?.stats() ?? null;
  const peers = config.peers.map((p) => {
    const s = stats?.peers.find((x) => x.name === p.name);
    const out = s?.outbound;
    const inn = s?.inbound;
    return {
      name: p.name,
      endpoint: formatHostPort(p.endpoint),
      cidrs: p.cidrs.map(String),
      state: out?.state ?? 'down',
      outbound: {
        state: out?.state ?? 'down',
        upSince: out?.upSinceMs ? new Date(out.upSinceMs).toISOString() : null,
        handshakes: out?.handshakes ?? 0,
        reconnects: out?.reconnects ?? 0,
        renewals: out?.renewals ?? 0,
        lastError: out?.lastError ?? null,
        rttMs: out?.state === 'up' && out.rttMs !== null ? out.rttMs : null,
        lostPackets: out?.lostPackets ?? 0,
        ...trafficOf(out),
      },
      inbound: {
        state: inn?.up ? 'up' : 'down',
        ...trafficOf(inn),
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
    capture: stats ? { ...stats.capture } : null,
    inbound: stats ? { ...stats.inbound } : null,
    // Connections held (handshaking or up) and what the listener refused: what an Initial flood would grow.
    quic: stats ? { ...stats.quic } : null,
    rules: rulesOf(d),
    membership: d.membership ? d.membership.status() : { source: 'file', peers: config.peers.length },
  };
}

/** The iptables rules as of the last drift look (iptables/rule-watch.ts). */
function rulesOf(d: Daemon): unknown {
  const h = d.rulesHealth();
  if (!h) return null;
  return { ok: h.ok, missing: h.missing, error: h.error, checkedAt: h.checkedAt?.toISOString() ?? null, drifts: h.drifts, repairs: h.repairs, checkErrors: h.checkErrors };
}
