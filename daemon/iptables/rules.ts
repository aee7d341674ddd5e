// Turns a validated Config into the capture and fail-closed rules, as argv
// arrays (never shell text), per address family, table and qmesh chain.
// Pure: manager.ts installs, checks and removes them; print.ts renders them.
import type { Config } from '../config/load.js';
import type { Cidr, Family } from '../policy/cidr.js';

export type TableName = 'nat' | 'filter';

/** One qmesh chain, its rules in order, and the jump that sends a built-in chain's traffic into it. */
export interface ChainRules {
  readonly table: TableName;
  /** qmesh's own chain, e.g. QMESH_OUTPUT; the same name may exist in both tables. */
  readonly chain: string;
  /** The built-in chain that jumps to `chain`, e.g. OUTPUT. */
  readonly builtin: string;
  /** Rule spec of the jump (argv after `-I <builtin> 1`). */
  readonly jump: readonly string[];
  /** Rule specs in order (argv after `-A <chain>`); each ends in a `qmesh: <why>` comment and a target. */
  readonly rules: ReadonlyArray<readonly string[]>;
}

export interface FamilyRules {
  readonly family: Family;
  /** Chains in install order: filter first (fail closed), then nat (capture). */
  readonly chains: readonly ChainRules[];
}

export interface RuleSet {
  readonly node: string;
  readonly families: readonly FamilyRules[];
}

/** Every comment starts with this, so an operator (and check()) can tell qmesh's rules apart. */
export const COMMENT_PREFIX = 'qmesh: ';

/** The chain names; remove() and check() look only at these. */
export const QMESH_CHAINS: ReadonlyArray<{ table: TableName; chain: string; builtin: string }> = [
  { table: 'filter', chain: 'QMESH_INPUT', builtin: 'INPUT' },
  { table: 'filter', chain: 'QMESH_FORWARD', builtin: 'FORWARD' },
  { table: 'filter', chain: 'QMESH_OUTPUT', builtin: 'OUTPUT' },
  { table: 'nat', chain: 'QMESH_PREROUTING', builtin: 'PREROUTING' },
  { table: 'nat', chain: 'QMESH_OUTPUT', builtin: 'OUTPUT' },
];

const comment = (why: string): string[] => ['-m', 'comment', '--comment', `${COMMENT_PREFIX}${why}`];

const JUMP_WHY: Record<string, string> = {
  'filter/QMESH_INPUT': 'fail closed for traffic addressed to this host',
  'filter/QMESH_FORWARD': 'fail closed for traffic routed between functions',
  'filter/QMESH_OUTPUT': 'fail closed for traffic sent by host processes',
  'nat/QMESH_PREROUTING': 'capture TCP from functions to peers',
  'nat/QMESH_OUTPUT': 'capture TCP from host processes to peers',
};

interface Named {
  readonly cidr: Cidr;
  readonly peer: string;
}

/** Builds the whole rule set; families appear only where some CIDR (fail-closed ones included) or the QUIC listen address lives. */
export function buildRules(config: Config): RuleSet {
  const families: FamilyRules[] = [];
  for (const family of [4, 6] as const) {
    const local = config.local.cidrs.filter((c) => c.family === family);
    const peers: Named[] = config.peers.flatMap((p) =>
      p.cidrs.filter((c) => c.family === family).map((cidr) => ({ cidr, peer: p.name })),
    );
    const failClosed = config.capture.failClosedCidrs.filter((c) => c.family === family);
    const quicHere = config.listen.quic.family === family;
    if (local.length === 0 && peers.length === 0 && failClosed.length === 0 && !quicHere) continue;
    families.push({ family, chains: familyChains(config, family, local, peers, failClosed, quicHere) });
  }
  return { node: config.node.name, families };
}

