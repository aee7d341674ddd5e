// Issue #14 §5: configs that parse but are dangerous are refused by the loader that
// `qmesh check-config`, `qmesh run` and reload all use (loadConfig), with
// QMESH_ERR_CONFIG and a message naming the key and saying why.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../daemon/config/load.js';
import { schema } from '../../daemon/config/schema.js';
import { unitDirective } from '../support/unit-file.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qmesh-dangerous-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const base = (): Record<string, any> => ({
  node: { name: 'host-1' },
  listen: { quic: '198.18.0.1:4433' },
  tls: { cert: 'pki/host-1.crt', key: 'pki/host-1.key' },
  local: { cidrs: ['198.19.1.0/24', 'fd00:19:1::/64'] },
  peers: [
    { name: 'host-2', endpoint: '198.18.0.2:4433', cidrs: ['198.19.2.0/24'] },
    { name: 'host-3', endpoint: '[fd00:18::3]:4433', cidrs: ['198.19.3.0/24', 'fd00:19:3::/64'] },
  ],
});

let n = 0;
/** Writes `raw` to a file and loads it as the CLI does. */
const load = (raw: object, env: NodeJS.ProcessEnv = {}) => {
  const file = path.join(dir, `c${n++}.json`);
  fs.writeFileSync(file, JSON.stringify(raw));
  return loadConfig(file, env);
};
const refusal = (raw: object, env: NodeJS.ProcessEnv = {}): string => {
  try {
    load(raw, env);
  } catch (err) {
    expect((err as { code?: string }).code).toBe('QMESH_ERR_CONFIG');
    return (err as Error).message;
  }
  throw new Error('config was accepted');
};
/** base() with local.cidrs or one peer's cidrs extended by `cidr`. */
const withLocal = (cidr: string) => {
  const c = base();
  c.local.cidrs.push(cidr);
  return c;
};
const withPeerCidr = (peer: number, cidr: string) => {
  const c = base();
  c.peers[peer].cidrs.push(cidr);
  return c;
};
const esc = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

