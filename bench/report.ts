// Turns scenario results into the outputs: a fixed-width table on stdout, a
// Markdown report and the raw JSON under bench/results/, and the results block
// of bench/README.md (between its markers). Formatting is pure and unit-tested;
// only writeReport() touches files.
import fs from 'node:fs';
import path from 'node:path';
import { ratio } from './lib/stats.js';
import type { Cell, Figure, ScenarioResult } from './scenarios/scenario.js';
import { TRANSPORTS, type TransportName } from './transports/transport.js';

export interface RunInfo {
  mode: 'quick' | 'full';
  startedAt: string;
  finishedAt: string;
  seconds: number;
  cores: number;
  cpuModel: string;
  node: string;
  kernel: string;
  stunnel: string;
  /** 1-minute load average when the run started and ended: how busy the shared machine was. */
  loadAverage: { start: number; end: number };
  transports: TransportName[];
}

export interface BenchReport {
  run: RunInfo;
  scenarios: ScenarioResult[];
}

export const README_START = '<!-- bench-results:start -->';
export const README_END = '<!-- bench-results:end -->';

/** Digits by size and unit: round trips to 0.01, small latencies to the microsecond, rates whole. */
export function formatNumber(v: number, unit: string): string {
  if (!Number.isFinite(v)) return '-';
  if (unit === 'RT') return v.toFixed(2);
  if (unit === 'conn/s' || unit === 'req/s') return v.toFixed(0);
  const a = Math.abs(v);
  if (a >= 100) return v.toFixed(0);
  if (a >= 10) return v.toFixed(1);
  if (a >= 1) return v.toFixed(2);
  return v.toFixed(3);
}

/** "0.321 (0.250..1.10)", or the cell's note, or "-" when the transport was not run. */
export function formatCell(cell: Cell | undefined, unit: string): string {
  if (!cell) return '-';
  if (cell.note) return cell.note;
  const main = formatNumber(cell.value, unit);
  if (cell.min === undefined || cell.max === undefined) return main;
  return `${main} (${formatNumber(cell.min, unit)}..${formatNumber(cell.max, unit)})`;
}

export function formatRatio(r: number): string {
  if (!Number.isFinite(r)) return '-';
  return `${r >= 10 ? r.toFixed(1) : r.toFixed(2)}x`;
}

export function formatTarget(f: Figure): string {
  if (!f.target) return '';
  const verdict = f.target.met === null ? 'not judged' : f.target.met ? 'MET' : 'missed';
  return `${f.target.text}: ${verdict}`;
}

export const TABLE_HEADER = ['#', 'figure', 'unit', 'plain TCP', 'TCP+TLS (stunnel)', 'qmesh', 'qmesh/plain', 'qmesh/stunnel', 'target'];

/** One row per figure, in the column order of TABLE_HEADER. */
export function tableRows(scenarios: readonly ScenarioResult[]): string[][] {
  const rows: string[][] = [];
  for (const s of scenarios) {
    for (const f of s.figures) {
      const q = f.values.qmesh?.value;
      rows.push([
        String(s.id),
        f.label,
        f.unit,
        formatCell(f.values.plain, f.unit),
        formatCell(f.values.stunnel, f.unit),
        formatCell(f.values.qmesh, f.unit),
        formatRatio(ratio(q, f.values.plain?.value)),
        formatRatio(ratio(q, f.values.stunnel?.value)),
        formatTarget(f),
      ]);
    }
  }
  return rows;
}

/** Fixed-width text table (for the terminal). */
export function textTable(header: readonly string[], rows: readonly string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]): string => cells.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd();
  return [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n') + '\n';
}

/** Markdown table; pipes inside cells are escaped. */
export function markdownTable(header: readonly string[], rows: readonly string[][]): string {
  const esc = (c: string): string => c.replace(/\|/g, '\\|');
  return [`| ${header.map(esc).join(' | ')} |`, `|${header.map(() => '---').join('|')}|`, ...rows.map((r) => `| ${r.map(esc).join(' | ')} |`)].join('\n') + '\n';
}

export function runLine(run: RunInfo): string {
  return (
    `${run.mode} run, ${run.startedAt.slice(0, 10)} (${run.startedAt}), ${run.seconds.toFixed(0)} s; ` +
    `${run.cores} cores (${run.cpuModel}), load average ${run.loadAverage.start.toFixed(2)} -> ${run.loadAverage.end.toFixed(2)}; ` +
    `Node ${run.node}, Linux ${run.kernel}, ${run.stunnel}`
  );
}

const LEGEND =
  'Values: median (min..max) of the samples or runs; round trips: slope of the per-d medians (90 % bootstrap interval). ' +
  'd = round-trip time added between the hosts (d/2 held on each host\'s egress). Ratios compare medians.';

export function markdownReport(report: BenchReport): string {
  const out = [`# qmesh bench results`, '', runLine(report.run), '', LEGEND, '', markdownTable(TABLE_HEADER, tableRows(report.scenarios))];
  for (const s of report.scenarios) {
    const load = s.loadAverage ? `, load ${s.loadAverage.start.toFixed(1)} -> ${s.loadAverage.end.toFixed(1)}` : '';
    out.push(`**${s.id}. ${s.title}** (${s.seconds.toFixed(0)} s${load})`, '');
    for (const n of s.notes) out.push(`- ${n}`);
    for (const e of s.errors) out.push(`- error: ${e}`);
    out.push('');
  }
  return out.join('\n');
}

export function textReport(report: BenchReport): string {
  const notes = report.scenarios.flatMap((s) => [...s.notes.map((n) => `  [${s.id}] ${n}`), ...s.errors.map((e) => `  [${s.id}] error: ${e}`)]);
  return [runLine(report.run), LEGEND, '', textTable(TABLE_HEADER, tableRows(report.scenarios)), ...notes, ''].join('\n');
}

/** Replaces the text between the README's markers; throws if they are missing. */
export function replaceReadmeBlock(readme: string, block: string): string {
  const a = readme.indexOf(README_START);
  const b = readme.indexOf(README_END);
  if (a < 0 || b < a) throw new Error(`bench/README.md lacks the ${README_START} ... ${README_END} markers`);
  return readme.slice(0, a + README_START.length) + '\n' + block.trimEnd() + '\n' + readme.slice(b);
}

/** Writes <stamp>-<mode>.json and .md into dir and refreshes the README block; returns the paths. */
export function writeReport(report: BenchReport, dir: string, readmePath: string | null): { json: string; md: string } {
  fs.mkdirSync(dir, { recursive: true });
  const stamp = report.run.startedAt.replace(/[:.]/g, '-').slice(0, 19);
  const base = path.join(dir, `${stamp}-${report.run.mode}`);
  const md = markdownReport(report);
  fs.writeFileSync(`${base}.json`, JSON.stringify(report, null, 2) + '\n');
  fs.writeFileSync(`${base}.md`, md);
  if (readmePath && fs.existsSync(readmePath)) {
    const block = md.replace(/^# qmesh bench results\n\n/, '');
    fs.writeFileSync(readmePath, replaceReadmeBlock(fs.readFileSync(readmePath, 'utf8'), block));
  }
  return { json: `${base}.json`, md: `${base}.md` };
}

export { TRANSPORTS };
