// The config loader: defaults, strictness, messages that name the key, invariants.
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { loadConfig, parseConfig } from '../../daemon/config/load.js';
import { IpAddress } from '../../daemon/policy/cidr.js';
import { evaluatePolicy } from '../support/policy-oracle.js';
import { load, refusal } from '../support/config-load.js';

const base = () => ({
  node: { name: 'host-1' },
  listen: { quic: '198.18.0.1:4433' },
  tls: { cert: 'pki/host-1.crt', key: 'pki/host-1.key' },
  local: { cidrs: ['198.19.1.0/24'] },
  peers: [{ name: 'host-2', endpoint: '198.18.0.2:4433', cidrs: ['198.19.2.0/24'] }],
});

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

  it('defaults the policy to allow everything, so configs without one keep working', () => {
    expect(load(base()).policy).toEqual({ default: 'allow', rules: [] });
  });

  it('reads a policy section, freezes it, and names the key at fault', () => {
    const c = load({ ...base(), policy: { default: 'deny', rules: [{ name: 'web', action: 'allow', from: ['host-2'], ports: [80, '8000-8999'] }] } });
    expect(c.policy.default).toBe('deny');
    expect(c.policy.rules[0]).toMatchObject({ name: 'web', action: 'allow', from: ['host-2'], ports: [{ first: 80, last: 80 }, { first: 8000, last: 8999 }] });
    expect(Object.isFrozen(c.policy.rules[0]!.ports)).toBe(true);
    const rule = { action: 'deny' };
    expect(refusal({ ...base(), policy: { rules: [rule, { action: 'deny', ports: [80, 'x'] }] } })).toMatch(/policy\.rules\[1\]\.ports\[1\] must be a port/);
    expect(refusal({ ...base(), policy: { default: 'reject' } })).toMatch(/policy\.default must be "allow" or "deny"/);
    expect(refusal({ ...base(), policy: { rules: [{ action: 'deny', sourceCidr: ['198.19.1.0/24'] }] } })).toMatch(/policy\.rules\[0\]\.sourceCidr is not a rule key/);
    expect(refusal({ ...base(), policy: { rule: [] } })).toMatch(/policy\.rule is not a policy key/);
    expect(refusal({ ...base(), policy: { extra: { x: 1 } } })).toMatch(/policy\.extra is not a policy key/);
    expect(refusal({ ...base(), policy: { default: { x: 1 } } })).toMatch(/policy\.default must be/);
    expect(refusal({ ...base(), policy: 'deny' })).toMatch(/policy: must be an object/);
  });

  it('refuses a policy rule naming a host that is neither this node nor a peer', () => {
    expect(load({ ...base(), policy: { rules: [{ action: 'deny', from: ['host-1', 'host-2'] }] } }).policy.rules).toHaveLength(1);
    expect(refusal({ ...base(), policy: { rules: [{ action: 'deny', from: ['host-2', 'host-9'] }] } })).toMatch(/policy\.rules\[0\]\.from\[1\]: "host-9" is neither/);
  });

  it('reads the policy from QMESH_POLICY as JSON', () => {
    const c = parseConfig(base(), '/x/c.json', { QMESH_POLICY: '{"default":"deny"}' });
    expect(c.policy).toEqual({ default: 'deny', rules: [] });
    expect(() => parseConfig(base(), '/x/c.json', { QMESH_POLICY: 'deny' })).toThrow(/policy: must be an object/);
  });
});

describe('config/examples/host-2-policy.json', () => {
  it('loads, and its policy decides as the README says', () => {
    const c = loadConfig(path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../config/examples/host-2-policy.json'));
    const decide = (fromPeer: string, source: string, destination: string, port: number) =>
      evaluatePolicy(c.policy, { fromPeer, source: IpAddress.parse(source), destination: IpAddress.parse(destination), port });
    expect(decide('host-2', '198.19.2.10', '198.19.1.10', 9000)).toEqual({ action: 'allow', rule: 'own-egress' });
    expect(decide('host-1', '198.19.1.10', '198.19.2.10', 9050)).toEqual({ action: 'deny', rule: 'no-debug-ports' });
    expect(decide('host-1', '198.19.1.20', '198.19.2.70', 5432)).toEqual({ action: 'allow', rule: 'db-from-api-only' });
    expect(decide('host-1', '198.19.1.40', '198.19.2.70', 5432)).toEqual({ action: 'deny', rule: 'no-other-db' });
    expect(decide('host-3', '198.19.3.10', '198.19.2.10', 8080)).toEqual({ action: 'allow', rule: 'web' });
    expect(decide('host-3', '198.19.3.10', '198.19.2.10', 22)).toEqual({ action: 'deny', rule: 'default' });
  });
});
