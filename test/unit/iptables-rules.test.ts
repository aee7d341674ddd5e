// Rule generation (daemon/iptables/rules.ts) and the printed script
// (RuleManager.print()) against iptables/fixtures/example.rules.
// Regenerate the fixture with QMESH_UPDATE_FIXTURES=1 after a deliberate change.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { loadConfig, parseConfig } from '../../daemon/config/load.js';
import { RuleManager } from '../../daemon/iptables/manager.js';
import { buildRules, COMMENT_PREFIX, type ChainRules, type RuleSet } from '../../daemon/iptables/rules.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const examplePath = path.join(root, 'config/examples/host-1.json');
const fixturePath = path.join(root, 'iptables/fixtures/example.rules');

const base = JSON.parse(fs.readFileSync(examplePath, 'utf8')) as Record<string, any>;
const configWith = (patch: Record<string, unknown>) => parseConfig({ ...base, ...patch }, examplePath);

const chain = (rules: RuleSet, family: 4 | 6, table: string, name: string): ChainRules => {
  const found = rules.families.find((f) => f.family === family)?.chains.find((c) => c.table === table && c.chain === name);
  if (!found) throw new Error(`no ${table}/${name} for IPv${family}`);
  return found;
};

describe('buildRules on the example host config', () => {
  const rules = buildRules(loadConfig(examplePath));

  it('builds only IPv4, five chains, filter before nat', () => {
    expect(rules.families.map((f) => f.family)).toEqual([4]);
    expect(rules.families[0]!.chains.map((c) => `${c.table}/${c.chain}<-${c.builtin}`)).toEqual([
      'filter/QMESH_INPUT<-INPUT',
      'filter/QMESH_FORWARD<-FORWARD',
      'filter/QMESH_OUTPUT<-OUTPUT',
      'nat/QMESH_PREROUTING<-PREROUTING',
      'nat/QMESH_OUTPUT<-OUTPUT',
    ]);
  });

  it('nat OUTPUT skips marked sockets first, then local, then captures peers', () => {
    const out = chain(rules, 4, 'nat', 'QMESH_OUTPUT').rules;
    expect(out[0]!.slice(0, 4)).toEqual(['-m', 'mark', '--mark', '0x51e5']);
    expect(out[0]!.slice(-2)).toEqual(['-j', 'RETURN']);
    expect(out[1]!.slice(0, 2)).toEqual(['-d', '198.19.1.0/24']);
    expect(out[1]!.slice(-2)).toEqual(['-j', 'RETURN']);
    expect(out[2]!.slice(0, 4)).toEqual(['-p', 'tcp', '-d', '198.19.2.0/24']);
    expect(out[2]!.slice(-4)).toEqual(['-j', 'REDIRECT', '--to-ports', '15001']);
    expect(out).toHaveLength(3);
    // PREROUTING: the same without the mark exemption (containers' packets carry no qmesh mark).
    expect(chain(rules, 4, 'nat', 'QMESH_PREROUTING').rules).toEqual(out.slice(1));
  });

  it('filter fails closed: capture port, QUIC from peers only, no plaintext between hosts', () => {
    // The rule without its comment: matches, then target.
    const strip = (r: readonly string[]) => [...r.slice(0, r.indexOf('--comment') - 2), ...r.slice(r.indexOf('-j'))];
    const input = chain(rules, 4, 'filter', 'QMESH_INPUT').rules.map(strip);
    expect(chain(rules, 4, 'filter', 'QMESH_INPUT').rules[0]).toEqual(
      expect.arrayContaining(['--dport', '15001', 'conntrack', '!', '--ctstate', 'DNAT', 'REJECT', '--reject-with', 'tcp-reset']),
    );
    expect(input.slice(1)).toEqual([
      // replies of captured host-process connections would otherwise match the last drop
      ['-p', 'tcp', '-m', 'conntrack', '--ctstate', 'DNAT', '--ctdir', 'REPLY', '--ctreplsrcport', '15001', '-j', 'RETURN'],
      ['-p', 'udp', '--dport', '4433', '-s', '198.18.0.2', '-j', 'RETURN'],
      ['-p', 'udp', '--dport', '4433', '-j', 'DROP'],
      ['-s', '198.19.2.0/24', '-d', '198.19.1.0/24', '-j', 'DROP'],
    ]);
    expect(chain(rules, 4, 'filter', 'QMESH_FORWARD').rules.map(strip)).toEqual([
      ['-s', '198.19.1.0/24', '-d', '198.19.2.0/24', '-j', 'DROP'],
      ['-s', '198.19.2.0/24', '-d', '198.19.1.0/24', '-j', 'DROP'],
    ]);
    expect(chain(rules, 4, 'filter', 'QMESH_OUTPUT').rules.map(strip)).toEqual([['-d', '198.19.2.0/24', '-j', 'DROP']]);
  });

  it('every rule and jump carries a unique qmesh comment', () => {
    for (const c of rules.families[0]!.chains) {
      const comments = [c.jump, ...c.rules].map((r) => r[r.indexOf('--comment') + 1]);
      for (const text of comments) expect(text?.startsWith(COMMENT_PREFIX)).toBe(true);
      expect(new Set(comments.slice(1)).size).toBe(c.rules.length);
      expect(c.jump.slice(0, 2)).toEqual(['-j', c.chain]);
    }
  });

  it('print() equals iptables/fixtures/example.rules', () => {
    const printed = new RuleManager(loadConfig(examplePath)).print();
    if (process.env.QMESH_UPDATE_FIXTURES === '1') fs.writeFileSync(fixturePath, printed);
    expect(printed).toBe(fs.readFileSync(fixturePath, 'utf8'));
  });

  it('print() names the backend binaries when one is chosen', () => {
    const printed = new RuleManager(loadConfig(examplePath), { backend: 'legacy' }).print();
    expect(printed).toContain("iptables-legacy -w 10 -t nat -I OUTPUT 1 -j QMESH_OUTPUT -m comment --comment 'qmesh: ");
    expect(printed).not.toMatch(/^iptables -w/m);
  });
});

