// Decides whether one flow may pass: the config's ordered policy rules, first
// match wins, else the default. A pure function of the policy and the flow's
// facts; inbound/delivery.ts asks it before connecting anywhere and
// capture/capture-listener.ts before opening a stream (see README "Policy").
import type { Cidr, IpAddress } from './cidr.js';

export type PolicyAction = 'allow' | 'deny';

/** An inclusive port range; a single port is { first: p, last: p }. */
export interface PortRange {
  readonly first: number;
  readonly last: number;
}

/** One rule; a match field that is null was omitted and matches anything. */
export interface PolicyRule {
  /** The rule's `name` from the config, or "rules[i]" if it has none: what logs and counters show. */
  readonly name: string;
  readonly action: PolicyAction;
  readonly from: readonly string[] | null;
  readonly sourceCidrs: readonly Cidr[] | null;
  readonly destinationCidrs: readonly Cidr[] | null;
  readonly ports: readonly PortRange[] | null;
}

export interface Policy {
  readonly default: PolicyAction;
  readonly rules: readonly PolicyRule[];
}

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
