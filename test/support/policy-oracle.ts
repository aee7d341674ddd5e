// The policy's meaning, written the plain way in TypeScript: first matching rule
// wins, else the default. The data plane (native/src/policy/) is checked against it:
// test/unit/policy-fixture.test.ts writes its decisions into the fixture the Rust
// tests replay, and test/unit/policy.test.ts pins the rules themselves.
import type { IpAddress } from '../../daemon/policy/cidr.js';
import type { Policy, PolicyAction, PolicyRule } from '../../daemon/policy/policy.js';

/** The facts of one flow, the same on the sending and the receiving host. */
export interface PolicyFlow {
  /**
   * Name of the host the flow comes from: on the receiving host the peer whose certificate
   * it verified; on the sending host its own node.name.
   */
  readonly fromPeer: string;
  /** The calling function's address (the receiver has checked the peer owns it). */
  readonly source: IpAddress;
  /** The original destination address and port. */
  readonly destination: IpAddress;
  readonly port: number;
}

export interface PolicyDecision {
  readonly action: PolicyAction;
  /** The matching rule's name, or "default" when no rule matched. */
  readonly rule: string;
}

/** Allows everything: what a config without a `policy` section means. */
export const ALLOW_ALL: Policy = Object.freeze({ default: 'allow', rules: Object.freeze([]) as readonly PolicyRule[] });

export function ruleMatches(rule: PolicyRule, flow: PolicyFlow): boolean {
  if (rule.from && !rule.from.includes(flow.fromPeer)) return false;
  if (rule.sourceCidrs && !rule.sourceCidrs.some((c) => c.contains(flow.source))) return false;
  if (rule.destinationCidrs && !rule.destinationCidrs.some((c) => c.contains(flow.destination))) return false;
  if (rule.ports && !rule.ports.some((r) => flow.port >= r.first && flow.port <= r.last)) return false;
  return true;
}

/** First matching rule wins; no match: the default action. */
export function evaluatePolicy(policy: Policy, flow: PolicyFlow): PolicyDecision {
  for (const rule of policy.rules) {
    if (ruleMatches(rule, flow)) return { action: rule.action, rule: rule.name };
  }
  return { action: policy.default, rule: 'default' };
}
