// etcd membership without etcd: the config keys, the entry format, admission in
// creation order through the file's claim checks, and the on-disk cache. The
// real cluster is exercised by test/e2e/membership-etcd.test.ts.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseConfig, type Config } from '../../daemon/config/load.js';
import { admit } from '../../daemon/membership/admit.js';
import { readCache, writeCache } from '../../daemon/membership/cache.js';
import { decodeEntry, ownEntry, type EtcdEntry } from '../../daemon/membership/entry.js';
import { load, refusal } from '../support/config-load.js';

const PREFIX = '/qmesh/qmesh.test/hosts/';
const etcd = {
  source: 'etcd',
  etcd: { endpoints: ['https://198.18.0.1:2379', 'https://198.18.0.2:2379'], ca: 'etcd/ca.crt', cert: 'etcd/host-1.crt', key: 'etcd/host-1.key' },
};
/** A config with etcd membership; a key given as undefined is left out (membership: undefined is a file config). */
const base = (extra: object = {}): object =>
  Object.fromEntries(
    Object.entries({
      node: { name: 'host-1' },
      listen: { quic: '198.18.0.1:4433' },
      tls: { cert: 'pki/host-1.crt', key: 'pki/host-1.key' },
      local: { cidrs: ['198.19.1.0/24'] },
      capture: { failClosedCidrs: ['198.19.0.0/16'] },
      membership: etcd,
      ...extra,
    }).filter(([, v]) => v !== undefined),
  );
const withEtcd = (etcdKeys: object): object => base({ membership: { source: 'etcd', etcd: { ...etcd.etcd, ...etcdKeys } } });

let revision = 10;
const entry = (name: string, value: object | string, key = `${PREFIX}${name}`): EtcdEntry => {
  revision += 1;
  return { key, value: typeof value === 'string' ? value : JSON.stringify(value), createRevision: String(revision), modRevision: String(revision) };
};
const host = (n: number, over: object = {}): object => ({
  id: `spiffe://qmesh.test/host/host-${n}`,
  name: `host-${n}`,
  endpoint: `198.18.0.${n}:4433`,
  cidrs: [`198.19.${n}.0/24`],
  ...over,
});

