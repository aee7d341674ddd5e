// Reads a JSON config file, validates it strictly against schema.ts, resolves
// relative paths against the file's folder and returns a frozen, typed Config.
// `qmesh check-config` and `qmesh run` both come through here.
import fs from 'node:fs';
import path from 'node:path';
import { ErrorCodes, QmeshError } from '../errors.js';
import { Claims } from './claims.js';
import { checkDangerous, endpointProblem } from './dangerous.js';
import { Cidr, IpAddress } from '../policy/cidr.js';
import type { Policy } from '../policy/policy.js';
import { parseHostPort, type HostPort } from './formats.js';
import { parsePolicy } from './policy-format.js';
import { makeConvict } from './schema.js';

export interface PeerConfig {
  readonly name: string;
  readonly endpoint: HostPort;
  readonly cidrs: readonly Cidr[];
}

export interface EtcdMembership {
  readonly endpoints: readonly string[];
  readonly ca: string;
  readonly cert: string;
  readonly key: string;
  /** Never empty here: the default is resolved from tls.trustDomain. */
  readonly prefix: string;
  readonly leaseTtlMs: number;
  readonly cacheFile: string;
}

export interface Config {
  readonly file: string;
  readonly node: { readonly name: string };
  readonly listen: { readonly quic: HostPort; readonly capture: number; readonly admin: HostPort; readonly adminAllowNonLoopback: boolean };
  readonly tls: { readonly ca: string; readonly cert: string; readonly key: string; readonly trustDomain: string };
  readonly local: { readonly cidrs: readonly Cidr[] };
  /** The file's peers, then (membership.source etcd) the entries admitted from etcd (membership/admit.ts). */
  readonly peers: readonly PeerConfig[];
  readonly membership: { readonly source: 'file' | 'etcd'; readonly etcd: EtcdMembership };
  readonly policy: Policy;
  readonly log: { readonly level: string };
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
  };
  readonly drain: { readonly graceMs: number; readonly stopTimeoutMs: number };
  readonly capture: {
    readonly mark: number;
    readonly maxConnections: number;
    readonly maxConnectionsPerSource: number;
    readonly idleTimeoutMs: number;
    readonly applyRules: boolean;
    readonly ruleCheckIntervalMs: number;
    /** The fleet's function address space: what is in it and neither local nor a peer's is dropped (iptables/rules.ts). */
    readonly failClosedCidrs: readonly Cidr[];
  };
  readonly reload: { readonly watch: boolean; readonly debounceMs: number; readonly deniedConnections: 'close' | 'finish' };
}

const fail = (file: string, message: string, cause?: unknown): never => {
  throw new QmeshError(ErrorCodes.CONFIG, `${file}: ${message}`, { cause });
};

/** Loads and validates; throws QmeshError(QMESH_ERR_CONFIG) naming the key at fault. */
export function loadConfig(file: string, env: NodeJS.ProcessEnv = {}): Config {
  const abs = path.resolve(file);
  let text: string;
  try {
    text = fs.readFileSync(abs, 'utf8');
  } catch (err) {
    return fail(file, `cannot read config file (${(err as NodeJS.ErrnoException).code ?? 'error'})`, err);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    return fail(file, `not valid JSON: ${(err as Error).message}`, err);
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) fail(file, 'top level must be a JSON object');
  return parseConfig(raw as object, abs, env);
}

