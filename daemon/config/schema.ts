// The one convict schema for qmesh's JSON config: every key has doc, format,
// default and an env name. config/load.ts validates a file against it and
// hands a frozen, typed Config to main.ts and the CLI verbs.
import convict from 'convict';
import { parseCidr, parseHostPort, parsePort } from './formats.js';
import { parsePolicy } from './policy-format.js';

const NAME_RE = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

export function hostName(value: unknown): void {
  if (typeof value !== 'string' || !NAME_RE.test(value)) {
    throw new Error('must be a DNS label: lowercase letters, digits and "-", 1-63 characters');
  }
}

function cidrList(value: unknown): void {
  if (!Array.isArray(value)) throw new Error('must be an array of CIDR strings such as "198.19.1.0/24"');
  value.forEach((item, i) => {
    try {
      parseCidr(item);
    } catch (err) {
      throw new Error(`[${i}] ${(err as Error).message}`);
    }
  });
}

function peerList(value: unknown): void {
  if (!Array.isArray(value)) throw new Error('must be an array of { name, endpoint, cidrs } objects');
  value.forEach((peer, i) => checkPeerObject(peer, `[${i}]`));
}

/** One peer object { name, endpoint, cidrs }, as in "peers" and in an etcd entry; `where` prefixes the message. */
export function checkPeerObject(peer: unknown, where: string, extraKeys: readonly string[] = []): void {
  if (typeof peer !== 'object' || peer === null || Array.isArray(peer)) {
    throw new Error(`${where} must be an object { name, endpoint, cidrs }`);
  }
  const allowed = new Set(['name', 'endpoint', 'cidrs', ...extraKeys]);
  for (const key of Object.keys(peer)) {
    if (!allowed.has(key)) throw new Error(`${where}.${key} is not a peer key (expected ${[...allowed].join(', ')})`);
  }
  const p = peer as Record<string, unknown>;
  try {
    hostName(p.name);
  } catch (err) {
    throw new Error(`${where}.name ${(err as Error).message}`);
  }
  try {
    parseHostPort(p.endpoint);
  } catch (err) {
    throw new Error(`${where}.endpoint ${(err as Error).message}`);
  }
  if (!Array.isArray(p.cidrs) || p.cidrs.length === 0) {
    throw new Error(`${where}.cidrs must be a non-empty array of CIDR strings`);
  }
  try {
    cidrList(p.cidrs);
  } catch (err) {
    throw new Error(`${where}.cidrs${(err as Error).message}`);
  }
}

/** etcd client URLs: https only (membership is read and written over TLS, never in plaintext), host and port, nothing else. */
export function etcdEndpoint(value: unknown): URL {
  const bad = (why: string): never => {
    throw new Error(`${JSON.stringify(value)} ${why}; expected "https://host:port" such as "https://198.18.0.1:2379"`);
  };
  if (typeof value !== 'string') return bad('is not a string');
  const scheme = /^([a-zA-Z][a-zA-Z0-9+.-]*):\/\//.exec(value)?.[1]?.toLowerCase();
  if (scheme === undefined) return bad('is not a URL');
  if (scheme !== 'https') return bad(`uses ${scheme}: qmesh speaks to etcd over TLS only`);
  // Matched as written (URL() would drop a default port 443 and lower-case the host).
  const m = /^https:\/\/(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::(\d{1,5}))?\/?$/i.exec(value);
  if (!m) return bad('has more than a host and port');
  if (m[2] === undefined) return bad('has no port');
  if (Number(m[2]) < 1 || Number(m[2]) > 65535) return bad('has a port outside 1-65535');
  try {
    return new URL(value);
  } catch {
    return bad('is not a URL');
  }
}

function etcdEndpointList(value: unknown): void {
  if (!Array.isArray(value)) throw new Error('must be an array of "https://host:port" strings');
  value.forEach((item, i) => {
    try {
      etcdEndpoint(item);
    } catch (err) {
      throw new Error(`[${i}] ${(err as Error).message}`);
    }
  });
}

/** An etcd key prefix: "/" first and last, printable ASCII without spaces. */
function etcdPrefix(value: unknown): void {
  if (value === '') return; // the default: /qmesh/<tls.trustDomain>/hosts/
  if (typeof value !== 'string' || !/^\/[\x21-\x7e]*\/$/.test(value) || value.length > 512) {
    throw new Error('must start and end with "/" and hold printable ASCII without spaces, such as "/qmesh/qmesh.test/hosts/" (or be "" for that default)');
  }
}

function wrap(check: (v: unknown) => unknown): (v: unknown) => void {
  return (v) => {
    check(v);
  };
}

