// Builds the input of one `iptables-restore --noflush` transaction: every qmesh
// chain of a family refilled and its jump put back at the head of the built-in
// chain, or every qmesh chain and jump removed. Each table is committed as one
// unit, so no packet ever meets a half-written chain. Pure; manager.ts runs it.
import type { ChainRules, TableName } from './rules.js';
import type { TableState } from './table-state.js';
import { targetOf } from './table-state.js';

/** Tables in commit order: filter first, so the fail-closed drops are in place before capture changes. */
const TABLE_ORDER: readonly TableName[] = ['filter', 'nat'];

/** The restore binary beside an iptables binary: iptables-nft → iptables-nft-restore, ip6tables → ip6tables-restore. */
export function restoreBinary(bin: string): string {
  const m = /^(.*?)(ip6?tables)(-nft|-legacy)?$/.exec(bin);
  if (!m) throw new Error(`restoreBinary: ${bin} is not an iptables binary`);
  return `${m[1]}${m[2]}${m[3] ?? ''}-restore`;
}

/**
 * One token as iptables-restore reads it: bare when it has no blank or quote,
 * else in double quotes. rules.ts builds every token from validated config
 * (names, CIDRs, ports), so a quote or line break is a bug, not input to escape.
 */
export function restoreQuote(token: string): string {
  if (/["'\\\n\r]/.test(token)) throw new Error(`iptables token cannot be written to iptables-restore: ${JSON.stringify(token)}`);
  return /^[^\s]+$/.test(token) && token !== '' ? token : `"${token}"`;
}

const line = (tokens: readonly string[]): string => tokens.map(restoreQuote).join(' ');

/** Every rule of `state` in `builtin` that jumps or goes to `chain`, as a `-D` line. */
function deleteJumps(state: TableState, builtin: string, chain: string): string[] {
  return state
    .rulesOf(builtin)
    .filter((r) => targetOf(r.tokens) === chain)
    .map((r) => line(['-D', builtin, ...r.tokens]));
}

/**
 * Refills each chain (a `:CHAIN` line creates it, or flushes it under --noflush),
 * deletes every existing jump into it and inserts the one exact jump at position 1.
 */
export function installTransaction(chains: readonly ChainRules[], stateOf: (table: TableName) => TableState): string {
  const out: string[] = [];
  for (const table of TABLE_ORDER) {
    const mine = chains.filter((c) => c.table === table);
    if (mine.length === 0) continue;
    const state = stateOf(table);
    out.push(`*${table}`);
    for (const c of mine) out.push(`:${c.chain} - [0:0]`);
    for (const c of mine) for (const spec of c.rules) out.push(line(['-A', c.chain, ...spec]));
    for (const c of mine) {
      out.push(...deleteJumps(state, c.builtin, c.chain));
      out.push(line(['-I', c.builtin, '1', ...c.jump]));
    }
    out.push('COMMIT');
  }
  return `${out.join('\n')}\n`;
}

/** Deletes the jumps into, and then the chains themselves, of those qmesh chains that exist; '' when none does. */
export function removeTransaction(
  chains: ReadonlyArray<{ table: TableName; chain: string; builtin: string }>,
  stateOf: (table: TableName) => TableState,
): string {
  const out: string[] = [];
  for (const table of TABLE_ORDER) {
    const state = stateOf(table);
    const present = chains.filter((c) => c.table === table && state.chains.has(c.chain));
    if (present.length === 0) continue;
    out.push(`*${table}`);
    for (const c of present) out.push(...deleteJumps(state, c.builtin, c.chain));
    for (const c of present) out.push(`:${c.chain} - [0:0]`, `-X ${c.chain}`);
    out.push('COMMIT');
  }
  return out.length === 0 ? '' : `${out.join('\n')}\n`;
}
