// RuleManager against a fake iptables (an in-memory CommandRunner with an
// all-or-nothing iptables-restore): one transaction per family, idempotence,
// jump repair, family removal, drift, backend choice and error reporting.
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { loadConfig, withPeers } from '../../daemon/config/load.js';
import { parseHostPort } from '../../daemon/config/formats.js';
import { Cidr } from '../../daemon/policy/cidr.js';
import type { CommandResult, CommandRunner } from '../../daemon/iptables/command-runner.js';
import { RuleManager } from '../../daemon/iptables/manager.js';
import { tokenize } from '../../daemon/iptables/table-state.js';

const config = loadConfig(path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../config/examples/host-1.json'));
const BUILTIN: Record<string, string[]> = { filter: ['INPUT', 'FORWARD', 'OUTPUT'], nat: ['PREROUTING', 'INPUT', 'OUTPUT', 'POSTROUTING'] };
const ok = (stdout = ''): CommandResult => ({ code: 0, stdout, stderr: '' });
const quote = (t: string) => (t.includes(' ') ? `"${t}"` : t);

/** Just enough iptables: -V, -save, -S, -N, -F, -X, -A, -I n, -D spec, -C spec, -restore; one table set per backend and family ('nft6': ip6tables-nft). */
class FakeIptables implements CommandRunner {
  readonly calls: string[][] = [];
  readonly tables: Record<string, Record<string, Map<string, string[][]>>> = { nft: {}, legacy: {}, nft6: {}, legacy6: {} };
  /** Binaries that do not exist on this fake host. */
  missing = new Set<string>();
  failOn: ((argv: readonly string[]) => CommandResult | undefined) | undefined;
  defaultBackend = 'nft';

  chains(backend: string, table: string): Map<string, string[][]> {
    return (this.tables[backend]![table] ??= new Map(BUILTIN[table]!.map((c) => [c, []])));
  }

  /** The stdin of each iptables-restore call, in order. */
  readonly transactions: string[] = [];

  async run(argv: readonly string[], input?: string): Promise<CommandResult> {
    this.calls.push([...argv]);
    const [bin, ...args] = argv as [string, ...string[]];
    if (this.missing.has(bin)) return { code: 127, stdout: '', stderr: `${bin}: command not found` };
    const failed = this.failOn?.(argv);
    if (failed) return failed;
    const base = bin.includes('legacy') ? 'legacy' : bin.includes('nft') ? 'nft' : this.defaultBackend;
    if (args[0] === '-V') return ok(`${bin} v1.8.9 (${base === 'nft' ? 'nf_tables' : 'legacy'})\n`);
    const backend = bin.startsWith('ip6') ? `${base}6` : base;
    if (bin.endsWith('-restore')) return this.restore(backend, args, input ?? '');
    if (bin.endsWith('-save')) {
      const lines = Object.keys(this.tables[backend]!).flatMap((t) => this.listing(backend, t).filter((l) => l.startsWith('-A')));
      return ok(lines.join('\n'));
    }
    const [w, , t, table, ...command] = args as string[];
    if (w !== '-w' || t !== '-t' || !table) return { code: 2, stdout: '', stderr: 'bad call' };
    return this.command(backend, table, command);
  }

  /** iptables-restore --noflush: every table of the input changes, or none does. */
  private restore(backend: string, args: readonly string[], input: string): CommandResult {
    if (args.join(' ') !== '-w 10 --noflush') return { code: 2, stdout: '', stderr: 'bad restore call' };
    this.transactions.push(input);
    const saved = structuredClone(this.tables[backend]!);
    let table: string | undefined;
    const lines = input.split('\n');
    for (const [i, text] of lines.entries()) {
      const fail = (why: string): CommandResult => {
        this.tables[backend] = saved;
        return { code: 2, stdout: '', stderr: `${why}\nError occurred at line: ${i + 1}` };
      };
      if (text === '' || text === 'COMMIT') continue;
      if (text.startsWith('*')) { table = text.slice(1); continue; }
      if (table === undefined) return fail('no table');
      const declared = /^:(\S+) - \[0:0\]$/.exec(text);
      if (declared) {
        this.chains(backend, table).set(declared[1]!, []); // --noflush: created, or flushed when it exists
        continue;
      }
      const r = this.command(backend, table, tokenize(text));
      if (r.code !== 0) return fail(r.stderr);
    }
    return ok();
  }

  private command(backend: string, table: string, [verb, chain, ...rest]: readonly string[]): CommandResult {
    const chains = this.chains(backend, table);
    const rules = chain === undefined ? undefined : chains.get(chain);
    const same = (r: string[], spec: string[]) => r.join('\u0000') === spec.join('\u0000');
    const noChain = { code: 1, stdout: '', stderr: `iptables: No chain/target/match by that name.` };
    switch (verb) {
      case '-S': return ok(this.listing(backend, table).join('\n') + '\n');
      case '-N': if (rules) return { code: 1, stdout: '', stderr: 'iptables: Chain already exists.' }; chains.set(chain!, []); return ok();
      case '-F': if (!rules) return noChain; rules.length = 0; return ok();
      case '-X': chains.delete(chain!); return ok();
      case '-A': if (!rules) return noChain; rules.push(rest); return ok();
      case '-I': if (!rules) return noChain; rules.splice(Number(rest[0]) - 1, 0, rest.slice(1)); return ok();
      case '-C': return rules?.some((r) => same(r, rest)) ? ok() : { code: 1, stdout: '', stderr: 'iptables: Bad rule (does a matching rule exist in that chain?).' };
      case '-D': {
        const i = rules?.findIndex((r) => same(r, rest)) ?? -1;
        if (i < 0) return { code: 1, stdout: '', stderr: 'iptables: Bad rule.' };
        rules!.splice(i, 1);
        return ok();
      }
      default: return { code: 2, stdout: '', stderr: `unknown ${verb}` };
    }
  }

  listing(backend: string, table: string): string[] {
    const out: string[] = [];
    for (const [name, rules] of this.chains(backend, table)) {
      out.push(BUILTIN[table]!.includes(name) ? `-P ${name} ACCEPT` : `-N ${name}`);
      for (const r of rules) out.push(`-A ${name} ${r.map(quote).join(' ')}`);
    }
    return out;
  }

  /** Calls that change rules: single commands and restore transactions. */
  mutations(): string[][] {
    return this.calls.filter((c) => ['-N', '-F', '-X', '-A', '-I', '-D'].includes(c[5] ?? '') || c[0]!.endsWith('-restore'));
  }
}

const setup = (opts: { backend?: 'nft' | 'legacy' } = {}) => {
  const fake = new FakeIptables();
  return { fake, manager: new RuleManager(config, { runner: fake, ...opts }) };
};

describe('RuleManager with a fake iptables', () => {
  it('apply writes one transaction per family: filter before nat, jumps at position 1; check is clean', async () => {
    const { fake, manager } = setup();
    await manager.apply();
    expect(fake.mutations().map((c) => c[0])).toEqual(['iptables-nft-restore']); // host-1.json is IPv4 only
    const [tx] = fake.transactions as [string];
    expect(tx.indexOf('*filter')).toBeLessThan(tx.indexOf('*nat'));
    expect(tx.match(/^COMMIT$/gm)).toHaveLength(2);
    expect(tx.match(/^-I \S+ 1 /gm)).toHaveLength(5);
    expect(fake.chains('nft', 'nat').get('OUTPUT')![0]!.slice(0, 2)).toEqual(['-j', 'QMESH_OUTPUT']);
    expect(fake.chains('nft', 'nat').get('QMESH_OUTPUT')).toHaveLength(3);
    expect(await manager.check()).toEqual({ missing: [] });
    expect(await manager.drift()).toEqual({ missing: [] });
    // Detection asks `iptables -V`; every table command then goes to one binary.
    expect(new Set(fake.calls.filter((c) => c[1] === '-w' && c[0]!.startsWith('iptables')).map((c) => c[0]))).toEqual(new Set(['iptables-nft', 'iptables-nft-restore']));
  });

  it('a successor (the next reload\'s rules) keeps the backend and binaries: no detection again', async () => {
    const { fake, manager } = setup();
    await manager.apply();
    const before = fake.calls.length;
    const next = withPeers(config, [{ name: 'host-9', endpoint: parseHostPort('198.18.0.9:4433'), cidrs: [Cidr.parse('198.19.9.0/24')] }]);
    await manager.successor(next).apply();
    const calls = fake.calls.slice(before);
    expect(calls.filter((c) => c.some((a) => a === '-V') || c[0]!.endsWith('-save'))).toEqual([]);
    expect(fake.mutations().at(-1)![0]).toBe('iptables-nft-restore');
    expect(fake.transactions.at(-1)).toContain('198.19.9.0/24');
  });

  it('a second apply changes nothing', async () => {
    const { fake, manager } = setup();
    await manager.apply();
    const n = fake.mutations().length;
    await manager.apply();
    expect(fake.mutations()).toHaveLength(n);
  });

  it('apply repairs drift in one transaction: refilled chain, stale and displaced jumps replaced by one at the head', async () => {
    const { fake, manager } = setup();
    await manager.apply();
    const nat = fake.chains('nft', 'nat');
    nat.get('QMESH_PREROUTING')!.pop();
    nat.get('PREROUTING')![0] = ['-m', 'comment', '--comment', 'qmesh: old wording', '-j', 'QMESH_PREROUTING'];
    nat.get('OUTPUT')!.unshift(['-j', 'ACCEPT']);
    const missing = (await manager.check()).missing.join('\n');
    expect(missing).toMatch(/nat QMESH_PREROUTING: rule missing: .*REDIRECT/);
    expect(missing).toMatch(/nat PREROUTING: jump to QMESH_PREROUTING is missing/);
    expect(missing).toMatch(/nat OUTPUT: jump to QMESH_OUTPUT is rule 2, not the first/);
    const drift = (await manager.drift()).missing.join('\n');
    expect(drift).toMatch(/nat QMESH_PREROUTING: holds 1 rules, expected 2/);
    expect(drift).toMatch(/nat PREROUTING: jump to QMESH_PREROUTING is not exactly once at the head/);
    expect(drift).toMatch(/nat OUTPUT: jump to QMESH_OUTPUT is not exactly once at the head/);
    const before = fake.mutations().length;
    await manager.apply();
    expect(fake.mutations().slice(before).map((c) => c[0])).toEqual(['iptables-nft-restore']);
    expect(fake.transactions.at(-1)).toContain('-D PREROUTING -m comment --comment "qmesh: old wording" -j QMESH_PREROUTING');
    expect(await manager.check()).toEqual({ missing: [] });
    expect(nat.get('PREROUTING')).toHaveLength(1);
    expect(nat.get('OUTPUT')!.map((r) => r[r.indexOf('-j') + 1])).toEqual(['QMESH_OUTPUT', 'ACCEPT']);
  });

  it('a transaction that fails changes nothing and names the line it stopped at', async () => {
    const { fake, manager } = setup();
    await manager.apply();
    const nat = fake.chains('nft', 'nat');
    nat.get('QMESH_PREROUTING')!.pop();
    // Another program deletes the jump between qmesh's read and its commit: the -D of that jump fails.
    const realRun = fake.run.bind(fake);
    fake.run = async (argv, input) => {
      if (argv[0]!.endsWith('-restore')) nat.get('PREROUTING')!.length = 0;
      return realRun(argv, input);
    };
    const filterBefore = JSON.stringify([...fake.chains('nft', 'filter')]);
    const err = await manager.apply().then(() => undefined, (e: unknown) => e);
    expect(err).toMatchObject({ code: 'QMESH_ERR_IPTABLES' });
    expect((err as Error).message).toMatch(/`iptables-nft-restore -w 10 --noflush` failed .*input line: -D PREROUTING .*likely fix: the rules changed while/s);
    expect(fake.chains('nft', 'nat').get('QMESH_PREROUTING')).toHaveLength(1); // not refilled: the whole transaction was refused
    expect(JSON.stringify([...fake.chains('nft', 'filter')])).toBe(filterBefore);
  });

  it('a family the config no longer uses loses its chains and jumps; the other family stays', async () => {
    const { fake, manager } = setup();
    await manager.apply();
    fake.tables.nft6 = structuredClone(fake.tables.nft!); // as if IPv6 had been configured before
    const v4 = JSON.stringify(fake.tables.nft);
    await manager.apply(); // host-1.json is IPv4 only
    expect(fake.mutations().at(-1)![0]).toBe('ip6tables-nft-restore');
    for (const table of ['filter', 'nat']) {
      for (const [name, rules] of fake.chains('nft6', table)) {
        expect(name.startsWith('QMESH')).toBe(false);
        expect(rules).toEqual([]);
      }
    }
    expect(JSON.stringify(fake.tables.nft)).toBe(v4);
  });

  it('remove deletes every jump copy, then the chains, in one transaction; removing nothing succeeds', async () => {
    const { fake, manager } = setup();
    await manager.remove();
    expect(fake.mutations()).toEqual([]);
    await manager.apply();
    fake.chains('nft', 'filter').get('FORWARD')!.push(['-j', 'QMESH_FORWARD']);
    await manager.remove();
    for (const table of ['filter', 'nat']) {
      for (const [name, rules] of fake.chains('nft', table)) {
        expect(name.startsWith('QMESH')).toBe(false);
        expect(rules).toEqual([]);
      }
    }
    expect((await manager.check()).missing).toContain('iptables-nft filter QMESH_FORWARD: chain does not exist');
  });

  it('a failing command becomes QMESH_ERR_IPTABLES naming the command, stderr and a fix', async () => {
    const { fake, manager } = setup({ backend: 'nft' });
    fake.failOn = (argv) => (argv[0] === 'iptables-nft-restore' ? { code: 4, stdout: '', stderr: 'iptables-nft-restore v1.8.9 (nf_tables): Could not fetch rule set generation id: Permission denied (you must be root)' } : undefined);
    const err = await manager.apply().then(() => undefined, (e: unknown) => e);
    expect(err).toMatchObject({ code: 'QMESH_ERR_IPTABLES' });
    const message = (err as Error).message;
    expect(message).toContain('`iptables-nft-restore -w 10 --noflush` failed (exit 4)');
    expect(message).toContain('Permission denied');
    expect(message).toContain('run as root or with CAP_NET_ADMIN');
  });
});

describe('backend choice', () => {
  it('prefers the backend that alone holds rules', async () => {
    const { fake, manager } = setup();
    fake.chains('legacy', 'filter').get('INPUT')!.push(['-j', 'ACCEPT']);
    expect(await manager.backend()).toBe('legacy');
    await manager.apply();
    expect(new Set(fake.mutations().map((c) => c[0]))).toEqual(new Set(['iptables-legacy-restore']));
    expect(fake.chains('nft', 'filter').has('QMESH_INPUT')).toBe(false);
    expect(manager.print()).toMatch(/^iptables-legacy -w 10 /m);
  });

  it('falls back to `iptables -V` when both or neither hold rules', async () => {
    const a = setup();
    a.fake.defaultBackend = 'legacy';
    expect(await a.manager.backend()).toBe('legacy');
    const b = setup();
    b.fake.chains('legacy', 'filter').get('INPUT')!.push(['-j', 'ACCEPT']);
    b.fake.chains('nft', 'filter').get('INPUT')!.push(['-j', 'ACCEPT']);
    expect(await b.manager.backend()).toBe('nft');
  });

  it('uses plain iptables when it speaks the chosen backend and the suffixed binary is absent', async () => {
    const { fake, manager } = setup({ backend: 'nft' });
    fake.missing.add('iptables-nft');
    await manager.apply();
    expect(new Set(fake.mutations().map((c) => c[0]))).toEqual(new Set(['iptables-restore']));
  });

  it('refuses to mix: no binary for the chosen backend is an error, not a fallback', async () => {
    const { fake, manager } = setup({ backend: 'legacy' });
    fake.missing.add('iptables-legacy'); // plain iptables says nf_tables
    await expect(manager.apply()).rejects.toMatchObject({ code: 'QMESH_ERR_IPTABLES' });
    expect(fake.mutations()).toEqual([]);
  });
});