describe('dangerous function CIDRs', () => {
  // [where, config, key, message fragment]
  const cases: Array<[string, () => object, string, RegExp]> = [
    ['local 0.0.0.0/0', () => withLocal('0.0.0.0/0'), 'local.cidrs[2]', /0\.0\.0\.0\/0 covers every IPv4 address.*prefix length 0/],
    ['peer ::/0', () => withPeerCidr(1, '::/0'), 'peers[1].cidrs[2]', /::\/0 covers every IPv6 address/],
    ['local inside loopback', () => withLocal('127.0.0.1/32'), 'local.cidrs[2]', /lies inside loopback 127\.0\.0\.0\/8: traffic to the host itself would be captured\/tunnelled/],
    ['peer covering loopback', () => withPeerCidr(0, '0.0.0.0/1'), 'peers[0].cidrs[1]', /0\.0\.0\.0\/1 covers loopback 127\.0\.0\.0\/8/],
    ['peer ::1/128', () => withPeerCidr(1, '::1/128'), 'peers[1].cidrs[2]', /covers loopback ::1\/128/],
    ['local covering ::1 (::/8)', () => withLocal('::/8'), 'local.cidrs[2]', /::\/8 covers loopback ::1\/128/],
    ['peer inside 169.254.0.0/16', () => withPeerCidr(0, '169.254.169.254/32'), 'peers[0].cidrs[1]', /lies inside link-local 169\.254\.0\.0\/16/],
    ['local covering 169.254.0.0/16', () => withLocal('168.0.0.0/6'), 'local.cidrs[2]', /covers link-local 169\.254\.0\.0\/16/],
    ['peer inside fe80::/10', () => withPeerCidr(1, 'fe80::/64'), 'peers[1].cidrs[2]', /lies inside link-local fe80::\/10/],
    ['local IPv4-mapped', () => withLocal('::ffff:198.19.9.0/120'), 'local.cidrs[2]', /lies inside IPv4-mapped ::ffff:0:0\/96.*IPv4/],
    ['peer covering ::ffff:0:0/96', () => withPeerCidr(1, '::fffe:0:0/95'), 'peers[1].cidrs[2]', /::fffe:0:0\/95 covers IPv4-mapped ::ffff:0:0\/96/],
    ['peer inside 224.0.0.0/4', () => withPeerCidr(0, '239.1.0.0/16'), 'peers[0].cidrs[1]', /lies inside multicast 224\.0\.0\.0\/4/],
    ['local covering 224.0.0.0/4', () => withLocal('224.0.0.0/3'), 'local.cidrs[2]', /covers multicast 224\.0\.0\.0\/4/],
    ['peer inside ff00::/8', () => withPeerCidr(1, 'ff02::/16'), 'peers[1].cidrs[2]', /lies inside multicast ff00::\/8/],
  ];
  for (const [what, make, key, why] of cases) {
    it(`refuses ${what}, naming ${key}`, () => {
      const message = refusal(make());
      expect(message).toMatch(new RegExp(`: ${esc(key)}: `));
      expect(message).toMatch(why);
    });
  }

  it('refuses them from the environment too', () => {
    expect(refusal(base(), { QMESH_LOCAL_CIDRS: '["198.19.1.0/24","127.0.0.0/8"]' })).toMatch(/local\.cidrs\[1\]: 127\.0\.0\.0\/8 covers loopback/);
  });

  it('still loads ordinary function CIDRs (10.x, 198.19.x, fd00::/64) and underlay-like neighbours', () => {
    const c = base();
    c.local.cidrs = ['10.20.0.0/16', '198.19.1.0/24', 'fd00::/64'];
    c.peers[0].cidrs = ['10.21.0.0/16', '198.19.2.0/24', '128.0.0.0/9', '126.0.0.0/8'];
    c.peers[1].cidrs = ['fd00:1::/64', '2001:db8::/32', 'fec0::/10', '198.19.3.0/24'];
    const loaded = load(c);
    expect(loaded.local.cidrs.map(String)).toEqual(['10.20.0.0/16', '198.19.1.0/24', 'fd00::/64']);
    expect(loaded.peers[1]!.cidrs.map(String)).toContain('fd00:1::/64');
  });
});

describe('admin listener off loopback', () => {
  for (const admin of ['0.0.0.0:15000', '198.18.0.1:15000', '[::]:15000', '[fd00:18::1]:15000']) {
    it(`refuses listen.admin ${admin} unless listen.adminAllowNonLoopback`, () => {
      const c = base();
      c.listen.admin = admin;
      const message = refusal(c);
      expect(message).toMatch(/: listen\.admin: .* is not a loopback address/);
      expect(message).toContain('listen.adminAllowNonLoopback');
      c.listen.adminAllowNonLoopback = true;
      expect(load(c).listen.admin.port).toBe(15000);
      // The same key from its environment variable.
      delete c.listen.adminAllowNonLoopback;
      expect(load(c, { QMESH_LISTEN_ADMIN_ALLOW_NON_LOOPBACK: 'true' }).listen.adminAllowNonLoopback).toBe(true);
    });
  }

  it('accepts any loopback admin address by default', () => {
    for (const admin of ['127.0.0.1:15000', '127.0.0.53:15000', '[::1]:15000']) {
      const c = base();
      c.listen.admin = admin;
      expect(load(c).listen.adminAllowNonLoopback).toBe(false);
    }
  });
});