describe('buildRules families', () => {
  it('adds ip6tables rules for IPv6 CIDRs and a v6 QUIC address; v4 peers stay out of them', () => {
    const config = configWith({
      listen: { ...base.listen, quic: '[fd00:18::1]:4433' },
      local: { cidrs: ['198.19.1.0/24', 'fd00:19:1::/64'] },
      peers: [
        { name: 'host-2', endpoint: '[fd00:18::2]:4433', cidrs: ['fd00:19:2::/64'] },
        { name: 'host-3', endpoint: '198.18.0.3:4433', cidrs: ['198.19.3.0/24'] },
      ],
    });
    const rules = buildRules(config);
    expect(rules.families.map((f) => f.family)).toEqual([4, 6]);
    const natOut6 = chain(rules, 6, 'nat', 'QMESH_OUTPUT').rules;
    expect(natOut6.map((r) => r.slice(0, 4))).toEqual([
      ['-m', 'mark', '--mark', '0x51e5'],
      ['-d', 'fd00:19:1::/64', '-m', 'comment'],
      ['-p', 'tcp', '-d', 'fd00:19:2::/64'],
    ]);
    const input6 = chain(rules, 6, 'filter', 'QMESH_INPUT').rules;
    expect(input6.some((r) => r.includes('tcp-reset'))).toBe(true);
    expect(input6.filter((r) => r.includes('-s') && r.includes('udp')).map((r) => r[r.indexOf('-s') + 1])).toEqual(['fd00:18::2']);
    // The v4 side has no QUIC rules (the daemon listens on v6) but still captures host-3.
    const input4 = chain(rules, 4, 'filter', 'QMESH_INPUT').rules;
    expect(input4.some((r) => r.includes('udp'))).toBe(false);
    expect(chain(rules, 4, 'nat', 'QMESH_OUTPUT').rules.some((r) => r.includes('198.19.3.0/24'))).toBe(true);
    expect(JSON.stringify(rules.families[1])).not.toMatch(/198\.1[89]/);
    expect(new RuleManager(config).print()).toMatch(/^ip6tables -w 10 -t nat -A QMESH_OUTPUT -p tcp -d fd00:19:2::\/64 /m);
  });

  it('a family exists only for the QUIC address when no CIDR is of it', () => {
    const rules = buildRules(configWith({ listen: { ...base.listen, quic: '[fd00:18::1]:4433' }, peers: [
      { name: 'host-2', endpoint: '198.18.0.2:4433', cidrs: ['198.19.2.0/24'] },
    ] }));
    expect(rules.families.map((f) => f.family)).toEqual([4, 6]);
    expect(chain(rules, 6, 'filter', 'QMESH_INPUT').rules.at(-1)).toEqual(expect.arrayContaining(['udp', '4433', 'DROP']));
  });
});

