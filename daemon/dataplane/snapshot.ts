// Builds the snapshot the data plane runs on (native.ts) from the validated config and
// the loaded credentials. The data plane checks it again; this only changes its shape.
import type { Config } from '../config/load.js';
import { formatHostPort } from '../config/formats.js';
import type { Credentials } from '../identity/credentials.js';
import type { Snapshot } from './native.js';

/** Handshakes in flight from one peer address: its dial, a make-before-break renewal, and a restart's. */
const HANDSHAKES_PER_SOURCE = 4;

export function buildSnapshot(config: Config, credentials: Credentials): Snapshot {
  const text = (pem: Uint8Array): string => Buffer.from(pem).toString('utf8');
  return {
    node: config.node.name,
    trustDomain: config.tls.trustDomain,
    listenQuic: formatHostPort(config.listen.quic),
    capturePort: config.listen.capture,
    adminPort: config.listen.admin.port,
    mark: config.capture.mark,
    localCidrs: config.local.cidrs.map(String),
    peers: config.peers.map((p) => ({ name: p.name, endpoint: formatHostPort(p.endpoint), cidrs: p.cidrs.map(String) })),
    policy: {
      default: config.policy.default,
      rules: config.policy.rules.map((r) => ({
        name: r.name,
        action: r.action,
        from: r.from ? [...r.from] : null,
        sourceCidrs: r.sourceCidrs ? r.sourceCidrs.map(String) : null,
        destinationCidrs: r.destinationCidrs ? r.destinationCidrs.map(String) : null,
        ports: r.ports ? r.ports.map((p) => [p.first, p.last] as const) : null,
      })),
    },
    tls: { caPem: text(credentials.caPem), certPem: text(credentials.certPem), keyPem: text(credentials.keyPem), resetKeyHex: credentials.resetKey.toString('hex') },
    tunnel: {
      idleTimeoutMs: config.tunnel.idleTimeoutMs,
      keepAliveMs: config.tunnel.keepAliveMs,
      connectTimeoutMs: config.tunnel.connectTimeoutMs,
      reconnectMinMs: config.tunnel.reconnectMinMs,
      reconnectMaxMs: config.tunnel.reconnectMaxMs,
      maxDatagramBytes: config.tunnel.maxDatagramBytes,
      maxStreams: config.tunnel.maxStreams,
      congestionControl: config.tunnel.congestionControl,
      addressValidation: config.tunnel.addressValidation,
      maxHandshakes: Math.max(8, config.peers.length * 2),
      maxHandshakesPerSource: HANDSHAKES_PER_SOURCE,
    },
    capture: { maxConnections: config.capture.maxConnections, maxConnectionsPerSource: config.capture.maxConnectionsPerSource, idleTimeoutMs: config.capture.idleTimeoutMs },
    deniedConnections: config.reload.deniedConnections,
    logFlows: config.log.level === 'debug' || config.log.level === 'trace',
  };
}
