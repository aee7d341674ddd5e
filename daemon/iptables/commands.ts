// The argv of every iptables command qmesh runs, and the rules as a paste-able
// sh script of single commands (RuleManager.print()). Receives a RuleSet from rules.ts
// and binary names from backend.ts; manager.ts runs what these build.
import type { Family } from '../policy/cidr.js';
import { formatCommand } from './command-runner.js';
import type { ChainRules, RuleSet, TableName } from './rules.js';

/**
 * Seconds iptables waits for the xtables lock (`-w`) before giving up. Long
 * enough to outlast another tool's batch, short enough that a stuck holder
 * surfaces as an error at start-up instead of a hang.
 */
export const LOCK_WAIT_SECONDS = 10;

const base = (bin: string, table: TableName): string[] => [bin, '-w', String(LOCK_WAIT_SECONDS), '-t', table];

export const cmd = {
  list: (bin: string, table: TableName): string[] => [...base(bin, table), '-S'],
  create: (bin: string, c: ChainRules): string[] => [...base(bin, c.table), '-N', c.chain],
  flush: (bin: string, table: TableName, chain: string): string[] => [...base(bin, table), '-F', chain],
  append: (bin: string, c: ChainRules, spec: readonly string[]): string[] => [...base(bin, c.table), '-A', c.chain, ...spec],
  checkRule: (bin: string, c: ChainRules, spec: readonly string[]): string[] => [...base(bin, c.table), '-C', c.chain, ...spec],
  checkJump: (bin: string, c: ChainRules): string[] => [...base(bin, c.table), '-C', c.builtin, ...c.jump],
  insertJump: (bin: string, c: ChainRules): string[] => [...base(bin, c.table), '-I', c.builtin, '1', ...c.jump],
  restore: (restoreBin: string): string[] => [restoreBin, '-w', String(LOCK_WAIT_SECONDS), '--noflush'],
};

const FAMILY_LABEL: Record<Family, string> = { 4: 'IPv4', 6: 'IPv6' };

/**
 * apply()'s rules as single commands, one sh command per line, for an operator to
 * read or paste, written so that pasting the script twice leaves the same rules as
 * pasting it once: `-N` falls back to `-F` when the chain exists, a jump is inserted
 * only when `-C` does not find it. (apply() itself writes the same rules in one
 * iptables-restore transaction per family, restore.ts, and also removes stale jumps.)
 */
export function renderScript(rules: RuleSet, binaryOf: (family: Family) => string): string {
  const out: string[] = [
    `# qmesh capture and fail-closed rules for node ${rules.node}; see iptables/README.md.`,
    '# sh syntax, one command per line, in the order qmesh applies them; pasting it twice',
    '# changes nothing. To undo: delete the jumps, then flush and delete the QMESH_* chains.',
  ];
  for (const fam of rules.families) {
    const bin = binaryOf(fam.family);
    out.push('', `# ${FAMILY_LABEL[fam.family]} (${bin}): filter chains first (fail closed), then nat (capture), then the jumps.`);
    for (const c of fam.chains) {
      out.push('', `# ${c.table} ${c.chain}, entered from ${c.builtin}`);
      out.push(`${formatCommand(cmd.create(bin, c))} 2>/dev/null || ${formatCommand(cmd.flush(bin, c.table, c.chain))}`);
      for (const spec of c.rules) out.push(formatCommand(cmd.append(bin, c, spec)));
    }
    out.push('', `# jumps, at the head of the built-in chains`);
    for (const c of fam.chains) {
      out.push(`${formatCommand(cmd.checkJump(bin, c))} 2>/dev/null || ${formatCommand(cmd.insertJump(bin, c))}`);
    }
  }
  return `${out.join('\n')}\n`;
}
