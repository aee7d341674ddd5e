// Decides which iptables the host uses (nf_tables or legacy) and which binaries
// speak it, so every command of one RuleManager goes to the same backend.
// Receives a CommandRunner; hands manager.ts a family → binary map.
import type { Family } from '../policy/cidr.js';
import { ErrorCodes, QmeshError } from '../errors.js';
import type { CommandRunner } from './command-runner.js';

export type Backend = 'nft' | 'legacy';

export const TOOL: Record<Family, string> = { 4: 'iptables', 6: 'ip6tables' };

const backendOfVersion = (text: string): Backend | undefined =>
  /\(nf_tables\)/.test(text) ? 'nft' : /\(legacy\)/.test(text) ? 'legacy' : undefined;

async function countRules(runner: CommandRunner, saveBinary: string): Promise<number> {
  const r = await runner.run([saveBinary]);
  if (r.code !== 0) return 0;
  return r.stdout.split('\n').filter((line) => line.startsWith('-A ')).length;
}

/**
 * The backend the host's rules live in. When exactly one of legacy and nft holds
 * rules, that one wins (the other is invisible to the host's firewall tooling);
 * otherwise what `iptables -V` says, i.e. the distribution's choice.
 */
export async function detectBackend(runner: CommandRunner): Promise<Backend> {
  const counts: Record<Backend, number> = { nft: 0, legacy: 0 };
  for (const backend of ['nft', 'legacy'] as const) {
    for (const tool of ['iptables', 'ip6tables']) counts[backend] += await countRules(runner, `${tool}-${backend}-save`);
  }
  if (counts.legacy > 0 && counts.nft === 0) return 'legacy';
  if (counts.nft > 0 && counts.legacy === 0) return 'nft';
  const v = await runner.run(['iptables', '-V']);
  const said = v.code === 0 ? backendOfVersion(v.stdout + v.stderr) : undefined;
  if (said) return said;
  for (const backend of ['nft', 'legacy'] as const) {
    const r = await runner.run([`iptables-${backend}`, '-V']);
    if (r.code === 0) return backend;
  }
  throw new QmeshError(
    ErrorCodes.IPTABLES,
    'cannot tell which iptables backend this host uses: `iptables -V` names neither nf_tables nor legacy and ' +
      'neither iptables-nft nor iptables-legacy runs; likely fix: install iptables or set the backend explicitly',
  );
}

/** The binary name an operator would type for this backend (used by print() before detection). */
export const binaryName = (family: Family, backend: Backend | undefined): string =>
  backend === undefined ? TOOL[family] : `${TOOL[family]}-${backend}`;

/**
 * Finds the binary that speaks `backend` for `family`: `<tool>-<backend>` when
 * present, else plain `<tool>` if it reports the same backend. Never mixes.
 */
export async function resolveBinary(runner: CommandRunner, family: Family, backend: Backend): Promise<string> {
  const tool = TOOL[family];
  const tried: string[] = [];
  for (const candidate of [`${tool}-${backend}`, tool]) {
    const r = await runner.run([candidate, '-V']);
    const text = r.stdout + r.stderr;
    tried.push(`${candidate}: ${r.code === 0 ? text.trim() : `exit ${r.code}`}`);
    if (r.code !== 0) continue;
    const said = backendOfVersion(text);
    // iptables before 1.8 prints no backend at all and is always legacy.
    if (said === backend || (said === undefined && backend === 'legacy')) return candidate;
  }
  throw new QmeshError(
    ErrorCodes.IPTABLES,
    `no ${tool} binary for the ${backend} backend (${tried.join('; ')}); likely fix: install the iptables package ` +
      `that provides ${tool}-${backend}, or choose the other backend`,
  );
}
