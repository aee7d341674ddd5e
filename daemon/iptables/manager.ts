// Installs, verifies and removes the rules rules.ts builds, with the iptables
// binaries of one backend (backend.ts) through a CommandRunner: every change is
// one iptables-restore transaction per family (restore.ts). The daemon applies at
// start and on reload and looks for drift on a timer (daemon.ts, rule-watch.ts);
// the CLI offers print/check/apply/remove.
import type { Config } from '../config/load.js';
import type { Family } from '../policy/cidr.js';
import { binaryName, detectBackend, resolveBinary, type Backend } from './backend.js';
import { commandFailed, ExecFileRunner, formatCommand, runOrThrow, type CommandRunner } from './command-runner.js';
import { installTransaction, removeTransaction, restoreBinary } from './restore.js';
import { cmd, renderScript } from './commands.js';
import { buildRules, commentOf, QMESH_CHAINS, type ChainRules, type RuleSet, type TableName } from './rules.js';
import { parseTableState, savedComment, targetOf, type SavedRule, type TableState } from './table-state.js';

export interface RuleManagerOptions {
  /** Runs the commands; default: execFile, behind `commandPrefix`. */
  readonly runner?: CommandRunner;
  /** Prepended to every command, e.g. ['ip', 'netns', 'exec', 'qm-1'] (ignored when `runner` is given). */
  readonly commandPrefix?: readonly string[];
  /** Skip detection and use this backend's binaries. */
  readonly backend?: Backend;
}

export interface CheckResult {
  /** One line per difference from the expected rules; empty when they are installed exactly. */
  readonly missing: string[];
}

export class RuleManager {
  readonly rules: RuleSet;
  private readonly runner: CommandRunner;
  private backendChosen: Backend | undefined;
  private readonly binaries = new Map<Family, string>();

  constructor(config: Config, private readonly options: RuleManagerOptions = {}) {
    this.rules = buildRules(config);
    this.runner = options.runner ?? new ExecFileRunner(options.commandPrefix ?? []);
    this.backendChosen = options.backend;
  }

  /**
   * The manager of another config's rules on the same host: it keeps this one's runner, backend and
   * binaries, so a reload does not detect the backend again (four full `*-save` dumps and `-V` runs).
   */
  successor(config: Config): RuleManager {
    const next = new RuleManager(config, { ...this.options, runner: this.runner, backend: this.backendChosen });
    for (const [family, bin] of this.binaries) next.binaries.set(family, bin);
    return next;
  }

  /** The backend in use: the constructor's choice, else detected once. */
  async backend(): Promise<Backend> {
    this.backendChosen ??= await detectBackend(this.runner);
    return this.backendChosen;
  }

  /**
   * Brings the host's rules in line with the config, each family in one
   * `iptables-restore --noflush` transaction (restore.ts): chains refilled and
   * jumps put back at the head without a moment when capture or the fail-closed
   * drops are missing. A family the config no longer uses loses its chains.
   * Rules that already match exactly are left untouched.
   */
  async apply(): Promise<void> {
    for (const family of FAMILIES) {
      const fam = this.rules.families.find((f) => f.family === family);
      if (fam === undefined) {
        await this.removeFamily(family, false);
        continue;
      }
      const bin = await this.binary(family);
      const states = await this.readAll(bin, fam.chains);
      // The cheap look first; only rules that look right there get the exact (-C per rule) comparison.
      const differs = (await structuralDiff(bin, fam.chains, states)).length > 0 || (await this.familyDiff(bin, fam.chains, states)).length > 0;
      if (differs) await this.restore(bin, installTransaction(fam.chains, (t) => states.get(t)!));
    }
  }

  /** Deletes every jump into the qmesh chains, then the chains, for both families; a no-op when nothing is installed. */
  async remove(): Promise<void> {
    for (const family of FAMILIES) await this.removeFamily(family, this.rules.families.some((f) => f.family === family));
  }

  /**
   * A cheap look for drift, made on a timer: one `-S` per table. Sees a missing
   * chain, a missing, duplicated or displaced jump, and a chain whose rules are
   * not the expected ones in the expected order (seen through their comments).
   * check() is the exact comparison.
   */
  async drift(): Promise<CheckResult> {
    const missing: string[] = [];
    for (const fam of this.rules.families) {
      const bin = await this.binary(fam.family);
      missing.push(...(await structuralDiff(bin, fam.chains, await this.readAll(bin, fam.chains))));
    }
    return { missing };
  }

  /** Compares the installed rules with the expected ones exactly, without changing anything. */
  async check(): Promise<CheckResult> {
    const missing: string[] = [];
    for (const fam of this.rules.families) missing.push(...(await this.familyDiff(await this.binary(fam.family), fam.chains)));
    return { missing };
  }

  /** Every difference between the installed rules of one family and the expected ones (`-S`, then `-C` per rule). */
  private async familyDiff(bin: string, chains: readonly ChainRules[], states?: ReadonlyMap<TableName, TableState>): Promise<string[]> {
    return eachChain(bin, chains, states ?? (await this.readAll(bin, chains)), async (c, state, where) => [
      ...(await this.chainDiff(bin, c, state)).map((d) => `${where}: ${d}`),
      ...(await this.jumpDiff(bin, c, state)).map((d) => `${bin} ${c.table} ${c.builtin}: ${d}`),
    ]);
  }

  /** Removes the qmesh chains of one family in one transaction. `required`: the family is configured, so its binary must exist. */
  private async removeFamily(family: Family, required: boolean): Promise<void> {
    let bin: string;
    try {
      bin = await this.binary(family);
    } catch (err) {
      if (required) throw err;
      return; // no binary for a family the config does not use: nothing of ours can be installed there
    }
    const states = await this.readAll(bin, QMESH_CHAINS);
    const script = removeTransaction(QMESH_CHAINS, (t) => states.get(t)!);
    if (script !== '') await this.restore(bin, script);
  }

