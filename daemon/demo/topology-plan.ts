// The pure half of the namespace topology: validates TopologyOptions, names every
// namespace and address, and writes the `ip -batch` scripts that build it.
// Nothing here touches the system; topology.ts runs the scripts.
import { randomBytes } from 'node:crypto';
import { ErrorCodes, QmeshError } from '../errors.js';

export interface TopologyOptions {
  /** Unique per run, 2..8 chars of [a-z0-9] starting with a letter (see randomPrefix()). Every namespace name starts with it. */
  prefix: string;
  /** Number of hosts, 2..6. */
  hosts: number;
  /** Function namespaces per host, 1..4. */
  functionsPerHost: number;
  /** MTU of the underlay links (host eth0, underlay veths, br0). Default 1500. Function links stay at 1500. */
  mtu?: number;
}

export interface FunctionInfo {
  /** 'fn-<host>-<j>', j from 1. */
  name: string;
  /** Network namespace the function runs in. */
  ns: string;
  /** 198.19.<host>.<10+j>, on the function namespace's eth0. */
  ip: string;
}

export interface HostInfo {
  /** 1-based. */
  index: number;
  /** 'host-<index>'. */
  name: string;
  /** Network namespace of the host (where a qmesh daemon runs). */
  ns: string;
  /** 198.18.0.<index>, on the host's eth0 (plugged into the underlay bridge). */
  underlayIp: string;
  /** 198.19.<index>.0/24: the addresses of this host's functions. */
  functionCidr: string;
  /** 198.19.<index>.1 on the host bridge fbr0; the functions' default route. */
  gatewayIp: string;
  functions: FunctionInfo[];
}

export interface TopologyPlan {
  prefix: string;
  underlayNs: string;
  hosts: HostInfo[];
  mtu: number;
}

export const LIMITS = {
  hosts: { min: 2, max: 6 },
  functionsPerHost: { min: 1, max: 4 },
  // 1280 keeps IPv6 possible on every link; 65535 is the largest veth MTU.
  mtu: { min: 1280, max: 65535 },
} as const;

/** Longest namespace name is `<prefix>-h6f4`: 8 + 5 = 13 chars, so a name also fits Linux's 15-char ifname limit. */
const PREFIX_PATTERN = /^[a-z][a-z0-9]{1,7}$/;
/** MTU of every function link: what containers get by default. */
export const FUNCTION_MTU = 1500;
export const DEFAULT_UNDERLAY_MTU = 1500;

export class TopologyError extends QmeshError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(ErrorCodes.TOPOLOGY, message, options);
    this.name = 'TopologyError';
  }
}

/** A fresh run prefix such as 'qmt3fa9': base plus 4 random hex digits. */
export function randomPrefix(base = 'qmt'): string {
  return assertPrefix(`${base}${randomBytes(2).toString('hex')}`);
}

export function assertPrefix(prefix: string): string {
  if (!PREFIX_PATTERN.test(prefix)) {
    throw new TopologyError(
      `topology prefix ${JSON.stringify(prefix)} must be 2..8 chars of [a-z0-9] starting with a letter, e.g. randomPrefix() -> 'qmt3fa9'`,
    );
  }
  return prefix;
}

function assertInt(label: string, value: number, { min, max }: { min: number; max: number }): number {
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new TopologyError(`topology ${label} must be an integer from ${min} to ${max} (got ${value})`);
  }
  return value;
}

export function assertMtu(mtu: number): number {
  return assertInt('mtu', mtu, LIMITS.mtu);
}