function familyChains(
  config: Config,
  family: Family,
  local: readonly Cidr[],
  peers: readonly Named[],
  failClosed: readonly Cidr[],
  quicHere: boolean,
): ChainRules[] {
  const capturePort = String(config.listen.capture);
  const quicPort = String(config.listen.quic.port);
  const mark = `0x${config.capture.mark.toString(16)}`;

  const input: string[][] = [
    [
      '-p', 'tcp', '--dport', capturePort, '-m', 'conntrack', '!', '--ctstate', 'DNAT',
      ...comment(`capture port ${capturePort} only takes redirected connections`),
      '-j', 'REJECT', '--reject-with', 'tcp-reset',
    ],
    [
      // A host process's captured connection answers from the capture socket; de-NATed, that
      // reply looks like plaintext from a peer's function to a local address (dropped below).
      '-p', 'tcp', '-m', 'conntrack', '--ctstate', 'DNAT', '--ctdir', 'REPLY', '--ctreplsrcport', capturePort,
      ...comment('replies of captured connections'),
      '-j', 'RETURN',
    ],
  ];
  if (quicHere) {
    for (const p of config.peers) {
      if (p.endpoint.family !== family) continue;
      input.push([
        '-p', 'udp', '--dport', quicPort, '-s', p.endpoint.host,
        ...comment(`QUIC from peer ${p.name} ${p.endpoint.host}`), '-j', 'RETURN',
      ]);
    }
    input.push(['-p', 'udp', '--dport', quicPort, ...comment(`QUIC port ${quicPort} only for configured peers`), '-j', 'DROP']);
  }
  const forward: string[][] = [];
  const outputFilter: string[][] = [];
  for (const { cidr: peer, peer: name } of peers) {
    for (const l of local) {
      input.push(['-s', peer.text, '-d', l.text, ...comment(`no plaintext from peer ${name} ${peer.text} to local ${l.text}`), '-j', 'DROP']);
    }
    outputFilter.push(['-d', peer.text, ...comment(`no uncaptured traffic from this host to peer ${name} ${peer.text}`), '-j', 'DROP']);
  }
  for (const l of local) {
    for (const { cidr: peer, peer: name } of peers) {
      forward.push(['-s', l.text, '-d', peer.text, ...comment(`no uncaptured traffic from local ${l.text} to peer ${name} ${peer.text}`), '-j', 'DROP']);
      forward.push(['-s', peer.text, '-d', l.text, ...comment(`no uncaptured traffic from peer ${name} ${peer.text} to local ${l.text}`), '-j', 'DROP']);
    }
  }
  if (failClosed.length > 0) addFailClosed(input, forward, outputFilter, local, failClosed);

  const natCommon: string[][] = [
    ...local.map((l) => ['-d', l.text, ...comment(`local ${l.text} is never tunnelled`), '-j', 'RETURN']),
    ...peers.map(({ cidr, peer }) => [
      '-p', 'tcp', '-d', cidr.text, ...comment(`capture TCP to peer ${peer} ${cidr.text}`),
      '-j', 'REDIRECT', '--to-ports', capturePort,
    ]),
  ];
  const natOutput: string[][] = [
    ['-m', 'mark', '--mark', mark, ...comment(`daemon sockets carrying mark ${mark} are never captured`), '-j', 'RETURN'],
    ...natCommon,
  ];

  const byChain: Record<string, string[][]> = {
    'filter/QMESH_INPUT': input,
    'filter/QMESH_FORWARD': forward,
    'filter/QMESH_OUTPUT': outputFilter,
    'nat/QMESH_PREROUTING': natCommon,
    'nat/QMESH_OUTPUT': natOutput,
  };
  return QMESH_CHAINS.map(({ table, chain, builtin }) => {
    const key = `${table}/${chain}`;
    return { table, chain, builtin, jump: ['-j', chain, ...comment(JUMP_WHY[key]!)], rules: byChain[key]! };
  });
}

/**
 * capture.failClosedCidrs, after the per-peer rules: what is left between local functions (or
 * host processes) and the rest of the fleet's address space is a host that is not a peer (yet),
 * so it is dropped. TCP to a peer never gets here (nat REDIRECTed it); the peers' plaintext was
 * dropped above. Local CIDRs usually lie inside the fail-closed ones, so local <-> local traffic
 * (and the daemon's delivery, from the gateway to a function) RETURNs first.
 */
function addFailClosed(input: string[][], forward: string[][], outputFilter: string[][], local: readonly Cidr[], failClosed: readonly Cidr[]): void {
  const key = 'capture.failClosedCidrs';
  for (const l of local) input.push(['-s', l.text, ...comment(`local ${l.text} to this host stays allowed`), '-j', 'RETURN']);
  for (const f of failClosed) {
    for (const l of local) input.push(['-s', f.text, '-d', l.text, ...comment(`no plaintext from ${f.text} in ${key} to local ${l.text}`), '-j', 'DROP']);
  }
  for (const a of local) {
    for (const b of local) forward.push(['-s', a.text, '-d', b.text, ...comment(`local ${a.text} to local ${b.text} stays allowed`), '-j', 'RETURN']);
  }
  for (const l of local) {
    for (const f of failClosed) {
      forward.push(['-s', l.text, '-d', f.text, ...comment(`no uncaptured traffic from local ${l.text} to ${f.text} in ${key}`), '-j', 'DROP']);
      forward.push(['-s', f.text, '-d', l.text, ...comment(`no plaintext from ${f.text} in ${key} to local ${l.text}`), '-j', 'DROP']);
    }
  }
  for (const l of local) outputFilter.push(['-d', l.text, ...comment(`local ${l.text} stays reachable from this host`), '-j', 'RETURN']);
  for (const f of failClosed) outputFilter.push(['-d', f.text, ...comment(`no uncaptured traffic from this host to ${f.text} in ${key}`), '-j', 'DROP']);
}

/** The comment text of a rule spec (what check() uses to see order), or undefined. */
export function commentOf(spec: readonly string[]): string | undefined {
  const i = spec.indexOf('--comment');
  return i >= 0 ? spec[i + 1] : undefined;
}
