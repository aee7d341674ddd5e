// What every scenario file exports and returns. A scenario measures all
// requested transports side by side and reports figures: one value per
// transport (with its spread), the target, and raw details for the JSON.
import type { BenchEnv } from '../lib/bench-env.js';
import type { Summary } from '../lib/stats.js';
import type { TransportName } from '../transports/transport.js';

export interface Cell {
  /** The figure's headline value (a median, a slope, a rate). */
  value: number;
  /** Spread shown next to it: min/max of the samples or runs it came from. */
  min?: number;
  max?: number;
  p99?: number;
  n?: number;
  /** Shown instead of a value when the measurement failed (e.g. "error: ..."). */
  note?: string;
}

export interface Figure {
  /** Stable key, e.g. "s1.round-trips". */
  key: string;
  label: string;
  unit: string;
  /** For ratios and targets: is a larger value better (throughput) or worse (latency)? */
  higherIsBetter: boolean;
  values: Partial<Record<TransportName, Cell>>;
  /** The target for qmesh, and whether this run met it (null: not judged). */
  target?: { text: string; met: boolean | null };
}

export interface ScenarioResult {
  id: number;
  title: string;
  figures: Figure[];
  notes: string[];
  errors: string[];
  /** Raw numbers for the JSON report. */
  details: Record<string, unknown>;
  seconds: number;
  /** 1-minute load average of the machine when the scenario started and ended (the shared cores' noise). */
  loadAverage?: { start: number; end: number };
}

export interface ScenarioContext {
  env: BenchEnv;
  quick: boolean;
  transports: readonly TransportName[];
  log(message: string): void;
}

export interface Scenario {
  id: number;
  title: string;
  /** Rough duration in quick mode, for the progress line. */
  run(ctx: ScenarioContext): Promise<Omit<ScenarioResult, 'id' | 'title' | 'seconds'>>;
}

/** A cell from a latency summary: value p50, spread min..max, p99 alongside. */
export function latencyCell(s: Summary): Cell {
  return { value: s.p50, min: s.min, max: s.max, p99: s.p99, n: s.n };
}

export function p99Cell(s: Summary): Cell {
  return { value: s.p99, min: s.min, max: s.max, n: s.n };
}

/** A cell from repeated runs: value median of the runs, spread min..max. */
export function runsCell(values: readonly number[], median: number): Cell {
  return { value: median, min: Math.min(...values), max: Math.max(...values), n: values.length };
}

export const errorCell = (err: unknown): Cell => ({ value: NaN, note: `error: ${String((err as Error)?.message ?? err).split('\n')[0]!.slice(0, 90)}` });

/** Runs fn per transport, catching failures into `errors` so one broken transport cannot end the run. */
export async function perTransport<T>(
  ctx: ScenarioContext,
  errors: string[],
  fn: (t: TransportName) => Promise<T>,
): Promise<Partial<Record<TransportName, T | Error>>> {
  const out: Partial<Record<TransportName, T | Error>> = {};
  for (const t of ctx.transports) {
    try {
      out[t] = await fn(t);
    } catch (err) {
      const e = err instanceof Error ? err : new Error(String(err));
      errors.push(`${t}: ${e.message.split('\n')[0]}`);
      ctx.log(`  ${t}: FAILED ${e.message.split('\n')[0]}`);
      out[t] = e;
    }
  }
  return out;
}

/** Judges qmesh's value against a bound; null when qmesh has no number. */
export function meets(value: number | undefined, op: '<=' | '>=', bound: number): boolean | null {
  if (value === undefined || !Number.isFinite(value)) return null;
  return op === '<=' ? value <= bound : value >= bound;
}