/** Validates an already-parsed object; `file` anchors relative paths. */
export function parseConfig(raw: object, file: string, env: NodeJS.ProcessEnv = {}): Config {
  const conf = makeConvict(env);
  checkPolicyShape(raw, file);
  try {
    conf.load(raw);
    conf.validate({ allowed: 'strict' });
  } catch (err) {
    const lines = String((err as Error).message)
      .split('\n')
      .map((l) => l.replace(/^configuration param '([^']+)' not declared in the schema$/, '$1: unknown key (not in the schema; check its spelling)'))
      .map((l) => l.replace(/^([\w.]+): \[(\d+)\]/, '$1[$2]')) // "peers: [0].endpoint" -> "peers[0].endpoint"
      .map((l) => l.replace(/^policy: \./, 'policy.')) // "policy: .rules[1].ports[0]" -> "policy.rules[1].ports[0]"
      .map((l) => (l.startsWith('policy') ? l.replace(/: value was .*$/, '') : l)) // the whole section: too long to echo
      .filter(Boolean);
    return fail(file, lines.join('; '), err);
  }
  const v = conf.getProperties() as any;
  const dir = path.dirname(file);
  const resolve = (p: string): string => (p === '' ? '' : path.resolve(dir, p));

  const local = (v.local.cidrs as string[]).map((c) => Cidr.parse(c));
  const peers: PeerConfig[] = (v.peers as any[]).map((p) => ({
    name: p.name,
    endpoint: parseHostPort(p.endpoint),
    cidrs: (p.cidrs as string[]).map((c) => Cidr.parse(c)),
  }));
  const config: Config = {
    file,
    node: { name: v.node.name },
    listen: {
      quic: parseHostPort(v.listen.quic),
      capture: v.listen.capture,
      admin: parseHostPort(v.listen.admin),
      adminAllowNonLoopback: v.listen.adminAllowNonLoopback,
    },
    tls: { ca: resolve(v.tls.ca), cert: resolve(v.tls.cert), key: resolve(v.tls.key), trustDomain: v.tls.trustDomain },
    local: { cidrs: local },
    peers,
    membership: {
      source: v.membership.source,
      etcd: {
        ...v.membership.etcd,
        ca: resolve(v.membership.etcd.ca),
        cert: resolve(v.membership.etcd.cert),
        key: resolve(v.membership.etcd.key),
        cacheFile: resolve(v.membership.etcd.cacheFile),
        prefix: v.membership.etcd.prefix === '' ? defaultEtcdPrefix(v.tls.trustDomain) : v.membership.etcd.prefix,
      },
    },
    policy: parsePolicy(v.policy),
    log: { level: v.log.level },
    tunnel: { ...v.tunnel },
    drain: { ...v.drain },
    capture: { ...v.capture, failClosedCidrs: (v.capture.failClosedCidrs as string[]).map((c) => Cidr.parse(c)) },
    reload: { ...v.reload },
  };
  checkInvariants(config);
  return deepFreeze(config);
}

function checkInvariants(c: Config): void {
  const f = c.file;
  if (c.tls.cert === '') fail(f, 'tls.cert: must name this host\'s certificate file (from `qmesh pki issue`)');
  if (c.tls.key === '') fail(f, 'tls.key: must name this host\'s private key file');
  // First, so a CIDR such as 0.0.0.0/0 is named for what it is rather than as an overlap.
  const claims = new Claims({ name: c.node.name, quic: c.listen.quic, localCidrs: c.local.cidrs, failClosedCidrs: c.capture.failClosedCidrs });
  const nodeProblem = claims.nodeProblem();
  if (nodeProblem) fail(f, nodeProblem);
  c.peers.forEach((p, i) => {
    const problem = claims.add(p, `peers[${i}]`);
    if (problem) fail(f, problem);
  });
  checkDangerous(c, (message) => fail(f, message));
  checkMembership(c);
  const names = claims.hostNames;
  // A rule naming a host that is neither this node nor a peer is a typo: it would never match.
  // With etcd membership, hosts named in rules may join later.
  if (c.membership.source === 'file') c.policy.rules.forEach((r, i) =>
    r.from?.forEach((name, j) => {
      if (!names.has(name)) fail(f, `policy.rules[${i}].from[${j}]: "${name}" is neither node.name nor a peer's name`);
    }),
  );
  if (c.tunnel.keepAliveMs >= c.tunnel.idleTimeoutMs) {
    fail(f, `tunnel.keepAliveMs: must be below tunnel.idleTimeoutMs (${c.tunnel.idleTimeoutMs})`);
  }
  if (c.tunnel.reconnectMinMs > c.tunnel.reconnectMaxMs) {
    fail(f, `tunnel.reconnectMinMs: must not exceed tunnel.reconnectMaxMs (${c.tunnel.reconnectMaxMs})`);
  }
}

export const defaultEtcdPrefix = (trustDomain: string): string => `/qmesh/${trustDomain}/hosts/`;