/** Env values for array keys (QMESH_LOCAL_CIDRS, QMESH_PEERS) are JSON text. */
const json = (v: unknown): unknown => {
  if (typeof v !== 'string') return v;
  try {
    return JSON.parse(v);
  } catch {
    return v; // left as a string so the format check reports it
  }
};
convict.addFormat({ name: 'cidr-list', validate: cidrList, coerce: json });
convict.addFormat({ name: 'peer-list', validate: peerList, coerce: json });
convict.addFormat({ name: 'etcd-endpoint-list', validate: etcdEndpointList, coerce: json });
// One leaf for the whole section: convict cannot nest a schema under a key named "default".
convict.addFormat({ name: 'policy', validate: wrap(parsePolicy), coerce: json });

export const schema = {
  node: {
    name: {
      doc: 'This host\'s name; its certificate must carry spiffe://<tls.trustDomain>/host/<name>.',
      format: hostName,
      default: '',
      env: 'QMESH_NODE_NAME',
    },
  },
  listen: {
    quic: {
      doc: 'UDP address:port for QUIC tunnels (this host\'s underlay address, as peers list it as endpoint).',
      format: wrap(parseHostPort),
      default: '',
      env: 'QMESH_LISTEN_QUIC',
    },
    capture: {
      doc: 'TCP port that iptables REDIRECTs captured connections to (listens on all addresses).',
      format: wrap(parsePort),
      default: 15001,
      env: 'QMESH_LISTEN_CAPTURE',
    },
    admin: {
      doc: 'TCP address:port of the admin HTTP listener (/healthz, /status, /metrics; no authentication): a loopback address unless listen.adminAllowNonLoopback.',
      format: wrap(parseHostPort),
      default: '127.0.0.1:15000',
      env: 'QMESH_LISTEN_ADMIN',
    },
    adminAllowNonLoopback: {
      doc: 'true: listen.admin may be a non-loopback address (anyone who reaches it reads /status and /metrics). Set it only on purpose.',
      format: Boolean,
      default: false,
      env: 'QMESH_LISTEN_ADMIN_ALLOW_NON_LOOPBACK',
    },
  },
  tls: {
    ca: {
      doc: 'PEM file with the mesh CA certificate(s) that peers\' certificates must chain to.',
      format: String,
      default: 'pki/ca.crt',
      env: 'QMESH_TLS_CA',
    },
    cert: {
      doc: 'PEM file with this host\'s certificate (from `qmesh pki issue`).',
      format: String,
      default: '',
      env: 'QMESH_TLS_CERT',
    },
    key: {
      doc: 'PEM file with this host\'s private key.',
      format: String,
      default: '',
      env: 'QMESH_TLS_KEY',
      sensitive: true,
    },
    trustDomain: {
      doc: 'SPIFFE trust domain; identities are spiffe://<trustDomain>/host/<name>.',
      format: hostNameOrDomain,
      default: 'qmesh.test',
      env: 'QMESH_TLS_TRUST_DOMAIN',
    },
  },
  local: {
    cidrs: {
      doc: 'Function CIDRs on this host: never tunnelled, and the only destinations inbound streams may reach.',
      format: 'cidr-list',
      default: [] as string[],
      env: 'QMESH_LOCAL_CIDRS',
    },
  },
  peers: {
    doc: 'Other hosts: [{ "name", "endpoint": "addr:port", "cidrs": [...] }]. TCP towards a peer\'s cidrs is tunnelled to it.',
    format: 'peer-list',
    default: [] as Array<{ name: string; endpoint: string; cidrs: string[] }>,
    env: 'QMESH_PEERS',
  },
  policy: {
    doc: 'Who may reach what: { "default": "allow" | "deny", "rules": [{ "action", "from"?, "sourceCidrs"?, "destinationCidrs"?, "ports"?, "name"? }] }; first matching rule wins. Evaluated by the receiving host and by the sending host (README "Policy").',
    format: 'policy',
    default: { default: 'allow', rules: [] } as { default: string; rules: unknown[] },
    env: 'QMESH_POLICY',
  },
  membership: {
    source: {
      doc: 'Where the peers come from: file (the "peers" key of this file) or etcd (each daemon registers itself under membership.etcd.prefix and watches it; peers in this file are kept as well). README "Membership".',
      format: ['file', 'etcd'],
      default: 'file',
      env: 'QMESH_MEMBERSHIP_SOURCE',
    },
    etcd: {
      endpoints: {
        doc: 'etcd v3 client URLs, "https://host:port" (TLS only), all members of the cluster.',
        format: 'etcd-endpoint-list',
        default: [] as string[],
        env: 'QMESH_MEMBERSHIP_ETCD_ENDPOINTS',
      },
      ca: {
        doc: 'PEM file with the CA certificate(s) that etcd\'s server certificates chain to.',
        format: String,
        default: '',
        env: 'QMESH_MEMBERSHIP_ETCD_CA',
      },
      cert: {
        doc: 'PEM client certificate for etcd; its CN is this host\'s etcd user, which etcd RBAC lets write only <prefix><node.name> (README "Membership").',
        format: String,
        default: '',
        env: 'QMESH_MEMBERSHIP_ETCD_CERT',
      },
      key: {
        doc: 'PEM private key of membership.etcd.cert.',
        format: String,
        default: '',
        env: 'QMESH_MEMBERSHIP_ETCD_KEY',
        sensitive: true,
      },
      prefix: {
        doc: 'Key prefix of the host entries; "" means /qmesh/<tls.trustDomain>/hosts/. This host writes <prefix><node.name>.',
        format: etcdPrefix,
        default: '',
        env: 'QMESH_MEMBERSHIP_ETCD_PREFIX',
      },
      leaseTtlMs: {
        doc: 'TTL of the lease this host\'s entry lives under (whole seconds: etcd counts leases in seconds); a host that dies disappears from the others this long after its last keep-alive.',
        format: (v: unknown) => {
          positiveInt(2_000, 3_600_000)(v);
          if ((v as number) % 1000 !== 0) throw new Error('must be a whole number of seconds (etcd leases count in seconds), such as 10000');
        },
        default: 10_000,
        env: 'QMESH_MEMBERSHIP_ETCD_LEASE_TTL_MS',
      },
      cacheFile: {
        doc: 'Where the last membership read from etcd is kept, so a restart while etcd is unreachable comes back with it (the unit\'s StateDirectory).',
        format: String,
        default: '/var/lib/qmesh/membership.json',
        env: 'QMESH_MEMBERSHIP_ETCD_CACHE_FILE',
      },
    },
  },
  log: {
    level: {
      doc: 'pino log level.',
      format: ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'],
      default: 'info',
      env: 'QMESH_LOG_LEVEL',
    },
  },
  tunnel: {
    idleTimeoutMs: {
      doc: 'QUIC idle timeout: a peer silent this long is declared down (keep-alives keep live tunnels busy).',
      format: positiveInt(1000, 600_000),
      default: 6000,
      env: 'QMESH_TUNNEL_IDLE_TIMEOUT_MS',
    },
    keepAliveMs: {
      doc: 'Interval of ack-eliciting keep-alive packets on an idle tunnel; must be below idleTimeoutMs.',
      format: positiveInt(100, 300_000),
      default: 1000,
      env: 'QMESH_TUNNEL_KEEP_ALIVE_MS',
    },
    connectTimeoutMs: {
      doc: 'How long a captured connection waits for its peer\'s tunnel before it is reset.',
      format: positiveInt(50, 60_000),
      default: 2000,
      env: 'QMESH_TUNNEL_CONNECT_TIMEOUT_MS',
    },
    reconnectMinMs: {
      doc: 'First back-off delay before re-dialling a lost tunnel; doubles up to reconnectMaxMs, each delay shortened by up to a fifth at random (never below this), so dialers that failed together do not re-dial together.',
      format: positiveInt(10, 60_000),
      default: 100,
      env: 'QMESH_TUNNEL_RECONNECT_MIN_MS',
    },
    reconnectMaxMs: {
      doc: 'Cap of the re-dial back-off.',
      format: positiveInt(10, 600_000),
      default: 5000,
      env: 'QMESH_TUNNEL_RECONNECT_MAX_MS',
    },
    maxDatagramBytes: {
      doc: 'Largest UDP payload qmesh sends: 1350 fits any 1500-byte path; raise it (e.g. 8952) on jumbo-frame underlays.',
      format: positiveInt(1200, 65_527),
      default: 1350,
      env: 'QMESH_TUNNEL_MAX_DATAGRAM_BYTES',
    },
    congestionControl: {
      doc: 'QUIC congestion control (quinn): cubic, reno (NewReno) or bbr.',
      format: ['cubic', 'reno', 'bbr'],
      default: 'cubic',
      env: 'QMESH_TUNNEL_CONGESTION_CONTROL',
    },
    addressValidation: {
      doc: 'Stateless Retry before the listener keeps any state for a new connection: always (costs one round trip per handshake), under-load (once 2 handshakes are in progress), never.',
      format: ['always', 'under-load', 'never'],
      default: 'under-load',
      env: 'QMESH_TUNNEL_ADDRESS_VALIDATION',
    },
    maxStreams: {
      doc: 'Concurrent tunnelled connections one peer may have open towards this host; more are reset. Follows reload (the next connection counts against the new value).',
      format: positiveInt(1, 1_000_000),
      default: 65_536,
      env: 'QMESH_TUNNEL_MAX_STREAMS',
    },
  },
  drain: {
    graceMs: {
      doc: 'On SIGTERM: stop accepting, then let open connections finish for up to this long before exiting.',
      format: positiveInt(0, 3_600_000),
      default: 30_000,
      env: 'QMESH_DRAIN_GRACE_MS',
    },
    stopTimeoutMs: {
      doc: 'How long the service manager waits on stop before it kills the daemon: keep it equal to TimeoutStopSec of the systemd unit (45s). graceMs plus 5000 ms (closing tunnels, flushing logs) must fit in it.',
      format: positiveInt(1000, 3_700_000),
      default: 45_000,
      env: 'QMESH_DRAIN_STOP_TIMEOUT_MS',
    },
  },
  reload: {
    watch: {
      doc: 'Reload when the config file or tls.ca / tls.cert / tls.key change on disk (their folders are watched, so a replace by rename is seen), as SIGHUP does.',
      format: Boolean,
      default: true,
      env: 'QMESH_RELOAD_WATCH',
    },
    debounceMs: {
      doc: 'A burst of file changes (and SIGHUPs) within this long becomes one reload.',
      format: positiveInt(0, 60_000),
      default: 500,
      env: 'QMESH_RELOAD_DEBOUNCE_MS',
    },
    deniedConnections: {
      doc: 'Open connections a reloaded policy denies, or of a peer the reload removed: close (reset them at once) or finish (let them run to their end).',
      format: ['close', 'finish'],
      default: 'close',
      env: 'QMESH_RELOAD_DENIED_CONNECTIONS',
    },
  },
  capture: {
    mark: {
      doc: 'SO_MARK the daemon sets on its own TCP sockets; capture rules skip packets carrying it so nothing loops.',
      format: positiveInt(1, 0xffffffff),
      default: 0x51e5,
      env: 'QMESH_CAPTURE_MARK',
    },
    maxConnections: {
      doc: 'Captured connections open at once; more are reset (and counted) until some close.',
      format: positiveInt(1, 10_000_000),
      default: 65_536,
      env: 'QMESH_CAPTURE_MAX_CONNECTIONS',
    },
    idleTimeoutMs: {
      doc: 'A tunnelled TCP connection with no byte in either direction for this long is reset at both ends (0: never). Applies on the capture and the delivery side.',
      format: positiveInt(0, 604_800_000),
      default: 3_600_000,
      env: 'QMESH_CAPTURE_IDLE_TIMEOUT_MS',
    },
    maxConnectionsPerSource: {
      doc: 'Captured connections open at once from one source address (one function); more from it are reset and counted, others still get through.',
      format: positiveInt(1, 10_000_000),
      default: 16_384,
      env: 'QMESH_CAPTURE_MAX_CONNECTIONS_PER_SOURCE',
    },
    applyRules: {
      doc: '`qmesh run` installs the iptables rules itself at start and on every reload, and puts them back when they drift (they stay after exit so capture fails closed). false: the operator applies them; a reload whose rules are not installed is then refused.',
      format: Boolean,
      default: true,
      env: 'QMESH_CAPTURE_APPLY_RULES',
    },
    ruleCheckIntervalMs: {
      doc: 'How often the daemon looks for drift in its iptables rules (a deleted or moved jump, a changed chain); /healthz also looks when its last look is older than a second.',
      format: positiveInt(1_000, 3_600_000),
      default: 10_000,
      env: 'QMESH_CAPTURE_RULE_CHECK_INTERVAL_MS',
    },
    failClosedCidrs: {
      doc: 'The function address space of the whole fleet, e.g. ["198.19.0.0/16"]: traffic between local functions (or host processes) and an address in it that is neither local nor a peer\'s (captured) is dropped, so a host that is not (yet) a peer is never reached in plaintext. Empty: only known peers are fail-closed.',
      format: 'cidr-list',
      default: [] as string[],
      env: 'QMESH_CAPTURE_FAIL_CLOSED_CIDRS',
    },
  },
};

function hostNameOrDomain(value: unknown): void {
  if (typeof value !== 'string' || value.length > 253 || !value.split('.').every((l) => NAME_RE.test(l))) {
    throw new Error('must be a DNS name such as "qmesh.test" (lowercase labels separated by dots)');
  }
}

function positiveInt(min: number, max: number): (v: unknown) => void {
  return (v) => {
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
      throw new Error(`must be an integer from ${min} to ${max}`);
    }
  };
}

export type Schema = typeof schema;
export const makeConvict = (env: NodeJS.ProcessEnv): convict.Config<any> =>
  convict(schema as any, { env, args: [] });