describe('argv safety', () => {
  it('no argument carries shell metacharacters; comments are plain words', () => {
    const config = configWith({
      local: { cidrs: ['198.19.1.0/24', '198.19.10.0/24'] },
      peers: [
        { name: 'host-2', endpoint: '198.18.0.2:4433', cidrs: ['198.19.2.0/24', 'fd00:2::/64'] },
        { name: 'host-3', endpoint: '[fd00:18::3]:4433', cidrs: ['198.19.3.0/24'] },
      ],
    });
    for (const fam of buildRules(config).families) {
      for (const c of fam.chains) {
        for (const spec of [c.jump, ...c.rules]) {
          spec.forEach((arg, i) => {
            if (spec[i - 1] === '--comment') expect(arg).toMatch(/^qmesh: [A-Za-z0-9 .:/-]+$/);
            else expect(arg).toMatch(/^(!|[A-Za-z0-9_.:/-]+)$/);
          });
        }
      }
    }
  });

  it('config text that would be shell syntax never reaches the rules (the loader refuses it)', () => {
    const tries = [
      { local: { cidrs: ['198.19.1.0/24; rm -rf /'] } },
      { peers: [{ name: 'host-2', endpoint: '198.18.0.2:4433 $(reboot)', cidrs: ['198.19.2.0/24'] }] },
      { peers: [{ name: 'x`id`', endpoint: '198.18.0.2:4433', cidrs: ['198.19.2.0/24'] }] },
    ];
    for (const patch of tries) expect(() => configWith(patch)).toThrow(expect.objectContaining({ code: 'QMESH_ERR_CONFIG' }));
  });
});

