// Which changes a reload refuses (restart-only), and the ansible role's copy of that
// list: the role restarts instead of reloading for exactly these keys, so a key added
// to one and not the other would have the role send a reload the daemon refuses.
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { RESTART_ONLY_KEYS, RESTART_ONLY_KEYS_WITH_ETCD, restartOnlyChanges } from '../../daemon/config/reload-check.js';
import { load } from '../support/config-load.js';

const ROLE_VARS = path.join(import.meta.dirname, '../../ansible/roles/qmesh/vars/main.yml');

/** The items of a top-level YAML list `name:` followed by `  - item` lines (the shape vars/main.yml uses). */
function yamlList(text: string, name: string): string[] {
  const block = new RegExp(`^${name}:\\n((?:  - .*\\n)+)`, 'm').exec(text);
  if (!block) throw new Error(`${name} is not a list in ${ROLE_VARS}`);
  return block[1]!.trim().split('\n').map((line) => line.replace(/^\s*-\s*/, '').trim());
}

const fileConfig = {
  node: { name: 'host-1' },
  listen: { quic: '198.18.0.1:4433' },
  tls: { cert: 'pki/host-1.crt', key: 'pki/host-1.key' },
  local: { cidrs: ['198.19.1.0/24'] },
  peers: [{ name: 'host-2', endpoint: '198.18.0.2:4433', cidrs: ['198.19.2.0/24'] }],
};
const etcdConfig = {
  ...fileConfig,
  capture: { failClosedCidrs: ['198.19.0.0/16'] },
  // The prefix is set: its default follows tls.trustDomain, which would make that change two.
  membership: { source: 'etcd', etcd: { endpoints: ['https://198.18.0.9:2379'], ca: 'etcd/ca.crt', cert: 'etcd/host-1.crt', key: 'etcd/host-1.key', prefix: '/qmesh/hosts/' } },
};

/** One change of each restart-only key, applied to a config. */
const change: Record<string, (c: any) => object> = {
  'node.name': (c) => ({ ...c, node: { name: 'host-9' } }),
  'listen.quic': (c) => ({ ...c, listen: { ...c.listen, quic: '198.18.0.1:4434' } }),
  'listen.capture': (c) => ({ ...c, listen: { ...c.listen, capture: 15002 } }),
  'listen.admin': (c) => ({ ...c, listen: { ...c.listen, admin: '127.0.0.1:15010' } }),
  'tls.trustDomain': (c) => ({ ...c, tls: { ...c.tls, trustDomain: 'other.test' } }),
  tunnel: (c) => ({ ...c, tunnel: { idleTimeoutMs: 9000 } }),
  'capture.mark': (c) => ({ ...c, capture: { ...c.capture, mark: 0x1234 } }),
  membership: (c) => ({ ...c, membership: { ...c.membership, etcd: { ...c.membership?.etcd, leaseTtlMs: 20_000 } } }),
  'local.cidrs': (c) => ({ ...c, local: { cidrs: ['198.19.1.0/25'] } }),
};

describe('restart-only keys', () => {
  it('the ansible role restarts for exactly the keys the daemon refuses to reload', () => {
    const vars = fs.readFileSync(ROLE_VARS, 'utf8');
    expect(yamlList(vars, 'qmesh_restart_only_keys')).toEqual(RESTART_ONLY_KEYS);
    expect(yamlList(vars, 'qmesh_restart_only_keys_etcd')).toEqual(RESTART_ONLY_KEYS_WITH_ETCD);
  });

  it('names each restart-only key that changed, and only that one', () => {
    expect(Object.keys(change).sort()).toEqual([...RESTART_ONLY_KEYS, ...RESTART_ONLY_KEYS_WITH_ETCD].sort());
    const running = load(etcdConfig);
    for (const key of [...RESTART_ONLY_KEYS, ...RESTART_ONLY_KEYS_WITH_ETCD]) {
      const changes = restartOnlyChanges(running, load(change[key]!(etcdConfig)));
      expect(changes, key).toHaveLength(1);
      expect(changes[0]!.startsWith(`${key} (`), `${key}: ${changes[0]}`).toBe(true);
    }
  });

  it('lets a reload change the rest: peers, policy, tunnel.maxStreams, and local.cidrs with file membership', () => {
    const running = load(fileConfig);
    expect(restartOnlyChanges(running, load({ ...fileConfig, peers: [] }))).toEqual([]);
    expect(restartOnlyChanges(running, load({ ...fileConfig, policy: { default: 'deny' } }))).toEqual([]);
    expect(restartOnlyChanges(running, load({ ...fileConfig, tunnel: { maxStreams: 100 } }))).toEqual([]);
    expect(restartOnlyChanges(running, load(change['local.cidrs']!(fileConfig)))).toEqual([]);
    expect(restartOnlyChanges(load(etcdConfig), load({ ...etcdConfig, tunnel: { maxStreams: 100 } }))).toEqual([]);
  });
});
