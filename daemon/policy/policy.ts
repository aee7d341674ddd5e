// The policy as the config states it: ordered rules, first match wins, else the
// default (README "Policy"). config/policy-format.ts builds it; the data plane
// evaluates it (native/src/policy/, sent by dataplane/snapshot.ts).
import type { Cidr } from './cidr.js';

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
