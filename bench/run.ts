// `npm run bench [-- --quick] [--scenarios 1,3] [--transports plain,qmesh]`:
// builds two hosts in network namespaces (bench-env.ts), runs each scenario for
// every transport side by side, prints the table and writes JSON + Markdown to
// bench/results/ and the results block of bench/README.md (report.ts).
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command, Option } from 'commander';
import { packageRoot } from '../daemon/demo/package-root.js';
import { BenchEnv } from './lib/bench-env.js';
import { textReport, writeReport, type BenchReport, type RunInfo } from './report.js';
import { SCENARIOS } from './scenarios/index.js';
import type { ScenarioResult } from './scenarios/scenario.js';
import { TRANSPORTS, type TransportName } from './transports/transport.js';


function list<T extends string | number>(value: string, allowed: readonly T[], parse: (s: string) => T): T[] {
  const items = value.split(',').map((s) => parse(s.trim()));
  for (const i of items) if (!allowed.includes(i)) throw new Error(`${i} is not one of ${allowed.join(', ')}`);
  return items;
}

function stunnelVersion(): string {
  // stunnel prints its version on stderr.
  const r = spawnSync('stunnel4', ['-version'], { encoding: 'utf8' });
  return /stunnel [\d.]+/.exec(`${r.stdout ?? ''}${r.stderr ?? ''}`)?.[0] ?? 'stunnel (not found)';
}

async function main(): Promise<void> {
  const program = new Command('bench')
    .description('qmesh benchmarks: plain TCP vs TCP+TLS 1.3 (stunnel) vs qmesh, side by side (needs root).')
    .option('--quick', 'fewer samples and shorter runs (under 2 minutes)', false)
    .addOption(new Option('--scenarios <list>', 'comma-separated scenario numbers').default(SCENARIOS.map((s) => s.id).join(',')))
    .addOption(new Option('--transports <list>', 'comma-separated: plain,stunnel,qmesh').default(TRANSPORTS.join(',')))
    .option('--out <dir>', 'results folder', path.join(packageRoot(), 'bench/results'))
    .option('--no-readme', 'do not refresh the results block of bench/README.md (only a run of every scenario and transport does)')
    .parse(process.argv);
  const opts = program.opts<{ quick: boolean; scenarios: string; transports: string; out: string; readme: boolean }>();
  const ids = list(opts.scenarios, SCENARIOS.map((s) => s.id), Number);
  const transports = list(opts.transports, TRANSPORTS, (s) => s as TransportName);
  if (process.getuid?.() !== 0) throw new Error('the bench needs root: network namespaces, iptables and NFQUEUE');

  const t0 = performance.now();
  const startedAt = new Date().toISOString();
  const loadStart = os.loadavg()[0]!;
  const log = (m: string): void => {
    process.stderr.write(`[${((performance.now() - t0) / 1000).toFixed(1).padStart(5)} s] ${m}\n`);
  };
  log(`${opts.quick ? 'quick' : 'full'} run: scenarios ${ids.join(',')}, transports ${transports.join(',')}; ${os.cpus().length} cores, load ${loadStart.toFixed(2)}`);
  const env = await BenchEnv.create();
  log(`hosts up: ${env.hosts.map((h) => `${h.name} ${h.underlayIp} (${h.ns})`).join(', ')}`);
  const results: ScenarioResult[] = [];
  // Each scenario starts with the transport the previous one ended on, so the
  // order alternates (plain, stunnel, qmesh / qmesh, stunnel, plain): half the
  // daemon restarts, and slow drift of the shared machine's load hits no
  // transport always first or always last.
  let order = [...transports];
  try {
    for (const scenario of SCENARIOS.filter((s) => ids.includes(s.id))) {
      const s0 = performance.now();
      const load0 = os.loadavg()[0]!;
      if (env.current !== null && order[order.length - 1] === env.current) order = [...order].reverse();
      log(`scenario ${scenario.id}: ${scenario.title}`);
      try {
        const r = await scenario.run({ env, quick: opts.quick, transports: order, log });
        results.push({ id: scenario.id, title: scenario.title, seconds: (performance.now() - s0) / 1000, loadAverage: { start: load0, end: os.loadavg()[0]! }, ...r });
      } catch (err) {
        log(`scenario ${scenario.id} FAILED: ${(err as Error).stack ?? String(err)}`);
        results.push({ id: scenario.id, title: scenario.title, seconds: (performance.now() - s0) / 1000, loadAverage: { start: load0, end: os.loadavg()[0]! }, figures: [], notes: [], errors: [String((err as Error).message ?? err)], details: {} });
      }
      log(`scenario ${scenario.id} done in ${((performance.now() - s0) / 1000).toFixed(1)} s`);
    }
  } finally {
    await env.destroy();
  }
  const run: RunInfo = {
    mode: opts.quick ? 'quick' : 'full',
    startedAt,
    finishedAt: new Date().toISOString(),
    seconds: (performance.now() - t0) / 1000,
    cores: os.cpus().length,
    cpuModel: os.cpus()[0]?.model.trim() ?? 'unknown',
    node: process.version,
    kernel: os.release(),
    stunnel: stunnelVersion(),
    loadAverage: { start: loadStart, end: os.loadavg()[0]! },
    transports,
  };
  const report: BenchReport = { run, scenarios: results };
  process.stdout.write('\n' + textReport(report));
  // The README's block is the reference table: only a run of every scenario and transport replaces it.
  const complete = ids.length === SCENARIOS.length && transports.length === TRANSPORTS.length;
  const files = writeReport(report, opts.out, opts.readme && complete ? path.join(packageRoot(), 'bench/README.md') : null);
  log(`wrote ${files.json} and ${files.md}${opts.readme && !complete ? '; bench/README.md left as it is (a subset of the scenarios or transports ran)' : ''}`);
}

main().catch((err) => {
  process.stderr.write(`bench: ${(err as Error)?.stack ?? String(err)}\n`);
  process.exit(1);
});