describe('membership config', () => {
  it('defaults to the file, and with etcd resolves paths and the prefix from the trust domain', () => {
    expect(load(base({ membership: undefined })).membership.source).toBe('file');
    const c = load(base());
    expect(c.membership.etcd.prefix).toBe(PREFIX);
    expect(c.membership.etcd.ca).toBe('/etc/qmesh/etcd/ca.crt');
    expect(c.membership.etcd.leaseTtlMs).toBe(10_000);
    expect(c.membership.etcd.cacheFile).toBe('/var/lib/qmesh/membership.json');
    expect(c.peers).toEqual([]);
    expect(load(base({ tls: { cert: 'a', key: 'b', trustDomain: 'prod.example' } })).membership.etcd.prefix).toBe('/qmesh/prod.example/hosts/');
  });

  it('takes every key from the environment', () => {
    const c = parseConfig(base({ membership: undefined }), '/etc/qmesh/config.json', {
      QMESH_MEMBERSHIP_SOURCE: 'etcd',
      QMESH_MEMBERSHIP_ETCD_ENDPOINTS: '["https://10.0.0.1:2379"]',
      QMESH_MEMBERSHIP_ETCD_CA: '/e/ca.pem',
      QMESH_MEMBERSHIP_ETCD_CERT: '/e/c.pem',
      QMESH_MEMBERSHIP_ETCD_KEY: '/e/k.pem',
      QMESH_MEMBERSHIP_ETCD_PREFIX: '/fleet/a/',
      QMESH_MEMBERSHIP_ETCD_LEASE_TTL_MS: '5000',
      QMESH_MEMBERSHIP_ETCD_CACHE_FILE: '/run/q/m.json',
    });
    expect(c.membership).toEqual({
      source: 'etcd',
      etcd: { endpoints: ['https://10.0.0.1:2379'], ca: '/e/ca.pem', cert: '/e/c.pem', key: '/e/k.pem', prefix: '/fleet/a/', leaseTtlMs: 5000, cacheFile: '/run/q/m.json' },
    });
  });

  it('refuses what etcd membership cannot run with, naming the key', () => {
    expect(refusal(withEtcd({ endpoints: ['http://198.18.0.1:2379'] }))).toMatch(/membership\.etcd\.endpoints\[0\].*uses http: qmesh speaks to etcd over TLS only/);
    expect(refusal(withEtcd({ endpoints: ['https://198.18.0.1'] }))).toMatch(/membership\.etcd\.endpoints\[0\].*has no port/);
    expect(refusal(withEtcd({ endpoints: ['https://198.18.0.1:2379/v3'] }))).toMatch(/more than a host and port/);
    expect(refusal(withEtcd({ endpoints: [] }))).toMatch(/membership\.etcd\.endpoints: .*no endpoint/);
    expect(refusal(withEtcd({ endpoints: ['https://a:1', 'https://a:1'] }))).toMatch(/listed twice/);
    expect(refusal(withEtcd({ cert: '' }))).toMatch(/membership\.etcd\.cert:/);
    expect(refusal(withEtcd({ prefix: 'qmesh/hosts' }))).toMatch(/membership\.etcd\.prefix/);
    expect(refusal(withEtcd({ leaseTtlMs: 2500 }))).toMatch(/membership\.etcd\.leaseTtlMs.*whole number of seconds/);
    expect(refusal(withEtcd({ leaseTtlMs: 1000 }))).toMatch(/membership\.etcd\.leaseTtlMs/);
    expect(refusal(withEtcd({ endpoint: ['https://a:1'] }))).toMatch(/membership\.etcd\.endpoint: unknown key/);
    expect(refusal(base({ membership: { source: 'consul' } }))).toMatch(/membership\.source/);
    expect(refusal(base({ capture: undefined }))).toMatch(/capture\.failClosedCidrs: membership\.source is "etcd", which needs the fleet's function address space/);
    expect(refusal(base({ local: { cidrs: ['10.1.0.0/24'] } }))).toMatch(/local\.cidrs\[0\]: 10\.1\.0\.0\/24 lies outside capture\.failClosedCidrs/);
    expect(refusal(base({ listen: { quic: '0.0.0.0:4433' } }))).toMatch(/listen\.quic: 0\.0\.0\.0 is an unspecified address .*the endpoint this host advertises/);
    // Written as operators write them: the default port, upper-case names and IPv6 literals are fine.
    expect(load(withEtcd({ endpoints: ['https://10.0.0.1:443', 'https://[FD00::1]:2379', 'https://ETCD1:2379'] })).membership.etcd.endpoints).toHaveLength(3);
    expect(refusal(withEtcd({ endpoints: ['https://10.0.0.1:70000'] }))).toMatch(/port outside 1-65535/);
    expect(refusal(base({ membership: { source: 'file', etcd: etcd.etcd } }))).toMatch(/membership\.etcd\.endpoints: set, but membership\.source is "file"/);
  });

  it('lets a policy name hosts that have not joined yet only with etcd', () => {
    const policy = { default: 'deny', rules: [{ action: 'allow', from: ['host-7'] }] };
    expect(load(base({ policy })).policy.rules).toHaveLength(1);
    expect(refusal(base({ membership: undefined, policy }))).toMatch(/policy\.rules\[0\]\.from\[0\]: "host-7"/);
  });

  it('is restart-only', async () => {
    const { restartOnlyChanges } = await import('../../daemon/config/reload-check.js');
    expect(restartOnlyChanges(load(base()), load(withEtcd({ leaseTtlMs: 20_000 })))).toEqual([expect.stringMatching(/^membership /)]);
    expect(restartOnlyChanges(load(base()), load(base()))).toEqual([]);
    // This host's entry carries its CIDRs, written at start.
    expect(restartOnlyChanges(load(base()), load(base({ local: { cidrs: ['198.19.1.0/25'] } })))).toEqual([expect.stringMatching(/^local\.cidrs /)]);
    expect(restartOnlyChanges(load(base({ membership: undefined })), load(base({ membership: undefined, local: { cidrs: ['198.19.1.0/25'] } })))).toEqual([]);
  });
});

describe('etcd entries', () => {
  it('this host writes its name, SPIFFE ID, endpoint and CIDRs under <prefix><name>', () => {
    const own = ownEntry(load(base()));
    expect(own.key).toBe(`${PREFIX}host-1`);
    expect(JSON.parse(own.value)).toEqual({ id: 'spiffe://qmesh.test/host/host-1', name: 'host-1', endpoint: '198.18.0.1:4433', cidrs: ['198.19.1.0/24'] });
    const decoded = decodeEntry(PREFIX, 'qmesh.test', { ...own, createRevision: '1', modRevision: '1' });
    expect('peer' in decoded && decoded.peer.name).toBe('host-1');
  });

  it('an entry whose key, name and SPIFFE ID disagree is not a peer', () => {
    const problem = (e: EtcdEntry): string => {
      const d = decodeEntry(PREFIX, 'qmesh.test', e);
      if ('peer' in d) throw new Error('accepted');
      return d.problem;
    };
    expect(problem(entry('host-2', host(3)))).toMatch(/value\.name "host-3" is not the key's host name "host-2"/);
    expect(problem(entry('host-2', host(2, { id: 'spiffe://qmesh.test/host/host-3' })))).toMatch(/value\.id .* is not spiffe:\/\/qmesh\.test\/host\/host-2/);
    expect(problem(entry('host-2', host(2, { id: 'spiffe://other.test/host/host-2' })))).toMatch(/value\.id/);
    expect(problem(entry('host-2', host(2, { id: undefined })))).toMatch(/value\.id/);
    expect(problem(entry('Host_2', host(2), `${PREFIX}Host_2`))).toMatch(/host name "Host_2"/);
    expect(problem(entry('x', host(2), `${PREFIX}a/host-2`))).toMatch(/not <prefix><host name>/);
    expect(problem(entry('host-2', '{"name":'))).toMatch(/not JSON/);
    expect(problem(entry('host-2', host(2, { extra: 1 })))).toMatch(/value\.extra is not a peer key/);
    expect(problem(entry('host-2', host(2, { cidrs: [] })))).toMatch(/value\.cidrs must be a non-empty array/);
    expect(problem(entry('host-2', host(2, { endpoint: 'h2:4433' })))).toMatch(/value\.endpoint/);
  });
});

describe('admission', () => {
  const file = (): Config => load(base());

  it('admits valid entries as peers after the file\'s, skipping this host\'s own', () => {
    const a = admit(file(), [entry('host-3', host(3)), entry('host-2', host(2)), { ...ownEntry(file()), createRevision: '1', modRevision: '1' }]);
    expect(a.admitted).toEqual(['host-3', 'host-2']);
    expect(a.refused).toEqual([]);
    expect(a.config.peers.map((p) => p.name)).toEqual(['host-3', 'host-2']);
    expect(Object.isFrozen(a.config.peers)).toBe(true);
  });

  it('refuses a conflicting claim, and the earlier owner (lower create revision) keeps its CIDRs', () => {
    const first = entry('host-2', host(2));
    const thief = entry('host-9', host(9, { cidrs: ['198.19.2.0/24'] }));
    // Whatever order etcd lists them in, creation decides.
    for (const order of [[first, thief], [thief, first]]) {
      const a = admit(file(), order);
      expect(a.admitted).toEqual(['host-2']);
      expect(a.refused).toEqual([{ key: `${PREFIX}host-9`, reason: expect.stringMatching(/198\.19\.2\.0\/24 overlaps 198\.19\.2\.0\/24 in etcd \/qmesh\/qmesh\.test\/hosts\/host-2\.cidrs/) }]);
    }
    // Once the owner leaves, the claim stands.
    expect(admit(file(), [thief]).admitted).toEqual(['host-9']);
    // Nor may a later entry take part of an earlier one's block, or cover it (in the file, nesting is allowed).
    const part = entry('host-8', host(8, { cidrs: ['198.19.2.128/25'] }));
    const cover = entry('host-7', host(7, { cidrs: ['198.19.0.0/17'] }));
    const b = admit(file(), [first, part, cover]);
    expect(b.admitted).toEqual(['host-2']);
    expect(b.refused.map((r) => r.reason)).toEqual([
      expect.stringMatching(/198\.19\.2\.128\/25 overlaps 198\.19\.2\.0\/24 in etcd \S+host-2\.cidrs/),
      expect.stringMatching(/198\.19\.0\.0\/17 overlaps/),
    ]);
  });

  it('checks each entry as a peer in the file is checked', () => {
    const cases: Array<[object, RegExp]> = [
      [host(4, { cidrs: ['198.19.1.0/25'] }), /overlaps 198\.19\.1\.0\/24 in local\.cidrs/],
      [host(4, { cidrs: ['0.0.0.0/0'] }), /covers every IPv4 address/],
      [host(4, { cidrs: ['127.0.0.0/8'] }), /loopback/],
      [host(4, { endpoint: '198.18.0.1:5555' }), /this node's own address/],
      [host(4, { endpoint: '198.19.4.1:4433' }), /lies inside 198\.19\.0\.0\/16 \(capture\.failClosedCidrs\)/],
      [host(4, { endpoint: '198.18.1.4:4433', cidrs: ['198.18.0.0/24'] }), /198\.18\.0\.0\/24 lies outside capture\.failClosedCidrs/],
      [host(4, { cidrs: ['8.8.8.0/24'] }), /lies outside capture\.failClosedCidrs \(198\.19\.0\.0\/16\); an etcd entry may claim only/],
      [host(4, { endpoint: '127.0.0.1:4433' }), /127\.0\.0\.1 is a loopback address/],
      [host(4, { endpoint: '0.0.0.0:53' }), /0\.0\.0\.0 is an unspecified address/],
      [host(4, { endpoint: '224.0.0.1:4433' }), /multicast/],
      [host(4, { cidrs: Array.from({ length: 65 }, (_, k) => `198.19.${100 + k}.0/24`) }), /holds 65 CIDRs; an entry may claim at most 64/],
    ];
    for (const [value, reason] of cases) {
      const a = admit(file(), [entry('host-4', value)]);
      expect(a.admitted).toEqual([]);
      expect(a.refused[0]?.reason).toMatch(reason);
    }
    const sameIp = admit(file(), [entry('host-2', host(2)), entry('host-5', host(5, { endpoint: '198.18.0.2:4434' }))]);
    expect(sameIp.refused[0]?.reason).toMatch(/198\.18\.0\.2 is also the address of etcd \/qmesh\/qmesh\.test\/hosts\/host-2\.endpoint/);
  });

  it('refuses an entry whose endpoint lies inside capture.failClosedCidrs (its QUIC packets would be dropped)', () => {
    const fenced = load(base({ capture: { failClosedCidrs: ['198.19.0.0/16'] } }));
    const a = admit(fenced, [entry('host-2', host(2)), entry('host-7', host(7, { endpoint: '198.19.200.7:4433' }))]);
    expect(a.admitted).toEqual(['host-2']);
    expect(a.refused).toEqual([{ key: `${PREFIX}host-7`, reason: expect.stringMatching(/etcd \/qmesh\/qmesh\.test\/hosts\/host-7\.endpoint: 198\.19\.200\.7 lies inside 198\.19\.0\.0\/16 \(capture\.failClosedCidrs\)/) }]);
  });

  it('a peer of the file keeps its name and CIDRs against etcd', () => {
    const withFilePeer = load(base({ peers: [{ name: 'host-2', endpoint: '198.18.0.2:4433', cidrs: ['198.19.2.0/24'] }] }));
    const a = admit(withFilePeer, [entry('host-2', host(2, { endpoint: '198.18.0.12:4433' })), entry('host-6', host(6, { cidrs: ['198.19.2.0/24'] }))]);
    expect(a.admitted).toEqual([]);
    expect(a.refused.map((r) => r.reason)).toEqual([expect.stringMatching(/"host-2" is used twice/), expect.stringMatching(/in peers\[0\]\.cidrs/)]);
    expect(a.config.peers.map((p) => p.name)).toEqual(['host-2']);
  });
});

describe('membership cache', () => {
  it('round-trips, and is refused when missing, corrupt or for another prefix', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qmesh-cache-'));
    const file = path.join(dir, 'state', 'membership.json');
    expect(readCache(file, PREFIX)).toEqual({ problem: expect.stringMatching(/ENOENT/) });
    const cache = { syncedAtMs: 1_700_000_000_000, prefix: PREFIX, revision: '42', entries: [entry('host-2', host(2))] };
    writeCache(file, cache);
    expect(fs.statSync(file).mode & 0o777).toBe(0o600);
    expect(readCache(file, PREFIX)).toEqual(cache);
    expect(readCache(file, '/other/')).toEqual({ problem: expect.stringMatching(/prefix \/qmesh\/qmesh\.test\/hosts\/, not \/other\//) });
    fs.writeFileSync(file, '{"syncedAtMs": 1, "revision": "1", "entries": [{"key": 1}]}');
    expect(readCache(file, PREFIX)).toEqual({ problem: expect.stringMatching(/not a qmesh membership cache/) });
    fs.writeFileSync(file, JSON.stringify({ ...cache, entries: [{ ...cache.entries[0], createRevision: 'x1' }] }));
    expect(readCache(file, PREFIX)).toEqual({ problem: expect.stringMatching(/not a qmesh membership cache/) });
    fs.writeFileSync(file, 'garbage');
    expect(readCache(file, PREFIX)).toEqual({ problem: expect.stringMatching(/not JSON/) });
    fs.rmSync(dir, { recursive: true });
  });
});
