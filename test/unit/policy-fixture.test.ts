// The policy decisions the TypeScript code makes, written down for the Rust data plane
// to be checked against (native/src/policy/vs_typescript.rs). Each policy below is
// compiled by the real config parser (config/policy-format.ts), turned into the JSON the
// data plane receives (the `policy` part of dataplane/snapshot.ts buildSnapshot), and a
// grid of flows is decided by test/support/policy-oracle.ts evaluatePolicy. The result is
// native/tests/fixtures/policy-cases.json.
//
//   QMESH_WRITE_POLICY_FIXTURE=1 npx vitest run test/unit/policy-fixture.test.ts   writes it;
//   npx vitest run test/unit/policy-fixture.test.ts                                checks that
// the committed file is exactly what would be written, so a TypeScript change that alters a
// decision fails here until the fixture is regenerated (and then the Rust test tells whether
// the data plane still agrees).
//
// Addresses are written as the data plane meets them: dotted IPv4, canonical IPv6, and the
// dotted IPv4-mapped form (::ffff:a.b.c.d) that dual-stack sockets report. The hex form of an
// IPv4-mapped address (::ffff:c613:10a) is left out on purpose: TypeScript's IpAddress.parse
// keeps it IPv6 while Rust unmaps every ::ffff:0:0/96 address to IPv4 (native/src/addr.rs), and
// the data plane never produces it (a v6 stream header carrying one is refused).
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../daemon/config/load.js';
import { parsePolicy } from '../../daemon/config/policy-format.js';
import { buildSnapshot } from '../../daemon/dataplane/snapshot.js';
import type { Credentials } from '../../daemon/identity/credentials.js';
import { type Cidr, IpAddress } from '../../daemon/policy/cidr.js';
import type { Policy, PolicyRule } from '../../daemon/policy/policy.js';
import { evaluatePolicy } from '../support/policy-oracle.js';

const FIXTURE = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../native/tests/fixtures/policy-cases.json');
const WRITE = process.env.QMESH_WRITE_POLICY_FIXTURE === '1';

/** native/src/policy.rs PolicyJson: the same mapping as buildSnapshot's `policy:` (checked below). */
function policyJson(p: Policy) {
  return {
    default: p.default,
    rules: p.rules.map((r) => ({
      name: r.name,
      action: r.action,
      from: r.from ? [...r.from] : null,
      sourceCidrs: r.sourceCidrs ? r.sourceCidrs.map(String) : null,
      destinationCidrs: r.destinationCidrs ? r.destinationCidrs.map(String) : null,
      ports: r.ports ? r.ports.map((pr) => [pr.first, pr.last]) : null,
    })),
  };
}

// ------------------------------------------------------------------ the flows

