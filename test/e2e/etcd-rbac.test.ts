// etcd as qmesh's membership source, RBAC side: a real three-member etcd 3.4 cluster
// (TLS, client and peer certificate authentication) in three host namespaces of the
// test topology, set up by the operator's own script deploy/etcd/qmesh-etcd-rbac.sh.
// Proves, with the npm etcd3 client the daemon uses, that a host (etcd user = its
// certificate's CN) reads the whole prefix and writes only its own key, leases
// included; that a certificate without a user gets nothing; that the script is
// idempotent and refuses bad arguments; and that stopping two members and starting
// them again brings the cluster back (the daemon's outage tests rely on that).
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanupStale, randomPrefix, Topology } from '../../daemon/demo/topology.js';
import { makeEtcdPki, startEtcdCluster, type EtcdCluster, type EtcdClientResult } from '../../daemon/demo/etcd-cluster.js';
import { skipUnlessTool } from '../support/tools.js';

const NETNS = process.env.QMESH_TEST_NETNS === '1';
const SKIP =
  !NETNS ||
  skipUnlessTool('etcd', 'etcd-server') ||
  skipUnlessTool('etcdctl', 'etcd-client') ||
  skipUnlessTool('openssl', 'openssl');

const PREFIX = '/qmesh/qmesh.test/hosts/';
const KEY = (host: string): string => `${PREFIX}${host}`;

function denied(r: EtcdClientResult | undefined): void {
  expect(r).toMatchObject({ ok: false, error: 'EtcdPermissionDeniedError' });
  expect(r && !r.ok ? r.message : '').toMatch(/permission denied/);
}