function checkMembership(c: Config): void {
  const e = c.membership.etcd;
  if (c.membership.source === 'file') {
    if (e.endpoints.length > 0) fail(c.file, 'membership.etcd.endpoints: set, but membership.source is "file"; set membership.source to "etcd" to use it, or remove it');
    return;
  }
  if (e.endpoints.length === 0) fail(c.file, 'membership.etcd.endpoints: membership.source is "etcd" but no endpoint is given ("https://host:port", every member of the cluster)');
  if (new Set(e.endpoints).size !== e.endpoints.length) fail(c.file, 'membership.etcd.endpoints: an endpoint is listed twice');
  for (const key of ['ca', 'cert', 'key'] as const) {
    if (e[key] === '') fail(c.file, `membership.etcd.${key}: membership.source is "etcd", which needs a client TLS ${key === 'ca' ? 'CA file' : key === 'cert' ? 'certificate file' : 'private key file'}`);
  }
  if (e.cacheFile === '') fail(c.file, 'membership.etcd.cacheFile: must name a file (the last membership is kept there)');
  // The fleet's function space bounds what an entry may claim, and keeps a host that is not (yet) a
  // peer from being reached in plaintext (README "Membership").
  const fleet = c.capture.failClosedCidrs;
  if (fleet.length === 0) {
    fail(c.file, 'capture.failClosedCidrs: membership.source is "etcd", which needs the fleet\'s function address space here (e.g. ["198.19.0.0/16"]): etcd entries may claim only addresses inside it, and traffic towards a host that is not a peer yet is dropped instead of leaving in plaintext');
  }
  c.local.cidrs.forEach((cidr, i) => {
    if (!fleet.some((f) => f.prefixLength <= cidr.prefixLength && f.overlaps(cidr))) {
      fail(c.file, `local.cidrs[${i}]: ${cidr} lies outside capture.failClosedCidrs (${fleet.join(', ')}); the other hosts would refuse this host's etcd entry`);
    }
  });
  // This host advertises listen.quic in its entry: it must be an address peers can dial.
  const notEndpoint = endpointProblem(c.listen.quic.host);
  if (notEndpoint) fail(c.file, `listen.quic: ${notEndpoint}; with etcd membership it is the endpoint this host advertises, so give the underlay address peers dial`);
  // etcd is reached from this host's own sockets; inside a fail-closed CIDR its packets would be dropped.
  e.endpoints.forEach((url, i) => {
    const host = new URL(url).hostname.replace(/^\[(.*)\]$/, '$1');
    let ip: IpAddress;
    try {
      ip = IpAddress.parse(host);
    } catch {
      return; // a DNS name: resolved by the client, not checked here
    }
    const inside = c.capture.failClosedCidrs.find((f) => f.contains(ip));
    if (inside) fail(c.file, `membership.etcd.endpoints[${i}]: ${host} lies inside ${inside} (capture.failClosedCidrs); the packets to etcd would be dropped. etcd must listen on an address outside the fail-closed CIDRs`);
  });
}

/**
 * convict treats `policy` as one leaf but still walks into nested objects of the
 * value it loads (and crashes on them); the section's keys hold a string and an
 * array, so an object under one is refused here with the key's name.
 */
function checkPolicyShape(raw: object, file: string): void {
  const policy = (raw as Record<string, unknown>).policy;
  if (typeof policy !== 'object' || policy === null || Array.isArray(policy)) return;
  for (const [key, value] of Object.entries(policy)) {
    if (typeof value !== 'object' || value === null || Array.isArray(value)) continue;
    if (key === 'default') fail(file, 'policy.default must be "allow" or "deny"');
    else if (key === 'rules') fail(file, 'policy.rules must be an array of rule objects');
    else fail(file, `policy.${key} is not a policy key (expected default, rules)`);
  }
}

/** `config` with `extra` peers after its own: entries admitted from etcd (membership/admit.ts checked them). */
export function withPeers(config: Config, extra: readonly PeerConfig[]): Config {
  if (extra.length === 0) return config;
  return deepFreeze({ ...config, peers: [...config.peers, ...extra] });
}

function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object' && !Object.isFrozen(value)) {
    if (value instanceof Cidr) return Object.freeze(value);
    Object.freeze(value);
    for (const v of Object.values(value)) deepFreeze(v);
  }
  return value;
}