const PEERS = ['host-1', 'host-2', 'host-3', 'host-10'];
const V4_SOURCES = ['198.19.1.10', '198.19.1.127', '198.19.1.128', '198.19.9.1'];
const V4_DESTINATIONS = ['198.19.2.15', '198.19.2.16', '198.19.2.31', '198.19.2.32'];
const V6_SOURCES = ['fd00:1::10', 'fd00:1:0:1::1', 'fd00:1:0:2::1', 'fd00:1:1::1'];
const V6_DESTINATIONS = ['fd00:2::20', 'fd00:2:0:ffff:ffff:ffff:ffff:ffff', 'fd00:2:1::1', '2001:db8::1'];
/** Pairs at the edges, always included. */
const SPECIAL_PAIRS: readonly (readonly [string, string])[] = [
  ['::ffff:198.19.1.10', '::ffff:198.19.2.20'], // IPv4-mapped: both sides compare it as IPv4
  ['::198.19.1.10', '::198.19.2.20'], // IPv4-compatible: an ordinary IPv6 address
  ['0.0.0.0', '255.255.255.255'],
  ['198.19.1.200', '127.255.255.255'],
  ['198.19.1.200', '128.0.0.0'],
  ['::', 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff'],
  ['fe80::1', 'fd00:2::1'],
];
const PORTS = [1, 21, 22, 23, 80, 443, 1024, 1025, 6379, 7999, 8000, 8999, 9000, 65534, 65535];
/** A policy's cases beyond this are a fixed pseudo-random sample (the fixture stays reviewable). */
const MAX_CASES = 480;

interface Flow {
  readonly fromPeer: string;
  readonly source: string;
  readonly destination: string;
  readonly port: number;
}

/** mulberry32, seeded from the policy's name: the same sample on every run. */
function sampler(name: string): () => number {
  let a = [...name].reduce((h, ch) => Math.imul(h ^ ch.charCodeAt(0), 0x01000193) >>> 0, 0x811c9dc5);
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** An address's text; one in ::ffff:0:0/96 in the dotted form, which both sides compare as IPv4. */
function ipText(family: 4 | 6, value: bigint): string {
  if (family === 6 && value >> 32n === 0xffffn) return `::ffff:${ipText(4, value & 0xffffffffn)}`;
  const bytes = new Uint8Array(family === 4 ? 4 : 16);
  let v = value;
  for (let i = bytes.length - 1; i >= 0; i--) {
    bytes[i] = Number(v & 0xffn);
    v >>= 8n;
  }
  return IpAddress.fromBytes(bytes).text;
}

/** An address inside the block, and one just outside it (of the other family for a /0). */
function inside(c: Cidr): string {
  const bits = c.family === 4 ? 32 : 128;
  return ipText(c.family, c.network + (c.prefixLength < bits ? 1n : 0n));
}
function outside(c: Cidr): string {
  const bits = c.family === 4 ? 32 : 128;
  const last = c.network | ((1n << BigInt(bits - c.prefixLength)) - 1n);
  if (c.network > 0n) return ipText(c.family, c.network - 1n);
  if (last < (1n << BigInt(bits)) - 1n) return ipText(c.family, last + 1n);
  return c.family === 4 ? 'fd00:9::1' : '198.19.9.1';
}

/**
 * For each rule, a flow that meets every field it has, and for each field one that misses
 * only that field: whatever the grid's sample, every "all fields must match" is tried.
 */
function ruleProbes(r: PolicyRule): Flow[] {
  const family = (r.sourceCidrs?.[0] ?? r.destinationCidrs?.[0])?.family ?? 4;
  const hit: Flow = {
    fromPeer: r.from?.[0] ?? 'host-1',
    source: r.sourceCidrs ? inside(r.sourceCidrs[0]!) : family === 4 ? '198.19.1.10' : 'fd00:1::10',
    destination: r.destinationCidrs ? inside(r.destinationCidrs[0]!) : family === 4 ? '198.19.2.20' : 'fd00:2::20',
    port: r.ports?.[0]?.first ?? 80,
  };
  const out: Flow[] = [hit];
  const otherPeer = PEERS.find((p) => !r.from?.includes(p));
  if (r.from && otherPeer) out.push({ ...hit, fromPeer: otherPeer });
  if (r.sourceCidrs) out.push({ ...hit, source: outside(r.sourceCidrs[0]!) });
  if (r.destinationCidrs) out.push({ ...hit, destination: outside(r.destinationCidrs[0]!) });
  const range = r.ports?.[0];
  if (range && range.first > 1) out.push({ ...hit, port: range.first - 1 });
  if (range && range.last < 65535) out.push({ ...hit, port: range.last + 1 });
  return out;
}

/**
 * One policy's flows: the grid, where every dimension no rule looks at is cut to a couple of
 * values (it cannot change a decision) and the others are taken whole, sampled down to
 * MAX_CASES if larger; then each rule's probes (ruleProbes) that the grid does not have.
 */
function flows(name: string, p: Policy): Flow[] {
  const uses = (f: 'from' | 'sourceCidrs' | 'destinationCidrs' | 'ports') => p.rules.some((r) => r[f] !== null);
  const cut = <T>(all: readonly T[], used: boolean, n: number): readonly T[] => (used ? all : all.slice(0, n));
  const peers = cut(PEERS, uses('from'), 2);
  const ports = cut(PORTS, uses('ports'), 2);
  const pairs: (readonly [string, string])[] = [];
  for (const [src, dst] of [
    [V4_SOURCES, V4_DESTINATIONS],
    [V6_SOURCES, V6_DESTINATIONS],
  ] as const) {
    for (const s of cut(src, uses('sourceCidrs'), 1)) for (const d of cut(dst, uses('destinationCidrs'), 1)) pairs.push([s, d]);
  }
  pairs.push(...SPECIAL_PAIRS);
  const all: Flow[] = [];
  for (const fromPeer of peers) for (const [source, destination] of pairs) for (const port of ports) all.push({ fromPeer, source, destination, port });
  let grid = all;
  if (all.length > MAX_CASES) {
    const random = sampler(name);
    const keep = all.map((f, i) => ({ f, i, r: random() }));
    keep.sort((x, y) => x.r - y.r);
    grid = keep
      .slice(0, MAX_CASES)
      .sort((x, y) => x.i - y.i)
      .map((k) => k.f);
  }
  const key = (f: Flow) => `${f.fromPeer} ${f.source} ${f.destination} ${f.port}`;
  const seen = new Set(grid.map(key));
  const probes = p.rules.flatMap(ruleProbes).filter((f) => !seen.has(key(f)) && seen.add(key(f)));
  return [...grid, ...probes];
}

// ------------------------------------------------------------------ the policies

interface PolicyCase {
  readonly name: string;
  /** The config's `policy` section. */
  readonly section: object;
  /** Rules that no flow can reach (an earlier rule takes all of theirs). */
  readonly unreachable?: readonly string[];
}

const POLICIES: readonly PolicyCase[] = [
  { name: 'empty section: allow all', section: {} },
  { name: 'default deny, no rules', section: { default: 'deny' } },
  { name: 'default deny, explicit empty rules', section: { default: 'deny', rules: [] } },
  {
    name: 'from lists',
    section: {
      default: 'deny',
      rules: [
        { name: 'no-host-3', action: 'deny', from: ['host-3'] },
        { name: 'from-1-or-2', action: 'allow', from: ['host-1', 'host-2'] },
      ],
    },
  },
  {
    name: 'source CIDRs, v4 and v6',
    section: {
      rules: [
        { name: 'src-hosts', action: 'allow', sourceCidrs: ['198.19.1.10/32', 'fd00:1:0:1::1/128'] },
        { name: 'src-upper-half', action: 'deny', sourceCidrs: ['198.19.1.128/25', 'fd00:1::/64'] },
        { name: 'src-v6-48', action: 'deny', sourceCidrs: ['fd00:1::/48'] },
      ],
    },
  },
  {
    name: 'destination CIDRs, v4 and v6, /0 and mapped',
    section: {
      default: 'deny',
      rules: [
        // An IPv6 block over IPv4-mapped addresses: no flow address is IPv6 in that range.
        { name: 'mapped-block', action: 'allow', destinationCidrs: ['::ffff:198.19.2.0/120'] },
        { name: 'dst-16-28', action: 'allow', destinationCidrs: ['198.19.2.16/28'] },
        // Written long-hand and in capitals: the parser's canonical form is what the data plane gets.
        { name: 'dst-v6-48', action: 'allow', destinationCidrs: ['FD00:0002:0000::/48'] },
        { name: 'low-half', action: 'allow', destinationCidrs: ['0.0.0.0/1'] },
        { name: 'any-v6', action: 'deny', destinationCidrs: ['::/0'] },
      ],
    },
    unreachable: ['mapped-block'],
  },
  {
    name: 'ports: single ports and ranges',
    section: {
      rules: [
        { name: 'ssh', action: 'deny', ports: [22] },
        { name: 'web-range', action: 'deny', ports: ['8000-8999', '6379'] },
        { name: 'edges', action: 'deny', ports: ['1', 65535] },
        { name: 'privileged', action: 'allow', ports: ['1-1024'] },
        { name: 'high', action: 'deny', ports: ['1025-65534'] },
      ],
    },
  },
  {
    name: 'first match wins, in order',
    section: {
      default: 'deny',
      rules: [
        { name: 'web-ok', action: 'allow', ports: [80] },
        { name: 'host-1-out', action: 'deny', from: ['host-1'] },
        { name: 'never', action: 'allow', from: ['host-1'] },
        { action: 'allow', ports: ['1-65535'] },
        { name: 'after-catch-all', action: 'deny' },
      ],
    },
    unreachable: ['never', 'after-catch-all'],
  },
  {
    name: 'unnamed rules, catch-all',
    section: { rules: [{ action: 'allow', ports: [443] }, { action: 'deny', from: ['host-2'] }, { action: 'deny' }] },
  },
  {
    name: 'rules with several fields',
    section: {
      default: 'deny',
      rules: [
        {
          name: 'web',
          action: 'allow',
          from: ['host-1', 'host-2'],
          sourceCidrs: ['198.19.1.0/25', 'fd00:1::/64'],
          destinationCidrs: ['198.19.2.16/28', 'fd00:2::/64'],
          ports: [80, '8000-8999'],
        },
        { action: 'deny', from: ['host-3'], ports: ['1-1024'] },
        { name: 'v6-ssh', action: 'allow', sourceCidrs: ['fd00:1::/48'], destinationCidrs: ['fd00:2::/32'], ports: [22] },
        { name: 'v4-any-dst', action: 'allow', from: ['host-10'], destinationCidrs: ['0.0.0.0/0'] },
      ],
    },
  },
];

/** Also goes through parseConfig and buildSnapshot, so the mapping above cannot drift from buildSnapshot's. */
const CONFIG_POLICY: PolicyCase = {
  name: 'a whole config (through parseConfig and buildSnapshot)',
  section: {
    default: 'deny',
    rules: [
      { name: 'no-ssh-from-3', action: 'deny', from: ['host-3'], ports: [22] },
      { name: 'admin', action: 'allow', from: ['host-1'], sourceCidrs: ['198.19.1.0/26'], ports: ['22', '443'] },
      { name: 'api', action: 'allow', destinationCidrs: ['198.19.2.0/27', 'fd00:2::/64'], ports: ['8000-8999'] },
      { action: 'allow', sourceCidrs: ['fd00:1::/64'], destinationCidrs: ['fd00:2::/48'] },
      { name: 'web', action: 'allow', ports: [80, 443] },
    ],
  },
};

const configWith = (section: object) =>
  parseConfig(
    {
      node: { name: 'host-1' },
      listen: { quic: '198.18.0.1:4433' },
      tls: { cert: 'pki/host-1.crt', key: 'pki/host-1.key' },
      local: { cidrs: ['198.19.1.0/24', 'fd00:1::/64'] },
      peers: [
        { name: 'host-2', endpoint: '198.18.0.2:4433', cidrs: ['198.19.2.0/24', 'fd00:2::/64'] },
        { name: 'host-3', endpoint: '198.18.0.3:4433', cidrs: ['198.19.3.0/24'] },
        { name: 'host-10', endpoint: '198.18.0.10:4433', cidrs: ['198.19.10.0/24'] },
      ],
      policy: section,
    },
    '/etc/qmesh/config.json',
  );

const credentials: Credentials = {
  caPem: new Uint8Array(),
  certPem: new Uint8Array(),
  keyPem: new Uint8Array(),
  notBefore: new Date(0),
  notAfter: new Date(0),
  identity: 'spiffe://qmesh.test/host/host-1',
  resetKey: Buffer.alloc(32),
};

// ------------------------------------------------------------------ the fixture

interface Entry {
  readonly name: string;
  readonly policy: ReturnType<typeof policyJson>;
  readonly cases: readonly (Flow & { action: string; rule: string })[];
}

function entry(pc: PolicyCase, policy: Policy): Entry {
  const cases = flows(pc.name, policy).map((f) => {
    const d = evaluatePolicy(policy, { fromPeer: f.fromPeer, source: IpAddress.parse(f.source), destination: IpAddress.parse(f.destination), port: f.port });
    return { ...f, action: d.action, rule: d.rule };
  });
  return { name: pc.name, policy: policyJson(policy), cases };
}

/** One policy and one case a line, so a regenerated fixture diffs case by case. */
function render(entries: readonly Entry[]): string {
  const one = (e: Entry) =>
    `{"name":${JSON.stringify(e.name)},"policy":${JSON.stringify(e.policy)},"cases":[\n` + e.cases.map((c) => JSON.stringify(c)).join(',\n') + '\n]}';
  return `[\n${entries.map(one).join(',\n')}\n]\n`;
}

describe('policy fixture for the Rust data plane (native/tests/fixtures/policy-cases.json)', () => {
  const config = configWith(CONFIG_POLICY.section);
  const entries = [...POLICIES.map((pc) => entry(pc, parsePolicy(pc.section))), entry(CONFIG_POLICY, config.policy)];

  it('maps a policy to the data plane JSON exactly as buildSnapshot does', () => {
    const snapshotPolicy: unknown = JSON.parse(JSON.stringify(buildSnapshot(config, credentials).policy));
    expect(snapshotPolicy).toStrictEqual(JSON.parse(JSON.stringify(policyJson(config.policy))));
    expect(config.policy).toEqual(parsePolicy(CONFIG_POLICY.section));
  });

  it('reaches every reachable rule, and the default where there is one to reach', () => {
    for (const [i, pc] of [...POLICIES, CONFIG_POLICY].entries()) {
      const e = entries[i]!;
      const decided = new Set(e.cases.map((c) => c.rule));
      const expected = e.policy.rules.map((r) => r.name).filter((n) => !pc.unreachable?.includes(n));
      for (const name of expected) expect(decided.has(name), `${pc.name}: no case decided by rule ${name}`).toBe(true);
      for (const name of pc.unreachable ?? []) expect(decided.has(name), `${pc.name}: ${name} was meant to be unreachable`).toBe(false);
      expect(e.cases.length, pc.name).toBeGreaterThan(0);
    }
  });

  it(WRITE ? 'writes the fixture' : 'matches the committed fixture (regenerate with QMESH_WRITE_POLICY_FIXTURE=1)', () => {
    const text = render(entries);
    if (WRITE) {
      fs.mkdirSync(path.dirname(FIXTURE), { recursive: true });
      fs.writeFileSync(FIXTURE, text);
      return;
    }
    const committed = fs.existsSync(FIXTURE) ? fs.readFileSync(FIXTURE, 'utf8') : '';
    if (committed === text) return;
    const want = text.split('\n');
    const have = committed.split('\n');
    const line = want.findIndex((l, i) => l !== have[i]);
    expect.fail(
      `${path.relative(process.cwd(), FIXTURE)} is not what the TypeScript policy code gives now ` +
        `(first difference at line ${line + 1}:\n  committed: ${have[line] ?? '(end of file)'}\n  now:       ${want[line] ?? '(end of file)'}).\n` +
        'Regenerate it with QMESH_WRITE_POLICY_FIXTURE=1 npx vitest run test/unit/policy-fixture.test.ts, ' +
        'then run cd native && cargo test --release policy::vs_typescript to see whether the Rust data plane agrees.',
    );
  });
});