describe.skipIf(SKIP)('etcd RBAC for qmesh membership (deploy/etcd/qmesh-etcd-rbac.sh)', () => {
  const prefix = randomPrefix('qe');
  let topo: Topology | undefined;
  let etcd: EtcdCluster;
  let dir: string | undefined;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'qmesh-etcd-rbac-'));
    topo = await Topology.create({ prefix, hosts: 3, functionsPerHost: 1 });
    const members = topo.hosts.map((h) => ({ name: `etcd-${h.index}`, ns: h.ns, ip: h.underlayIp }));
    const pki = await makeEtcdPki(join(dir, 'pki'), {
      memberIps: members.map((m) => m.ip),
      clients: ['host-1', 'host-2', 'host-3', 'host-9'],
    });
    const t0 = Date.now();
    etcd = await startEtcdCluster({ members, dir, pki });
    console.log(`etcd cluster of ${members.length} healthy in ${Date.now() - t0} ms`);
  });

  afterAll(async () => {
    await etcd?.destroy();
    await topo?.destroy();
    await cleanupStale(prefix);
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('the script refuses bad arguments with a message and a non-zero exit, and creates nothing', async () => {
    const noSlash = await etcd.rbacScript(['/qmesh/qmesh.test/hosts', 'host-1']);
    expect(noSlash.code).toBe(2);
    expect(noSlash.stderr).toMatch(/prefix must start and end with "\/"/);

    const relative = await etcd.rbacScript(['qmesh/hosts/', 'host-1']);
    expect(relative.code).toBe(2);
    expect(relative.stderr).toMatch(/prefix must start and end with "\/"/);

    const badHost = await etcd.rbacScript([PREFIX, 'host-1', 'Host_2']);
    expect(badHost.code).toBe(2);
    expect(badHost.stderr).toMatch(/host "Host_2" is not a DNS label/);

    const noHost = await etcd.rbacScript([PREFIX]);
    expect(noHost.code).toBe(2);
    expect(noHost.stderr).toMatch(/need a prefix and at least one host/);

    const help = await etcd.rbacScript(['--help']);
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/^Usage: qmesh-etcd-rbac\.sh \[--enable-auth\] <prefix> <host>/);

    // Validation happens before anything is written: no user, no role.
    expect((await etcd.etcdctl(['user', 'list'])).trim()).toBe('');
    expect((await etcd.etcdctl(['role', 'list'])).trim()).toBe('');
  });

  it('sets up one role per host and enables auth; a second run succeeds and changes nothing', async () => {
    const first = await etcd.enableAuth(PREFIX, ['host-1', 'host-2']);
    expect(first.stdout).toContain(`host-1 may write ${KEY('host-1')} and read ${PREFIX}*`);
    expect(first.stdout).toContain('authentication is enabled');
    // Enforced from now on: a certificate whose CN is no etcd user is refused.
    await expect(etcd.etcdctl(['get', PREFIX, '--prefix'], { user: 'host-9' })).rejects.toThrow(/permission denied/);

    const roleOf = (host: string): Promise<string> => etcd.etcdctl(['role', 'get', `qmesh-host-${host}`]);
    const before = await roleOf('host-1');
    // Exactly: read on the prefix range, readwrite on the one key (etcd lists it under both).
    expect(before).toBe(
      [
        'Role qmesh-host-host-1',
        'KV Read:',
        `\t[${PREFIX}, /qmesh/qmesh.test/hosts0) (prefix ${PREFIX})`,
        `\t${KEY('host-1')}`,
        'KV Write:',
        `\t${KEY('host-1')}`,
        '',
      ].join('\n'),
    );
    expect(await etcd.etcdctl(['user', 'get', 'host-2'])).toBe('User: host-2\nRoles: qmesh-host-host-2\n');
    expect(await etcd.etcdctl(['user', 'get', 'root'])).toBe('User: root\nRoles: root\n');

    const again = await etcd.enableAuth(PREFIX, ['host-1', 'host-2']);
    expect(again.stderr).toBe('');
    expect(await roleOf('host-1')).toBe(before);
    expect((await etcd.etcdctl(['user', 'list'])).trim().split('\n').sort()).toEqual(['host-1', 'host-2', 'root']);
  });

  it('a second run revokes a permission the role should not have', async () => {
    await etcd.etcdctl(['role', 'grant-permission', 'qmesh-host-host-2', 'readwrite', '--prefix', '/qmesh/']);
    const res = await etcd.rbacScript([PREFIX, 'host-2']);
    expect(res.code).toBe(0);
    expect(res.stderr).toContain('role qmesh-host-host-2: revoked a permission qmesh does not grant: [/qmesh/, /qmesh0)');
    expect(await etcd.etcdctl(['role', 'get', 'qmesh-host-host-2'])).not.toContain('/qmesh0');
  });

  it('host-1, with the etcd3 client: writes its own key, reads the prefix', async () => {
    const [put, get, all] = await etcd.client('host-1', [
      { op: 'put', key: KEY('host-1'), value: 'host-1 entry' },
      { op: 'get', key: KEY('host-1') },
      { op: 'getPrefix', prefix: PREFIX },
    ]);
    expect(put).toEqual({ ok: true });
    expect(get).toEqual({ ok: true, value: 'host-1 entry' });
    expect(all).toEqual({ ok: true, value: { [KEY('host-1')]: 'host-1 entry' } });
  });

  it("host-1 may not write, overwrite or delete another host's key, a longer key, or outside the prefix", async () => {
    const [put2] = await etcd.client('host-2', [{ op: 'put', key: KEY('host-2'), value: 'host-2 entry' }]);
    expect(put2).toEqual({ ok: true });

    const results = await etcd.client('host-1', [
      { op: 'put', key: KEY('host-2'), value: 'forged by host-1' },
      { op: 'delete', key: KEY('host-2') },
      { op: 'put', key: KEY('host-3'), value: 'forged by host-1' },
      { op: 'put', key: KEY('host-10'), value: 'forged by host-1' },
      { op: 'put', key: `${KEY('host-1')}/x`, value: 'forged by host-1' },
      { op: 'put', key: '/qmesh/qmesh.test/other', value: 'x' },
      { op: 'get', key: '/qmesh/qmesh.test/other' },
      { op: 'getPrefix', prefix: PREFIX },
    ]);
    for (const r of results.slice(0, 7)) denied(r);
    expect(results[7]).toEqual({ ok: true, value: { [KEY('host-1')]: 'host-1 entry', [KEY('host-2')]: 'host-2 entry' } });

    // root sees what really is there: nothing host-1 tried went through.
    const keys = await etcd.etcdctl(['get', '--prefix', '/', '--keys-only']);
    expect(keys.split('\n').filter(Boolean).sort()).toEqual([KEY('host-1'), KEY('host-2')]);
  });

  it('host-1 grants a lease, puts its own key under it, keeps it alive and revokes it', async () => {
    const [lease, foreign] = await etcd.client('host-1', [
      { op: 'lease', key: KEY('host-1'), value: 'leased entry', ttl: 10 },
      { op: 'put', key: KEY('host-2'), value: 'still forged' },
    ]);
    expect(lease).toMatchObject({ ok: true });
    const v = lease?.ok ? lease.value : undefined;
    expect(v.granted).toMatch(/^\d+$/);
    expect(v.putLease).toBe(v.granted);
    expect(Number(v.keptAlive)).toBeGreaterThan(0);
    expect(v.afterRevoke).toBeNull(); // revoking the lease deleted the key
    denied(foreign);
  });

  it("another host can neither revoke host-1's lease nor attach a key to it", async () => {
    const [grant] = await etcd.client('host-1', [{ op: 'leaseGrant', ttl: 30 }]);
    expect(grant).toMatchObject({ ok: true, value: expect.stringMatching(/^\d+$/) });
    const id = grant?.ok ? String(grant.value) : '';
    const [put] = await etcd.client('host-1', [{ op: 'leasePut', id, key: KEY('host-1'), value: 'leased by host-1' }]);
    expect(put).toEqual({ ok: true });

    // etcd 3.4 lets a revoke or a put under a lease through only if the user may write
    // every key already attached to that lease.
    const [revoke2, attach2] = await etcd.client('host-2', [
      { op: 'leaseRevoke', id },
      { op: 'leasePut', id, key: KEY('host-2'), value: 'on host-1 lease' },
    ]);
    denied(revoke2);
    denied(attach2);
    const [revoke9] = await etcd.client('host-9', [{ op: 'leaseRevoke', id }]);
    denied(revoke9);
    expect(await etcd.etcdctl(['get', '--print-value-only', KEY('host-1')])).toBe('leased by host-1\n');
    expect(await etcd.etcdctl(['get', '--print-value-only', KEY('host-2')])).toBe('host-2 entry\n');

    const [revoke1, after] = await etcd.client('host-1', [{ op: 'leaseRevoke', id }, { op: 'get', key: KEY('host-1') }]);
    expect(revoke1).toEqual({ ok: true });
    expect(after).toEqual({ ok: true, value: null });
  });

  it('host-1 watches the prefix and sees puts', async () => {
    const results = await etcd.client('host-1', [
      { op: 'watchPrefix', prefix: PREFIX },
      { op: 'put', key: KEY('host-1'), value: 'watched' },
      { op: 'watchEvents', count: 1, ms: 5_000 },
    ]);
    expect(results[0]).toEqual({ ok: true });
    expect(results[1]).toEqual({ ok: true });
    expect(results[2]).toEqual({ ok: true, value: [{ type: 'put', key: KEY('host-1'), value: 'watched' }] });
  });

  it('host-9 (a certificate from the cluster CA, but no etcd user) can neither read nor write', async () => {
    const [getAll, put, grant] = await etcd.client('host-9', [
      { op: 'getPrefix', prefix: PREFIX },
      { op: 'put', key: KEY('host-9'), value: 'x' },
      { op: 'leaseGrant', ttl: 10 },
    ]);
    denied(getAll);
    denied(put);
    // etcd 3.4 checks no permission on a lease grant: any certificate the cluster trusts
    // gets a lease, user or not. Attaching a key to it is what is refused.
    expect(grant).toMatchObject({ ok: true });
    const [leasePut] = await etcd.client('host-9', [{ op: 'leasePut', id: grant?.ok ? String(grant.value) : '0', key: KEY('host-9'), value: 'x' }]);
    denied(leasePut);
    expect(await etcd.etcdctl(['get', KEY('host-9')])).toBe('');
  });

  it('a host user cannot administer etcd', async () => {
    await expect(etcd.etcdctl(['user', 'add', 'evil', '--no-password'], { user: 'host-1' })).rejects.toThrow(/permission denied/);
    await expect(etcd.etcdctl(['role', 'grant-permission', 'qmesh-host-host-1', 'readwrite', '--prefix', '/'], { user: 'host-1' })).rejects.toThrow(
      /permission denied/,
    );
    const res = await etcd.rbacScript([PREFIX, 'host-3'], { user: 'host-1' });
    expect(res.code).toBe(1);
    expect(res.stderr).toMatch(/adding user host-3 failed: .*permission denied/);
  });

  it('stopping two of three members loses the quorum; starting them again brings the cluster back', async () => {
    const t0 = Date.now();
    await etcd.stop(1);
    await etcd.stop(2);
    const stopped = Date.now();
    expect(etcd.running(1) || etcd.running(2)).toBe(false);
    await expect(etcd.etcdctl(['put', '--command-timeout=2s', '/quorum-probe', 'x'], { endpoints: [etcd.endpoints[0]!] })).rejects.toThrow();

    await etcd.start(1);
    await etcd.start(2);
    await etcd.waitHealthy();
    console.log(`stopped two members in ${stopped - t0} ms, back to healthy in ${Date.now() - stopped} ms`);

    const [put, all] = await etcd.client('host-2', [
      { op: 'put', key: KEY('host-2'), value: 'after the outage' },
      { op: 'getPrefix', prefix: PREFIX },
    ]);
    expect(put).toEqual({ ok: true });
    expect(all).toEqual({ ok: true, value: { [KEY('host-1')]: 'watched', [KEY('host-2')]: 'after the outage' } });
    // The restarted members kept the RBAC setup (it lives in their data dirs).
    const [forged] = await etcd.client('host-2', [{ op: 'put', key: KEY('host-1'), value: 'forged' }], { endpoints: [etcd.endpoints[2]!] });
    denied(forged);
  });
});
