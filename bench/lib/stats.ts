// Pure statistics for the bench: summaries of latency samples (exact
// percentiles from the raw samples, no histogram rounding), least-squares
// slope for round trips over added delay, and ratios. report.ts formats them.

/** What every figure in the report is made of. Times in ms unless a field says otherwise. */
export interface Summary {
  readonly n: number;
  readonly min: number;
  readonly p50: number;
  readonly p90: number;
  readonly p99: number;
  readonly max: number;
  readonly mean: number;
}

export const EMPTY_SUMMARY: Summary = Object.freeze({ n: 0, min: NaN, p50: NaN, p90: NaN, p99: NaN, max: NaN, mean: NaN });

/**
 * Percentile q (0..100) of ascending `sorted`, by linear interpolation between
 * closest ranks (the method numpy calls "linear"): p50 of [1,2,3,4] is 2.5.
 */
export function percentileSorted(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return NaN;
  if (!(q >= 0 && q <= 100)) throw new RangeError(`percentile must be within 0..100 (got ${q})`);
  const rank = (q / 100) * (sorted.length - 1);
  const lo = Math.floor(rank);
  const hi = Math.ceil(rank);
  const a = sorted[lo]!;
  const b = sorted[hi]!;
  return a + (b - a) * (rank - lo);
}

/** Summary of samples; NaN and infinite values are refused (they mean a broken measurement). */
export function summarize(samples: readonly number[]): Summary {
  if (samples.length === 0) return EMPTY_SUMMARY;
  for (const s of samples) {
    if (!Number.isFinite(s)) throw new RangeError(`sample ${s} is not a finite number`);
  }
  const sorted = [...samples].sort((a, b) => a - b);
  let sum = 0;
  for (const s of sorted) sum += s;
  return {
    n: sorted.length,
    min: sorted[0]!,
    p50: percentileSorted(sorted, 50),
    p90: percentileSorted(sorted, 90),
    p99: percentileSorted(sorted, 99),
    max: sorted[sorted.length - 1]!,
    mean: sum / sorted.length,
  };
}

export function median(samples: readonly number[]): number {
  return summarize(samples).p50;
}

export interface LinearFit {
  /** Change of y per unit of x (ms of latency per ms of added round-trip time = round trips). */
  readonly slope: number;
  readonly intercept: number;
  /** Coefficient of determination; 1 means the points lie on the line. */
  readonly r2: number;
  readonly points: number;
}

/** Ordinary least squares y = slope*x + intercept. Needs two distinct x values. */
export function fitLine(xs: readonly number[], ys: readonly number[]): LinearFit {
  if (xs.length !== ys.length) throw new RangeError(`fitLine: ${xs.length} x values but ${ys.length} y values`);
  const n = xs.length;
  if (n < 2) throw new RangeError('fitLine needs at least two points');
  let mx = 0;
  let my = 0;
  for (let i = 0; i < n; i++) {
    mx += xs[i]!;
    my += ys[i]!;
  }
  mx /= n;
  my /= n;
  let sxx = 0;
  let sxy = 0;
  let syy = 0;
  for (let i = 0; i < n; i++) {
    const dx = xs[i]! - mx;
    const dy = ys[i]! - my;
    sxx += dx * dx;
    sxy += dx * dy;
    syy += dy * dy;
  }
  if (sxx === 0) throw new RangeError('fitLine needs at least two distinct x values');
  const slope = sxy / sxx;
  const intercept = my - slope * mx;
  const r2 = syy === 0 ? 1 : (sxy * sxy) / (sxx * syy);
  return { slope, intercept, r2, points: n };
}

/**
 * Round trips on the critical path from per-delay samples. `rttAddedMs` is the
 * round-trip time the emulator adds (d); latency grows by k*d for k round trips,
 * so the slope of the per-d medians over d is k. Medians, not means: one stalled
 * sample must not tilt the line.
 */
export function roundTrips(byDelay: ReadonlyArray<{ rttAddedMs: number; samples: readonly number[] }>): LinearFit {
  const pts = byDelay.filter((p) => p.samples.length > 0);
  return fitLine(
    pts.map((p) => p.rttAddedMs),
    pts.map((p) => median(p.samples)),
  );
}

/** a / b, or NaN when either is missing or b is zero (printed as "-"). */
export function ratio(a: number | undefined, b: number | undefined): number {
  if (a === undefined || b === undefined || !Number.isFinite(a) || !Number.isFinite(b) || b === 0) return NaN;
  return a / b;
}

/** Bytes per second as MB/s (10^6 bytes, as iperf3 and the targets use). */
export function mbPerSec(bytes: number, ms: number): number {
  return ms > 0 ? bytes / 1e6 / (ms / 1000) : NaN;
}

/** Small seeded PRNG (mulberry32): bootstrap intervals come out the same for the same samples. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * Percentile bootstrap interval of roundTrips(): each resample draws every
 * delay's samples with replacement (same count), takes the medians and fits the
 * slope again; the interval holds the central `level` of those slopes. It says
 * how far sampling noise alone could move the round-trip count.
 */
export function bootstrapRoundTrips(
  byDelay: ReadonlyArray<{ rttAddedMs: number; samples: readonly number[] }>,
  opts: { resamples?: number; level?: number; seed?: number } = {},
): { lo: number; hi: number } {
  const resamples = opts.resamples ?? 400;
  const level = opts.level ?? 0.9;
  const random = seededRandom(opts.seed ?? 1);
  const pts = byDelay.filter((p) => p.samples.length > 0);
  const slopes: number[] = [];
  for (let r = 0; r < resamples; r++) {
    const drawn = pts.map((p) => ({
      rttAddedMs: p.rttAddedMs,
      samples: p.samples.map(() => p.samples[Math.floor(random() * p.samples.length)]!),
    }));
    slopes.push(roundTrips(drawn).slope);
  }
  slopes.sort((a, b) => a - b);
  const tail = ((1 - level) / 2) * 100;
  return { lo: percentileSorted(slopes, tail), hi: percentileSorted(slopes, 100 - tail) };
}
