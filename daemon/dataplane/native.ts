// The boundary with the data plane: the Rust crate in native/ (src/api.rs), built by
// `npm ci` into native/qmesh_native.node. A snapshot goes in (start, apply); counters
// (stats) and batched events (takeEvents) come out; drain and stop end it. Nothing
// crosses it per packet, and per flow only with debug logging.
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** What `start` and `apply` take: built from the validated config by snapshot.ts. */
export interface Snapshot {
  readonly node: string;
  readonly trustDomain: string;
  readonly listenQuic: string;
  readonly capturePort: number;
  readonly adminPort: number;
  readonly mark: number;
  readonly localCidrs: readonly string[];
  readonly peers: ReadonlyArray<{ readonly name: string; readonly endpoint: string; readonly cidrs: readonly string[] }>;
  readonly policy: {
    readonly default: 'allow' | 'deny';
    readonly rules: ReadonlyArray<{
      readonly name: string;
      readonly action: 'allow' | 'deny';
      readonly from: readonly string[] | null;
      readonly sourceCidrs: readonly string[] | null;
      readonly destinationCidrs: readonly string[] | null;
      readonly ports: ReadonlyArray<readonly [number, number]> | null;
    }>;
  };
  readonly tls: { readonly caPem: string; readonly certPem: string; readonly keyPem: string; readonly resetKeyHex: string };
  readonly tunnel: {
    readonly idleTimeoutMs: number;
    readonly keepAliveMs: number;
    readonly connectTimeoutMs: number;
    readonly reconnectMinMs: number;
    readonly reconnectMaxMs: number;
    readonly maxDatagramBytes: number;
    readonly maxStreams: number;
    readonly congestionControl: string;
    readonly addressValidation: string;
    readonly maxHandshakes: number;
    readonly maxHandshakesPerSource: number;
  };
  readonly capture: { readonly maxConnections: number; readonly maxConnectionsPerSource: number; readonly idleTimeoutMs: number };
  readonly deniedConnections: 'close' | 'finish';
  readonly logFlows: boolean;
}

export interface TrafficStats {
  readonly streamsActive: number;
  readonly streamsTotal: number;
  readonly bytesSent: number;
  readonly bytesReceived: number;
  readonly datagramsSent: number;
  readonly datagramsReceived: number;
}

/** A link's traffic counters, zero when the data plane reports none (peer just added, or stopped). */
export function trafficOf(t: TrafficStats | undefined): TrafficStats {
  return {
    streamsActive: t?.streamsActive ?? 0,
    streamsTotal: t?.streamsTotal ?? 0,
    bytesSent: t?.bytesSent ?? 0,
    bytesReceived: t?.bytesReceived ?? 0,
    datagramsSent: t?.datagramsSent ?? 0,
    datagramsReceived: t?.datagramsReceived ?? 0,
  };
}

export interface LinkStats extends TrafficStats {
  readonly up: boolean;
  readonly rttMs: number | null;
  readonly cwnd: number | null;
  readonly lostPackets: number;
}

export interface OutboundStats extends LinkStats {
  readonly state: 'connecting' | 'up' | 'down' | 'stopped';
  readonly upSinceMs: number | null;
  readonly handshakes: number;
  readonly reconnects: number;
  readonly renewals: number;
  readonly lastError: string | null;
}

export interface DataPlaneStats {
  readonly peers: ReadonlyArray<{ readonly name: string; readonly outbound: OutboundStats; readonly inbound: LinkStats }>;
  readonly capture: { accepted: number; refused: number; deniedByPolicy: number; limitHits: number; sourceLimitHits: number; idleTimeouts: number; closedByPolicy: number; active: number };
  readonly inbound: { accepted: number; denied: number; deniedByPolicy: number; connectFailed: number; idleTimeouts: number; closedByPolicy: number; active: number; limitHits: number };
  readonly quic: { droppedDatagrams: number; refusedHandshakes: number; retriesSent: number; handshaking: number; connections: number };
  readonly flowsOpen: number;
}

export interface DataPlaneEvent {
  readonly level: 'debug' | 'info' | 'warn' | 'error';
  readonly component: string;
  readonly msg: string;
  readonly fields: Record<string, unknown>;
}

/** The addon's class (native/src/api.rs); every method is synchronous. Errors read "QMESH_ERR_…: reason". */
export interface NativeDataPlane {
  apply(snapshotJson: string): void;
  stats(): string;
  takeEvents(): string;
  drain(): void;
  openFlows(): number;
  stop(): number;
}

export interface Addon {
  DataPlane: { start(snapshotJson: string): NativeDataPlane };
  /** Checks a snapshot exactly as start/apply would, without running anything; throws why it is refused. */
  checkSnapshot(snapshotJson: string): void;
  /** One datagram to systemd's notify socket (a path, or '@name' in the abstract namespace); bytes sent. */
  sdNotify(path: string, message: string): number;
}

const here = path.dirname(fileURLToPath(import.meta.url));
// From dist/daemon/dataplane or (under vitest) daemon/dataplane to the package root's native/.
const CANDIDATES = [path.resolve(here, '../../../native/qmesh_native.node'), path.resolve(here, '../../native/qmesh_native.node')];

let addon: Addon | null = null;

export function loadAddon(): Addon {
  if (addon) return addon;
  const require = createRequire(import.meta.url);
  let lastError = '';
  for (const p of CANDIDATES) {
    try {
      addon = require(p) as Addon;
      return addon;
    } catch (err) {
      lastError = String(err);
    }
  }
  throw new Error(`qmesh data plane addon not found (run \`npm ci\` or \`npm run build:native\`; it needs cargo): ${lastError}`);
}

/** The addon, or null when it is not built. */
export function tryAddon(): Addon | null {
  try {
    return loadAddon();
  } catch {
    return null;
  }
}
