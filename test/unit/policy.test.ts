// policy/policy.ts: each match field, port ranges, rule order, the default; and
// the `policy` section's parser (config/policy-format.ts) that builds its input.
import { describe, expect, it } from 'vitest';
import { parsePolicy, parsePortRange } from '../../daemon/config/policy-format.js';
import { IpAddress } from '../../daemon/policy/cidr.js';
import { ALLOW_ALL, evaluatePolicy, type PolicyFlow } from '../support/policy-oracle.js';

const flow = (over: Partial<Record<keyof PolicyFlow, string | number>> = {}): PolicyFlow => ({
  fromPeer: String(over.fromPeer ?? 'host-1'),
  source: IpAddress.parse(String(over.source ?? '198.19.1.10')),
  destination: IpAddress.parse(String(over.destination ?? '198.19.2.20')),
  port: Number(over.port ?? 80),
});
const policy = (rules: object[], def = 'allow') => parsePolicy({ default: def, rules });
const decide = (rules: object[], over: Parameters<typeof flow>[0] = {}, def = 'allow') => evaluatePolicy(policy(rules, def), flow(over));

describe('evaluatePolicy', () => {
  it('with no rules applies the default', () => {
    expect(evaluatePolicy(ALLOW_ALL, flow())).toEqual({ action: 'allow', rule: 'default' });
    expect(decide([], {}, 'deny')).toEqual({ action: 'deny', rule: 'default' });
  });

  it('a rule with no match fields matches everything', () => {
    expect(decide([{ action: 'deny' }])).toEqual({ action: 'deny', rule: 'rules[0]' });
  });

  it('matches on the source peer', () => {
    const rules = [{ name: 'no-host-3', action: 'deny', from: ['host-3', 'host-4'] }];
    expect(decide(rules, { fromPeer: 'host-3' })).toEqual({ action: 'deny', rule: 'no-host-3' });
    expect(decide(rules, { fromPeer: 'host-4' }).action).toBe('deny');
    expect(decide(rules, { fromPeer: 'host-1' })).toEqual({ action: 'allow', rule: 'default' });
  });

  it('matches on the source CIDR', () => {
    const rules = [{ action: 'deny', sourceCidrs: ['198.19.1.128/25', 'fd00:1::/64'] }];
    expect(decide(rules, { source: '198.19.1.200' }).action).toBe('deny');
    expect(decide(rules, { source: '198.19.1.10' }).action).toBe('allow');
    expect(decide(rules, { source: 'fd00:1::5', destination: 'fd00:2::5' }).action).toBe('deny');
  });

  it('matches on the destination CIDR, never across address families', () => {
    const rules = [{ action: 'deny', destinationCidrs: ['198.19.2.16/28'] }];
    expect(decide(rules, { destination: '198.19.2.20' }).action).toBe('deny');
    expect(decide(rules, { destination: '198.19.2.40' }).action).toBe('allow');
    expect(decide([{ action: 'deny', destinationCidrs: ['::/0'] }], { destination: '198.19.2.20' }).action).toBe('allow');
  });

  it('matches on ports and inclusive port ranges', () => {
    const rules = [{ action: 'deny', ports: [22, '8000-8999', '6379'] }];
    for (const port of [22, 8000, 8500, 8999, 6379]) expect(decide(rules, { port }).action, `port ${port}`).toBe('deny');
    for (const port of [21, 23, 7999, 9000, 80]) expect(decide(rules, { port }).action, `port ${port}`).toBe('allow');
  });

  it('needs every present field to match', () => {
    const rules = [{ action: 'deny', from: ['host-1'], sourceCidrs: ['198.19.1.0/24'], destinationCidrs: ['198.19.2.0/24'], ports: ['80-81'] }];
    expect(decide(rules).action).toBe('deny');
    expect(decide(rules, { fromPeer: 'host-3' }).action).toBe('allow');
    expect(decide(rules, { source: '198.19.3.1' }).action).toBe('allow');
    expect(decide(rules, { destination: '198.19.4.1' }).action).toBe('allow');
    expect(decide(rules, { port: 82 }).action).toBe('allow');
  });

  it('the first matching rule wins, in order', () => {
    const rules = [
      { name: 'web-ok', action: 'allow', ports: [80] },
      { name: 'host-1-out', action: 'deny', from: ['host-1'] },
      { name: 'never', action: 'allow', from: ['host-1'] },
    ];
    expect(decide(rules, { port: 80 })).toEqual({ action: 'allow', rule: 'web-ok' });
    expect(decide(rules, { port: 81 })).toEqual({ action: 'deny', rule: 'host-1-out' });
    expect(decide(rules, { port: 81, fromPeer: 'host-2' }, 'deny')).toEqual({ action: 'deny', rule: 'default' });
  });
});

