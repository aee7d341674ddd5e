// Installs, verifies and removes the rules rules.ts builds, with the iptables
// binaries of one backend (backend.ts) through a CommandRunner. main.ts calls
// apply() last at start (capture after delivery); the CLI offers print/check/remove.
import type { Config } from '../config/load.js';
import type { Family } from '../policy/cidr.js';
import { binaryName, detectBackend, resolveBinary, type Backend } from './backend.js';
import { commandFailed, ExecFileRunner, formatCommand, runOrThrow, type CommandRunner } from './command-runner.js';
import { cmd, renderScript } from './commands.js';
import { buildRules, commentOf, type ChainRules, type RuleSet, type TableName } from './rules.js';
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

  /** The backend in use: the constructor's choice, else detected once. */
  async backend(): Promise<Backend> {
    this.backendChosen ??= await detectBackend(this.runner);
    return this.backendChosen;
  }

  /** Creates missing chains, refills chains that differ, and leaves each jump once at the head of its built-in chain. */
  async apply(): Promise<void> {
    for (const fam of this.rules.families) {
      const bin = await this.binary(fam.family);
      for (const table of tablesOf(fam.chains)) {
        const state = await this.read(bin, table);
        for (const c of fam.chains.filter((x) => x.table === table)) {
          if (!state.chains.has(c.chain)) {
            await runOrThrow(this.runner, cmd.create(bin, c));
          } else if ((await this.chainDiff(bin, c, state)).length === 0) {
            continue; // already exact: no flush, so no moment without the rules
          } else {
            await runOrThrow(this.runner, cmd.flush(bin, c.table, c.chain));
          }
          for (const spec of c.rules) await runOrThrow(this.runner, cmd.append(bin, c, spec));
        }
      }
      for (const table of tablesOf(fam.chains)) {
        const state = await this.read(bin, table);
        for (const c of fam.chains.filter((x) => x.table === table)) await this.ensureJump(bin, c, state);
      }
    }
  }

  /** Deletes every jump into the qmesh chains, then flushes and deletes the chains; a no-op when nothing is installed. */
  async remove(): Promise<void> {
    for (const fam of this.rules.families) {
      const bin = await this.binary(fam.family);
      for (const table of tablesOf(fam.chains)) {
        const state = await this.read(bin, table);
        const chains = fam.chains.filter((x) => x.table === table);
        for (const c of chains) {
          for (const copy of jumpsInto(state, c)) {
            await runOrThrow(this.runner, cmd.deleteRule(bin, table, c.builtin, copy.tokens));
          }
        }
        for (const c of chains.filter((x) => state.chains.has(x.chain))) {
          await runOrThrow(this.runner, cmd.flush(bin, table, c.chain));
          await runOrThrow(this.runner, cmd.destroy(bin, table, c.chain));
        }
      }
    }
  }

  /** Compares the installed rules with the expected ones, without changing anything. */
  async check(): Promise<CheckResult> {
    const missing: string[] = [];
    for (const fam of this.rules.families) {
      const bin = await this.binary(fam.family);
      for (const table of tablesOf(fam.chains)) {
        const state = await this.read(bin, table);
        for (const c of fam.chains.filter((x) => x.table === table)) {
          const where = `${bin} ${table} ${c.chain}`;
          if (!state.chains.has(c.chain)) {
            missing.push(`${where}: chain does not exist`, `${bin} ${table} ${c.builtin}: jump to ${c.chain} is missing`);
            continue;
          }
          missing.push(...(await this.chainDiff(bin, c, state)).map((d) => `${where}: ${d}`));
          missing.push(...(await this.jumpDiff(bin, c, state)).map((d) => `${bin} ${table} ${c.builtin}: ${d}`));
        }
      }
    }
    return { missing };
  }

  /** The commands apply() runs, as a sh script; see commands.ts for the format. */
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

  /**
   * A missing jump is inserted before stale copies are deleted (no gap). Only
   * a duplicated or displaced exact jump is deleted and re-inserted, leaving a
   * moment without it; that happens when something else rewrote the chain.
   */
  private async ensureJump(bin: string, c: ChainRules, state: TableState): Promise<void> {
    if ((await this.jumpDiff(bin, c, state)).length === 0) return;
    const copies = jumpsInto(state, c);
    const present = await this.exists(cmd.checkJump(bin, c));
    if (!present) await runOrThrow(this.runner, cmd.insertJump(bin, c));
    for (const copy of copies) await runOrThrow(this.runner, cmd.deleteRule(bin, c.table, c.builtin, copy.tokens));
    if (present) await runOrThrow(this.runner, cmd.insertJump(bin, c));
  }
}

function tablesOf(chains: readonly ChainRules[]): TableName[] {
  return [...new Set(chains.map((c) => c.table))];
}

/** Rules of the built-in chain that jump into c.chain, in position order. */
function jumpsInto(state: TableState, c: ChainRules): SavedRule[] {
  return state.rulesOf(c.builtin).filter((r) => targetOf(r.tokens) === c.chain);
}