describe('capture.failClosedCidrs', () => {
  /** The rule without its comment: matches, then target. */
  const strip = (r: readonly string[]) => [...r.slice(0, r.indexOf('--comment') - 2), ...r.slice(r.indexOf('-j'))];
  const dual = {
    listen: { ...base.listen, quic: '198.18.0.1:4433' },
    local: { cidrs: ['198.19.1.0/24', 'fd00:19:1::/64'] },
    peers: [{ name: 'host-2', endpoint: '198.18.0.2:4433', cidrs: ['198.19.2.0/24', 'fd00:19:2::/64'] }],
  };
  const without = buildRules(configWith(dual));
  const withKey = buildRules(configWith({ ...dual, capture: { failClosedCidrs: ['198.19.0.0/16', 'fd00:19::/48'] } }));

  it('an empty key prints exactly the rules of a config without it', () => {
    const printed = new RuleManager(configWith({ capture: { failClosedCidrs: [] } })).print();
    expect(printed).toBe(fs.readFileSync(fixturePath, 'utf8'));
    expect(printed).not.toContain('failClosedCidrs');
  });

  it('appends to the filter chains after the per-peer rules, in both families; nat is unchanged', () => {
    for (const family of [4, 6] as const) {
      for (const name of ['QMESH_INPUT', 'QMESH_FORWARD', 'QMESH_OUTPUT']) {
        const before = chain(without, family, 'filter', name).rules;
        expect(chain(withKey, family, 'filter', name).rules.slice(0, before.length)).toEqual(before);
      }
      for (const name of ['QMESH_PREROUTING', 'QMESH_OUTPUT']) {
        expect(chain(withKey, family, 'nat', name)).toEqual(chain(without, family, 'nat', name));
      }
    }
    const added = (family: 4 | 6, name: string) => {
      const all = chain(withKey, family, 'filter', name).rules;
      return all.slice(chain(without, family, 'filter', name).rules.length).map(strip);
    };
    // Local sources and destinations RETURN first: local CIDRs lie inside the fail-closed ones.
    expect(added(4, 'QMESH_INPUT')).toEqual([
      ['-s', '198.19.1.0/24', '-j', 'RETURN'],
      ['-s', '198.19.0.0/16', '-d', '198.19.1.0/24', '-j', 'DROP'],
    ]);
    expect(added(4, 'QMESH_FORWARD')).toEqual([
      ['-s', '198.19.1.0/24', '-d', '198.19.1.0/24', '-j', 'RETURN'],
      ['-s', '198.19.1.0/24', '-d', '198.19.0.0/16', '-j', 'DROP'],
      ['-s', '198.19.0.0/16', '-d', '198.19.1.0/24', '-j', 'DROP'],
    ]);
    expect(added(4, 'QMESH_OUTPUT')).toEqual([
      ['-d', '198.19.1.0/24', '-j', 'RETURN'],
      ['-d', '198.19.0.0/16', '-j', 'DROP'],
    ]);
    expect(added(6, 'QMESH_INPUT')).toEqual([
      ['-s', 'fd00:19:1::/64', '-j', 'RETURN'],
      ['-s', 'fd00:19::/48', '-d', 'fd00:19:1::/64', '-j', 'DROP'],
    ]);
    expect(added(6, 'QMESH_FORWARD')).toEqual([
      ['-s', 'fd00:19:1::/64', '-d', 'fd00:19:1::/64', '-j', 'RETURN'],
      ['-s', 'fd00:19:1::/64', '-d', 'fd00:19::/48', '-j', 'DROP'],
      ['-s', 'fd00:19::/48', '-d', 'fd00:19:1::/64', '-j', 'DROP'],
    ]);
    expect(added(6, 'QMESH_OUTPUT')).toEqual([
      ['-d', 'fd00:19:1::/64', '-j', 'RETURN'],
      ['-d', 'fd00:19::/48', '-j', 'DROP'],
    ]);
  });

  it('every added rule has its own comment naming the key', () => {
    for (const fam of withKey.families) {
      for (const c of fam.chains) {
        const comments = c.rules.map((r) => r[r.indexOf('--comment') + 1]!);
        expect(new Set(comments).size).toBe(comments.length);
        for (const r of c.rules.filter((r) => r.at(-1) === 'DROP' && r.includes(fam.family === 4 ? '198.19.0.0/16' : 'fd00:19::/48'))) {
          expect(r[r.indexOf('--comment') + 1]).toMatch(/^qmesh: .* in capture\.failClosedCidrs/);
        }
      }
    }
  });

  it('several local and fail-closed blocks: every local pair RETURNs, every local/fail-closed pair drops both ways', () => {
    const rules = buildRules(configWith({ local: { cidrs: ['198.19.1.0/24', '10.20.1.0/24'] }, capture: { failClosedCidrs: ['198.19.0.0/16', '10.20.0.0/16'] } }));
    const forward = chain(rules, 4, 'filter', 'QMESH_FORWARD').rules.map(strip).slice(4); // after host-2's pairs
    expect(forward.filter((r) => r.at(-1) === 'RETURN')).toHaveLength(4);
    expect(forward.filter((r) => r.at(-1) === 'DROP')).toHaveLength(8);
    expect(forward.findIndex((r) => r.at(-1) === 'DROP')).toBe(4);
  });

  it('a fail-closed block alone brings its family: host processes may not reach it', () => {
    const rules = buildRules(configWith({ capture: { failClosedCidrs: ['198.19.0.0/16', 'fd00:19::/48'] } }));
    expect(rules.families.map((f) => f.family)).toEqual([4, 6]);
    expect(chain(rules, 6, 'filter', 'QMESH_OUTPUT').rules.map(strip)).toEqual([['-d', 'fd00:19::/48', '-j', 'DROP']]);
    expect(chain(rules, 6, 'filter', 'QMESH_FORWARD').rules).toEqual([]);
    expect(chain(rules, 6, 'nat', 'QMESH_PREROUTING').rules).toEqual([]);
  });
});