describe('policy section parser', () => {
  const refusal = (v: unknown): string => {
    try {
      parsePolicy(v);
    } catch (err) {
      return (err as Error).message;
    }
    throw new Error('policy was accepted');
  };

  it('fills an omitted default and rules, names unnamed rules by index', () => {
    expect(parsePolicy({})).toEqual({ default: 'allow', rules: [] });
    const p = parsePolicy({ default: 'deny', rules: [{ action: 'allow', from: ['host-1'] }, { name: 'x', action: 'deny' }] });
    expect(p.rules.map((r) => r.name)).toEqual(['rules[0]', 'x']);
    expect(p.rules[0]!.ports).toBeNull();
  });

  it('names the sub-key at fault', () => {
    expect(refusal({ default: 'block' })).toMatch(/^\.default must be "allow" or "deny"/);
    expect(refusal({ defualt: 'deny' })).toMatch(/^\.defualt is not a policy key/);
    expect(refusal({ rules: {} })).toMatch(/^\.rules must be an array/);
    expect(refusal({ rules: [{ action: 'allow' }, { action: 'drop' }] })).toMatch(/^\.rules\[1\]\.action/);
    expect(refusal({ rules: [{ action: 'deny', port: [22] }] })).toMatch(/^\.rules\[0\]\.port is not a rule key/);
    expect(refusal({ rules: [{ action: 'deny', ports: [22, 70000] }] })).toMatch(/^\.rules\[0\]\.ports\[1\] must be a port/);
    expect(refusal({ rules: [{ action: 'deny', ports: [] }] })).toMatch(/^\.rules\[0\]\.ports must be a non-empty array/);
    expect(refusal({ rules: [{ action: 'deny', from: ['Host_2'] }] })).toMatch(/^\.rules\[0\]\.from\[0\]/);
    expect(refusal({ rules: [{ action: 'deny', sourceCidrs: ['198.19.1.5/24'] }] })).toMatch(/^\.rules\[0\]\.sourceCidrs\[0\] has host bits/);
    expect(refusal({ rules: [{ action: 'deny', destinationCidrs: '198.19.1.0/24' }] })).toMatch(/^\.rules\[0\]\.destinationCidrs must be a non-empty array/);
    expect(refusal({ rules: [{ action: 'deny', name: 'a' }, { action: 'allow', name: 'a' }] })).toMatch(/^\.rules\[1\]\.name "a" is also/);
    expect(refusal({ rules: [{ action: 'deny', name: 'default' }] })).toMatch(/^\.rules\[0\]\.name "default" is reserved/);
    expect(refusal({ rules: ['deny'] })).toMatch(/^\.rules\[0\] must be an object/);
  });

  it('parses ports and ranges strictly', () => {
    expect(parsePortRange(443)).toEqual({ first: 443, last: 443 });
    expect(parsePortRange('443')).toEqual({ first: 443, last: 443 });
    expect(parsePortRange('8000-8999')).toEqual({ first: 8000, last: 8999 });
    expect(parsePortRange('1-65535')).toEqual({ first: 1, last: 65535 });
    for (const bad of [0, 65536, 1.5, '9000-8000', '80-', ' 80', '0-10', '80-65536', 'http', null]) {
      expect(() => parsePortRange(bad), JSON.stringify(bad)).toThrow(/must be a port/);
    }
  });
});