describe('drain grace against the stop timeout', () => {
  it('refuses drain.graceMs + 5000 ms above drain.stopTimeoutMs, naming both keys', () => {
    const message = refusal({ ...base(), drain: { graceMs: 40_001 } });
    expect(message).toMatch(/: drain\.graceMs: 40001 ms plus 5000 ms .* exceeds drain\.stopTimeoutMs \(45000 ms/);
    expect(refusal({ ...base(), drain: { graceMs: 60_000, stopTimeoutMs: 64_000 } })).toMatch(/drain\.graceMs.*drain\.stopTimeoutMs \(64000 ms/);
  });

  it('accepts the defaults, a grace that fits exactly, and a raised stop timeout', () => {
    expect(load(base()).drain).toEqual({ graceMs: 30_000, stopTimeoutMs: 45_000 });
    expect(load({ ...base(), drain: { graceMs: 40_000 } }).drain.graceMs).toBe(40_000);
    expect(load({ ...base(), drain: { graceMs: 60_000, stopTimeoutMs: 65_000 } }).drain.stopTimeoutMs).toBe(65_000);
  });

  it('the shipped unit\'s TimeoutStopSec equals the default of drain.stopTimeoutMs', () => {
    const m = /^(\d+)s$/.exec(unitDirective('TimeoutStopSec')[0] ?? '');
    expect(m, 'TimeoutStopSec=<n>s in systemd/qmesh.service').not.toBeNull();
    expect(Number(m![1]) * 1000).toBe((schema.drain as any).stopTimeoutMs?.default);
  });
});

describe('peers sharing an underlay address', () => {
  it('refuses two peers on one IP, whatever their ports', () => {
    const c = base();
    c.peers.push({ name: 'host-4', endpoint: '198.18.0.2:4434', cidrs: ['198.19.4.0/24'] });
    expect(refusal(c)).toMatch(/: peers\[2\]\.endpoint: 198\.18\.0\.2 is also the address of peers\[0\]\.endpoint/);
  });

  it('refuses two IPv6 peers on one address written differently', () => {
    const c = base();
    c.peers.push({ name: 'host-4', endpoint: '[fd00:18:0:0:0:0:0:3]:5000', cidrs: ['198.19.4.0/24'] });
    expect(refusal(c)).toMatch(/: peers\[2\]\.endpoint: fd00:18::3 is also the address of peers\[1\]\.endpoint/);
  });

  it('refuses a peer on this node\'s own listen.quic address, also on another port', () => {
    const c = base();
    c.peers[0].endpoint = '198.18.0.1:4434';
    expect(refusal(c)).toMatch(/: peers\[0\]\.endpoint: 198\.18\.0\.1 is this node's own address \(listen\.quic\)/);
  });
});

describe('IPv6 zones', () => {
  it('refuses a zone in a peer endpoint', () => {
    const c = base();
    c.peers[1].endpoint = '[fe80::3%eth0]:4433';
    expect(refusal(c)).toMatch(/: peers\[1\]\.endpoint has an IPv6 zone .*zones .* are not supported/);
  });

  it('refuses a zone in listen.quic and listen.admin', () => {
    const c = base();
    c.listen.quic = '[fd00:18::1%eth0]:4433';
    expect(refusal(c)).toMatch(/: listen\.quic: has an IPv6 zone .*not supported/);
    const d = base();
    d.listen.admin = '[::1%lo]:15000';
    expect(refusal(d)).toMatch(/: listen\.admin: has an IPv6 zone .*not supported/);
  });

  it('refuses a zone in local, peer and policy CIDRs', () => {
    expect(refusal(withLocal('fd00:19:9::%eth0/64'))).toMatch(/: local\.cidrs\[2\] has an IPv6 zone .*not supported/);
    expect(refusal(withPeerCidr(1, 'fd00:19:9::%eth0/64'))).toMatch(/: peers\[1\]\.cidrs\[2\] has an IPv6 zone .*not supported/);
    const c = { ...base(), policy: { default: 'allow', rules: [{ action: 'deny', sourceCidrs: ['fd00:19:3::%eth1/64'] }] } };
    expect(refusal(c)).toMatch(/: policy\.rules\[0\]\.sourceCidrs\[0\] has an IPv6 zone .*not supported/);
  });
});

describe('capture.failClosedCidrs', () => {
  const withFailClosed = (cidrs: string[]) => ({ ...base(), capture: { failClosedCidrs: cidrs } });

  it('defaults to none, and loads the fleet\'s blocks from the file or the environment', () => {
    expect(load(base()).capture.failClosedCidrs).toEqual([]);
    expect(load(withFailClosed(['198.19.0.0/16', 'fd00:19::/48'])).capture.failClosedCidrs.map(String)).toEqual(['198.19.0.0/16', 'fd00:19::/48']);
    expect(load(base(), { QMESH_CAPTURE_FAIL_CLOSED_CIDRS: '["198.19.0.0/16"]' }).capture.failClosedCidrs.map(String)).toEqual(['198.19.0.0/16']);
  });

  it('refuses a malformed or reserved block, naming it', () => {
    expect(refusal(withFailClosed(['198.19.0.0/33']))).toMatch(/: capture\.failClosedCidrs\[0\] must be a CIDR/);
    expect(refusal(withFailClosed(['198.19.0.1/16']))).toMatch(/: capture\.failClosedCidrs\[0\] has host bits set/);
    const cases: Array<[string, RegExp]> = [
      ['0.0.0.0/0', /covers every IPv4 address/],
      ['::/0', /covers every IPv6 address/],
      ['127.0.0.0/8', /loopback/],
      ['0.0.0.0/1', /covers loopback 127\.0\.0\.0\/8/],
      ['169.254.0.0/16', /link-local/],
      ['fe80::/10', /link-local/],
      ['224.0.0.0/4', /multicast/],
      ['::ffff:0:0/96', /IPv4-mapped/],
    ];
    for (const [cidr, why] of cases) {
      const message = refusal(withFailClosed(['198.19.0.0/16', cidr]));
      expect(message).toMatch(new RegExp(`: capture\\.failClosedCidrs\\[1\\]: ${esc(cidr)} `));
      expect(message).toMatch(why);
    }
  });

  it('refuses listen.quic or a peer endpoint inside a fail-closed block: the QUIC packets themselves would be dropped', () => {
    expect(refusal(withFailClosed(['198.18.0.0/16']))).toMatch(/: listen\.quic: 198\.18\.0\.1 lies inside 198\.18\.0\.0\/16 \(capture\.failClosedCidrs\).*QUIC packets themselves would be dropped/);
    expect(refusal(withFailClosed(['198.18.0.2/32']))).toMatch(/: peers\[0\]\.endpoint: 198\.18\.0\.2 lies inside 198\.18\.0\.2\/32 \(capture\.failClosedCidrs\)/);
    expect(refusal(withFailClosed(['fd00:18::/64']))).toMatch(/: peers\[1\]\.endpoint: fd00:18::3 lies inside fd00:18::\/64 \(capture\.failClosedCidrs\)/);
  });

  it('refuses an etcd endpoint (an IP literal) inside a fail-closed block; a DNS name is not checked', () => {
    const etcd = (endpoints: string[]) => ({
      ...withFailClosed(['198.19.0.0/16', 'fd00:19::/32']),
      membership: { source: 'etcd', etcd: { endpoints, ca: 'etcd/ca.crt', cert: 'etcd/host-1.crt', key: 'etcd/host-1.key' } },
    });
    expect(refusal(etcd(['https://198.18.0.11:2379', 'https://198.19.0.11:2379']))).toMatch(
      /: membership\.etcd\.endpoints\[1\]: 198\.19\.0\.11 lies inside 198\.19\.0\.0\/16 \(capture\.failClosedCidrs\); the packets to etcd would be dropped/,
    );
    expect(refusal(etcd(['https://[fd00:19::11]:2379']))).toMatch(/: membership\.etcd\.endpoints\[0\]: fd00:19::11 lies inside fd00:19::\/32/);
    expect(load(etcd(['https://198.18.0.11:2379', 'https://etcd-1.example:2379', 'https://[fd00:18::11]:2379'])).membership.etcd.endpoints).toHaveLength(3);
  });

  it('allows local and peer CIDRs outside every fail-closed block (they are then protected from non-peers only inside it)', () => {
    const c = withFailClosed(['198.19.0.0/16']);
    c.local.cidrs.push('10.20.0.0/16');
    c.peers[0].cidrs.push('10.21.0.0/16');
    expect(load(c).local.cidrs.map(String)).toContain('10.20.0.0/16');
  });
});
