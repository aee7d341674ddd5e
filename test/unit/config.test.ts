// The config loader: defaults, strictness, messages that name the key, invariants.
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../daemon/config/load.js';

const base = () => ({
  node: { name: 'host-1' },
  listen: { quic: '198.18.0.1:4433' },
  tls: { cert: 'pki/host-1.crt', key: 'pki/host-1.key' },
  local: { cidrs: ['198.19.1.0/24'] },
  peers: [{ name: 'host-2', endpoint: '198.18.0.2:4433', cidrs: ['198.19.2.0/24'] }],
});
const load = (raw: object) => parseConfig(raw, '/etc/qmesh/config.json');
const refusal = (raw: object): string => {
  try {
    load(raw);
  } catch (err) {
    expect((err as { code?: string }).code).toBe('QMESH_ERR_CONFIG');
    return (err as Error).message;
  }
  throw new Error('config was accepted');
};

describe('config loader', () => {
  it('fills defaults, resolves paths against the file, and freezes the result', () => {
    const c = load(base());
    expect(c.listen.capture).toBe(15001);
    expect(c.listen.admin).toEqual({ host: '127.0.0.1', port: 15000, family: 4 });
    expect(c.tls.ca).toBe(path.resolve('/etc/qmesh/pki/ca.crt'));
    expect(c.tls.trustDomain).toBe('qmesh.test');
    expect(c.peers[0]!.cidrs.map(String)).toEqual(['198.19.2.0/24']);
    expect(Object.isFrozen(c.peers[0])).toBe(true);
    expect(() => ((c as any).node.name = 'x')).toThrow();
  });

  it('names the offending key', () => {
    expect(refusal({ ...base(), local: { cidrs: ['198.19.1.0/33'] } })).toMatch(/local\.cidrs\[0\]/);
    expect(refusal({ ...base(), peers: [{ name: 'host-2', endpoint: 'host2:4433', cidrs: ['198.19.2.0/24'] }] })).toMatch(/peers\[0\]\.endpoint/);
    expect(refusal({ ...base(), node: { name: 'Host_1' } })).toMatch(/node\.name/);
    expect(refusal({ ...base(), lsten: {} })).toMatch(/lsten: unknown key/);
    expect(refusal({ ...base(), listen: { quic: '198.18.0.1:4433', capture: 70000 } })).toMatch(/listen\.capture/);
    expect(refusal({ ...base(), local: { cidrs: ['198.19.1.5/24'] } })).toMatch(/host bits/);
  });

  it('refuses overlapping CIDRs of different hosts', () => {
    expect(refusal({ ...base(), local: { cidrs: ['198.19.0.0/16'] } })).toMatch(/overlaps/);
  });

  it('refuses a peer listed twice or named like this node', () => {
    const p = base().peers[0]!;
    expect(refusal({ ...base(), peers: [p, { ...p, endpoint: '198.18.0.3:4433', cidrs: ['198.19.3.0/24'] }] })).toMatch(/used twice/);
    expect(refusal({ ...base(), peers: [{ ...p, name: 'host-1' }] })).toMatch(/used twice/);
  });

  it('refuses a tunnel endpoint inside a function CIDR', () => {
    expect(refusal({ ...base(), listen: { quic: '198.19.1.1:4433' } })).toMatch(/listen\.quic.*inside/);
  });

  it('reads overrides from the environment it is given (and only that)', () => {
    const c = parseConfig(base(), '/x/c.json', { QMESH_LOG_LEVEL: 'debug', QMESH_LOCAL_CIDRS: '["198.19.1.0/24","198.19.100.0/24"]' });
    expect(c.log.level).toBe('debug');
    expect(c.local.cidrs.map(String)).toEqual(['198.19.1.0/24', '198.19.100.0/24']);
  });
});
