// The `policy` config section: checks its JSON strictly and builds the typed
// Policy that policy/policy.ts evaluates. Every message starts with the path
// inside the section (".rules[1].ports[0] ...") so the loader names the key.
import { Cidr } from '../policy/cidr.js';
import type { Policy, PolicyAction, PolicyRule, PortRange } from '../policy/policy.js';

const HOST_NAME_RE = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
const LABEL_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;
const RULE_KEYS = ['name', 'action', 'from', 'sourceCidrs', 'destinationCidrs', 'ports'];
const ACTIONS: readonly string[] = ['allow', 'deny'];

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

function action(v: unknown, where: string): PolicyAction {
  if (typeof v !== 'string' || !ACTIONS.includes(v)) throw new Error(`${where} must be "allow" or "deny" (got ${JSON.stringify(v)})`);
  return v as PolicyAction;
}

/** An omitted match field is null (matches anything); a present one is a non-empty array. */
function list<T>(v: unknown, where: string, what: string, item: (x: unknown, at: string) => T): T[] | null {
  if (v === undefined) return null;
  if (!Array.isArray(v) || v.length === 0) {
    throw new Error(`${where} must be a non-empty array of ${what} (omit the key to match any)`);
  }
  return v.map((x, i) => item(x, `${where}[${i}]`));
}

function hostName(v: unknown, at: string): string {
  if (typeof v !== 'string' || !HOST_NAME_RE.test(v)) throw new Error(`${at} must be a host name as in node.name / peers[].name (got ${JSON.stringify(v)})`);
  return v;
}

function cidr(v: unknown, at: string): Cidr {
  try {
    return Cidr.parse(v);
  } catch (err) {
    throw new Error(`${at} ${(err as Error).message}`);
  }
}

/** 443, "443" or "8000-8999" (inclusive, 1-65535, low end first). */
export function parsePortRange(v: unknown, at = 'port'): PortRange {
  const expected = `${at} must be a port (1-65535) or a range "low-high" such as "8000-8999" (got ${JSON.stringify(v)})`;
  let first: number;
  let last: number;
  if (typeof v === 'number') {
    first = last = v;
  } else if (typeof v === 'string') {
    const m = /^(\d{1,5})(?:-(\d{1,5}))?$/.exec(v);
    if (!m) throw new Error(expected);
    first = Number(m[1]);
    last = m[2] === undefined ? first : Number(m[2]);
  } else {
    throw new Error(expected);
  }
  if (!Number.isInteger(first) || !Number.isInteger(last) || first < 1 || last > 65535 || first > last) throw new Error(expected);
  return { first, last };
}

function rule(v: unknown, i: number): PolicyRule {
  const where = `.rules[${i}]`;
  if (!isObject(v)) throw new Error(`${where} must be an object { action, from?, sourceCidrs?, destinationCidrs?, ports?, name? }`);
  for (const key of Object.keys(v)) {
    if (!RULE_KEYS.includes(key)) throw new Error(`${where}.${key} is not a rule key (expected ${RULE_KEYS.join(', ')})`);
  }
  if (v.name !== undefined && (typeof v.name !== 'string' || !LABEL_RE.test(v.name))) {
    throw new Error(`${where}.name must be a label of letters, digits, ".", "_" or "-", up to 63 characters (got ${JSON.stringify(v.name)})`);
  }
  if (v.name === 'default') throw new Error(`${where}.name "default" is reserved: logs say "default" when no rule matched`);
  return {
    name: (v.name as string | undefined) ?? `rules[${i}]`,
    action: action(v.action, `${where}.action`),
    from: list(v.from, `${where}.from`, 'host names', hostName),
    sourceCidrs: list(v.sourceCidrs, `${where}.sourceCidrs`, 'CIDR strings', cidr),
    destinationCidrs: list(v.destinationCidrs, `${where}.destinationCidrs`, 'CIDR strings', cidr),
    ports: list(v.ports, `${where}.ports`, 'ports or "low-high" ranges', parsePortRange),
  };
}

/** Validates the section and builds the Policy; throws an Error naming the sub-key at fault. */
export function parsePolicy(v: unknown): Policy {
  if (!isObject(v)) throw new Error('must be an object { "default": "allow" | "deny", "rules": [...] }');
  for (const key of Object.keys(v)) {
    if (key !== 'default' && key !== 'rules') throw new Error(`.${key} is not a policy key (expected default, rules)`);
  }
  const def = v.default === undefined ? 'allow' : action(v.default, '.default');
  if (v.rules !== undefined && !Array.isArray(v.rules)) throw new Error('.rules must be an array of rule objects');
  const rules = ((v.rules as unknown[] | undefined) ?? []).map(rule);
  const seen = new Map<string, number>();
  rules.forEach((r, i) => {
    const other = seen.get(r.name);
    if (other !== undefined) throw new Error(`.rules[${i}].name "${r.name}" is also the name of rules[${other}]; logs name the rule that matched, so names must be unique`);
    seen.set(r.name, i);
  });
  return { default: def, rules };
}