  /** `-S` of every table the chains live in. */
  private async readAll(bin: string, chains: ReadonlyArray<{ table: TableName }>): Promise<Map<TableName, TableState>> {
    const states = new Map<TableName, TableState>();
    for (const c of chains) if (!states.has(c.table)) states.set(c.table, await this.read(bin, c.table));
    return states;
  }

  /** Runs one transaction; a failure names the line iptables-restore stopped at. */
  private async restore(bin: string, script: string): Promise<void> {
    const argv = cmd.restore(restoreBinary(bin));
    const result = await this.runner.run(argv, script);
    if (result.code === 0) return;
    const at = /line:?\s*(\d+)/i.exec(result.stderr);
    const bad = at ? script.split('\n')[Number(at[1]) - 1] : undefined;
    commandFailed(argv, bad === undefined ? result : { ...result, stderr: `${result.stderr.trim()} (input line: ${bad})` });
  }

  /** The rules apply() installs, as a sh script of single commands; see commands.ts for the format. */
  print(): string {
    return renderScript(this.rules, (family) => this.binaries.get(family) ?? binaryName(family, this.backendChosen));
  }

  private async binary(family: Family): Promise<string> {
    let bin = this.binaries.get(family);
    if (bin === undefined) {
      bin = await resolveBinary(this.runner, family, await this.backend());
      this.binaries.set(family, bin);
    }
    return bin;
  }

  private async read(bin: string, table: TableName): Promise<TableState> {
    return parseTableState(await runOrThrow(this.runner, cmd.list(bin, table)));
  }

  /** `iptables -C`: true when the rule exists, false when it does not, throws on any other failure. */
  private async exists(argv: readonly string[]): Promise<boolean> {
    const r = await this.runner.run(argv);
    if (r.code === 0) return true;
    if (r.code === 1) return false; // "Bad rule (does a matching rule exist in that chain?)"
    return commandFailed(argv, r);
  }

  /** Differences between an existing qmesh chain and its expected rules (order is seen through the comments). */
  private async chainDiff(bin: string, c: ChainRules, state: TableState): Promise<string[]> {
    const diffs: string[] = [];
    for (const spec of c.rules) {
      if (!(await this.exists(cmd.checkRule(bin, c, spec)))) diffs.push(`rule missing: ${formatCommand(cmd.append(bin, c, spec))}`);
    }
    const saved = state.rulesOf(c.chain);
    if (saved.length !== c.rules.length) {
      diffs.push(`holds ${saved.length} rules, expected ${c.rules.length}`);
    } else if (saved.some((r, i) => savedComment(r.tokens) !== commentOf(c.rules[i]!))) {
      diffs.push('rules are in the wrong order or carry other comments');
    }
    return diffs;
  }

  private async jumpDiff(bin: string, c: ChainRules, state: TableState): Promise<string[]> {
    const copies = jumpsInto(state, c);
    if (!(await this.exists(cmd.checkJump(bin, c)))) {
      return [`jump to ${c.chain} is missing: ${formatCommand(cmd.insertJump(bin, c))}`];
    }
    if (copies.length > 1) return [`${copies.length} jumps to ${c.chain}, expected exactly one`];
    if (copies[0]?.position !== 1) return [`jump to ${c.chain} is rule ${copies[0]?.position ?? '?'}, not the first`];
    return [];
  }

}

const FAMILIES: readonly Family[] = [4, 6];

/** Runs `compare` on each chain that exists; a missing chain is reported as such (with its jump). */
async function eachChain(
  bin: string,
  chains: readonly ChainRules[],
  states: ReadonlyMap<TableName, TableState>,
  compare: (c: ChainRules, state: TableState, where: string) => Promise<string[]> | string[],
): Promise<string[]> {
  const missing: string[] = [];
  for (const c of chains) {
    const state = states.get(c.table)!;
    const where = `${bin} ${c.table} ${c.chain}`;
    if (!state.chains.has(c.chain)) {
      missing.push(`${where}: chain does not exist`, `${bin} ${c.table} ${c.builtin}: jump to ${c.chain} is missing`);
      continue;
    }
    missing.push(...(await compare(c, state, where)));
  }
  return missing;
}

/** drift()'s comparison, on `-S` output already read: rule comments in order, one jump at the head. */
function structuralDiff(bin: string, chains: readonly ChainRules[], states: ReadonlyMap<TableName, TableState>): Promise<string[]> {
  return eachChain(bin, chains, states, (c, state, where) => {
    const missing: string[] = [];
    const have = state.rulesOf(c.chain).map((r) => savedComment(r.tokens));
    const want = c.rules.map(commentOf);
    if (have.length !== want.length || have.some((h, i) => h !== want[i])) {
      missing.push(`${where}: holds ${have.length} rules, expected ${want.length}${have.length === want.length ? ' (other rules or order)' : ''}`);
    }
    const jumps = jumpsInto(state, c);
    if (jumps.length !== 1 || jumps[0]!.position !== 1 || savedComment(jumps[0]!.tokens) !== commentOf(c.jump)) {
      missing.push(`${bin} ${c.table} ${c.builtin}: ${jumps.length === 0 ? `jump to ${c.chain} is missing` : `jump to ${c.chain} is not exactly once at the head`}`);
    }
    return missing;
  });
}

/** Rules of the built-in chain that jump into c.chain, in position order. */
function jumpsInto(state: TableState, c: ChainRules): SavedRule[] {
  return state.rulesOf(c.builtin).filter((r) => targetOf(r.tokens) === c.chain);
}