/** Names and addresses for every host and function; throws TopologyError on bad options. */
export function planTopology(opts: TopologyOptions): TopologyPlan {
  const prefix = assertPrefix(opts.prefix);
  const hostCount = assertInt('hosts', opts.hosts, LIMITS.hosts);
  const fnCount = assertInt('functionsPerHost', opts.functionsPerHost, LIMITS.functionsPerHost);
  const mtu = assertMtu(opts.mtu ?? DEFAULT_UNDERLAY_MTU);
  const hosts: HostInfo[] = [];
  for (let i = 1; i <= hostCount; i++) {
    const functions: FunctionInfo[] = [];
    for (let j = 1; j <= fnCount; j++) {
      functions.push({ name: `fn-${i}-${j}`, ns: `${prefix}-h${i}f${j}`, ip: `198.19.${i}.${10 + j}` });
    }
    hosts.push({
      index: i,
      name: `host-${i}`,
      ns: `${prefix}-h${i}`,
      underlayIp: `198.18.0.${i}`,
      functionCidr: `198.19.${i}.0/24`,
      gatewayIp: `198.19.${i}.1`,
      functions,
    });
  }
  return { prefix, underlayNs: `${prefix}-ul`, hosts, mtu };
}

export function namespacesOf(plan: TopologyPlan): string[] {
  return [plan.underlayNs, ...plan.hosts.flatMap((h) => [h.ns, ...h.functions.map((f) => f.ns)])];
}

// Interface names below live inside the namespaces, never in the root one, so
// they are short, fixed and cannot collide between concurrent runs:
//   underlay ns: br0 (bridge), h<i> (veth to host i)
//   host ns:     eth0 (underlay side), fbr0 (function bridge), f<j> (veth to function j)
//   function ns: eth0

/** Sysctls set in each host before its interfaces exist, so per-interface defaults inherit them. */
export const HOST_SYSCTLS = [
  'net.ipv4.ip_forward=1',
  // Loose or strict reverse-path filtering is not needed here (routes are
  // symmetric), but some distributions default to strict; 0 keeps forwarded
  // function traffic from being dropped when a test reroutes it.
  'net.ipv4.conf.all.rp_filter=0',
  'net.ipv4.conf.default.rp_filter=0',
] as const;

/** Run with `ip -n <underlayNs> -batch -`: the bridge and one veth per host (peer lands in the host ns as eth0). */
export function underlayScript(plan: TopologyPlan): string {
  const lines = ['link set lo up', `link add br0 mtu ${plan.mtu} type bridge forward_delay 0`, 'link set br0 up'];
  for (const h of plan.hosts) {
    lines.push(`link add h${h.index} mtu ${plan.mtu} type veth peer name eth0 mtu ${plan.mtu} netns ${h.ns}`);
    lines.push(`link set h${h.index} master br0 up`);
  }
  return lines.join('\n') + '\n';
}

/** Run with `ip -n <host.ns> -batch -`: underlay address, function bridge, one veth per function, routes to peers. */
export function hostScript(plan: TopologyPlan, host: HostInfo): string {
  const lines = [
    'link set lo up',
    `addr add ${host.underlayIp}/24 dev eth0`,
    'link set eth0 up',
    `link add fbr0 mtu ${FUNCTION_MTU} type bridge forward_delay 0`,
    `addr add ${host.gatewayIp}/24 dev fbr0`,
    'link set fbr0 up',
  ];
  host.functions.forEach((f, k) => {
    const j = k + 1;
    lines.push(`link add f${j} mtu ${FUNCTION_MTU} type veth peer name eth0 mtu ${FUNCTION_MTU} netns ${f.ns}`);
    lines.push(`link set f${j} master fbr0 up`);
  });
  for (const peer of plan.hosts) {
    if (peer.index !== host.index) lines.push(`route add ${peer.functionCidr} via ${peer.underlayIp} dev eth0`);
  }
  return lines.join('\n') + '\n';
}

/** Run with `ip -n <fn.ns> -batch -`. */
export function functionScript(host: HostInfo, fn: FunctionInfo): string {
  return [
    'link set lo up',
    `addr add ${fn.ip}/24 dev eth0`,
    'link set eth0 up',
    `route add default via ${host.gatewayIp} dev eth0`,
  ].join('\n') + '\n';
}

/** setMtu(): underlay side first (veths, then the bridge), then each host's eth0. */
export function underlayMtuScript(plan: TopologyPlan, mtu: number): string {
  return [...plan.hosts.map((h) => `link set h${h.index} mtu ${mtu}`), `link set br0 mtu ${mtu}`].join('\n') + '\n';
}
