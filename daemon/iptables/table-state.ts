// Parses `iptables -t <table> -S` output into chains and rule token lists, so
// manager.ts can see which qmesh chains exist, what they hold, and where the
// jumps into them sit. Pure; the tokens of a rule can be handed back to `-D`.

export interface SavedRule {
  /** 1-based position in its chain, as `-D <chain> <n>` and `--line-numbers` count. */
  readonly position: number;
  /** The rule spec after `-A <chain>`, unquoted, usable as argv for `-D <chain> ...tokens`. */
  readonly tokens: readonly string[];
}

export interface TableState {
  readonly chains: ReadonlySet<string>;
  rulesOf(chain: string): readonly SavedRule[];
}

/** Splits one line the way a shell would, for the subset iptables prints: bare words and "..." with \-escapes. */
export function tokenize(line: string): string[] {
  const out: string[] = [];
  let i = 0;
  while (i < line.length) {
    while (line[i] === ' ') i++;
    if (i >= line.length) break;
    let word = '';
    if (line[i] === '"') {
      i++;
      while (i < line.length && line[i] !== '"') {
        if (line[i] === '\\' && i + 1 < line.length) i++;
        word += line[i];
        i++;
      }
      i++; // closing quote
    } else {
      while (i < line.length && line[i] !== ' ') word += line[i++];
    }
    out.push(word);
  }
  return out;
}

export function parseTableState(text: string): TableState {
  const chains = new Set<string>();
  const rules = new Map<string, SavedRule[]>();
  for (const line of text.split('\n')) {
    const tokens = tokenize(line);
    const [verb, chain, ...rest] = tokens;
    if (chain === undefined) continue;
    if (verb === '-P' || verb === '-N') chains.add(chain);
    if (verb === '-A') {
      chains.add(chain);
      const list = rules.get(chain) ?? [];
      list.push({ position: list.length + 1, tokens: rest });
      rules.set(chain, list);
    }
  }
  return { chains, rulesOf: (chain) => rules.get(chain) ?? [] };
}

/** The target of a saved rule (`-j X` or `-g X`), if any. */
export function targetOf(tokens: readonly string[]): string | undefined {
  for (let i = 0; i < tokens.length - 1; i++) {
    if (tokens[i] === '-j' || tokens[i] === '-g') return tokens[i + 1];
  }
  return undefined;
}

/** The comment of a saved rule, if any. */
export function savedComment(tokens: readonly string[]): string | undefined {
  const i = tokens.indexOf('--comment');
  return i >= 0 ? tokens[i + 1] : undefined;
}
