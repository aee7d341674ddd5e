// bench/lib/stats.ts: percentiles, summaries, the least-squares slope that turns
// latency over added round-trip time into round trips, and ratios.
import { describe, expect, it } from 'vitest';
import { bootstrapRoundTrips, fitLine, mbPerSec, median, percentileSorted, ratio, roundTrips, seededRandom, summarize } from '../../bench/lib/stats.js';

describe('percentileSorted', () => {
  it('interpolates linearly between closest ranks (numpy "linear")', () => {
    expect(percentileSorted([1, 2, 3, 4], 50)).toBe(2.5);
    expect(percentileSorted([1, 2, 3, 4], 0)).toBe(1);
    expect(percentileSorted([1, 2, 3, 4], 100)).toBe(4);
    // rank 0.99 * 99 = 98.01 between the 99th and 100th of 1..100
    const hundred = Array.from({ length: 100 }, (_, i) => i + 1);
    expect(percentileSorted(hundred, 99)).toBeCloseTo(99.01, 10);
  });

  it('is NaN for no samples and refuses percentiles outside 0..100', () => {
    expect(percentileSorted([], 50)).toBeNaN();
    expect(() => percentileSorted([1], 101)).toThrow(RangeError);
    expect(() => percentileSorted([1], -1)).toThrow(RangeError);
  });
});

describe('summarize', () => {
  it('sorts a copy and reports n, min, p50, p90, p99, max, mean', () => {
    const samples = [5, 1, 4, 2, 3];
    const s = summarize(samples);
    expect(s).toEqual({ n: 5, min: 1, p50: 3, p90: 4.6, p99: 4.96, max: 5, mean: 3 });
    expect(samples).toEqual([5, 1, 4, 2, 3]); // input untouched
  });

  it('gives a single sample as every percentile', () => {
    expect(summarize([0.32])).toMatchObject({ n: 1, min: 0.32, p50: 0.32, p99: 0.32, max: 0.32 });
  });

  it('returns NaNs with n = 0 for no samples', () => {
    const s = summarize([]);
    expect(s.n).toBe(0);
    expect(s.p50).toBeNaN();
  });

  it('refuses a NaN or infinite sample (a broken measurement must not hide in a median)', () => {
    expect(() => summarize([1, NaN])).toThrow(/finite/);
    expect(() => summarize([Infinity])).toThrow(/finite/);
  });

  it('median of an even count is the mean of the middle two', () => {
    expect(median([10, 1, 3, 7])).toBe(5);
  });
});

describe('fitLine', () => {
  it('recovers an exact line', () => {
    const f = fitLine([0, 1, 2, 5, 10], [0.3, 2.3, 4.3, 10.3, 20.3]);
    expect(f.slope).toBeCloseTo(2, 12);
    expect(f.intercept).toBeCloseTo(0.3, 12);
    expect(f.r2).toBeCloseTo(1, 12);
    expect(f.points).toBe(5);
  });

  it('gives the least-squares slope and r2 < 1 for noisy points', () => {
    const xs = [0, 1, 2, 3];
    const ys = [1, 0, 3, 2];
    // mean x 1.5, mean y 1.5; sxy = (-1.5)(-0.5)+(-0.5)(-1.5)+(0.5)(1.5)+(1.5)(0.5) = 3; sxx = 5
    const f = fitLine(xs, ys);
    expect(f.slope).toBeCloseTo(0.6, 12);
    expect(f.intercept).toBeCloseTo(0.6, 12);
    expect(f.r2).toBeCloseTo((3 * 3) / (5 * 5), 12);
  });

  it('refuses mismatched, too few, or identical x values', () => {
    expect(() => fitLine([1, 2], [1])).toThrow(RangeError);
    expect(() => fitLine([1], [1])).toThrow(/two points/);
    expect(() => fitLine([2, 2, 2], [1, 2, 3])).toThrow(/distinct/);
  });
});

describe('roundTrips', () => {
  it('is the slope of the per-delay medians over the added round-trip time', () => {
    // Plain TCP: connect + echo = 2 round trips, so latency grows 2 ms per ms of d.
    const byDelay = [0, 1, 2, 5, 10].map((d) => ({ rttAddedMs: d, samples: [0.3 + 2 * d, 0.31 + 2 * d, 9 + 2 * d /* one stall */] }));
    const f = roundTrips(byDelay);
    expect(f.slope).toBeCloseTo(2, 10);
    expect(f.intercept).toBeCloseTo(0.31, 10); // the median ignores the stalled sample
  });

  it('skips delays without samples', () => {
    const f = roundTrips([
      { rttAddedMs: 0, samples: [1] },
      { rttAddedMs: 5, samples: [] },
      { rttAddedMs: 10, samples: [11] },
    ]);
    expect(f.points).toBe(2);
    expect(f.slope).toBeCloseTo(1, 12);
  });
});

describe('ratio and mbPerSec', () => {
  it('divides, and is NaN when either side is missing or the divisor is zero', () => {
    expect(ratio(1, 4)).toBe(0.25);
    expect(ratio(undefined, 4)).toBeNaN();
    expect(ratio(1, 0)).toBeNaN();
    expect(ratio(NaN, 1)).toBeNaN();
  });

  it('uses 10^6 bytes per MB', () => {
    expect(mbPerSec(125_000_000, 1000)).toBe(125);
    expect(mbPerSec(1, 0)).toBeNaN();
  });
});

describe('bootstrapRoundTrips', () => {
  it('collapses to the slope itself when every sample at a delay is the same', () => {
    const byDelay = [0, 1, 2, 5, 10].map((d) => ({ rttAddedMs: d, samples: Array(20).fill(0.3 + 1 * d) }));
    const ci = bootstrapRoundTrips(byDelay);
    expect(ci.lo).toBeCloseTo(1, 12);
    expect(ci.hi).toBeCloseTo(1, 12);
  });

  it('brackets the true slope of noisy samples, and is reproducible for a seed', () => {
    const rnd = seededRandom(42);
    const byDelay = [0, 1, 2, 5, 10].map((d) => ({ rttAddedMs: d, samples: Array.from({ length: 60 }, () => 0.5 + 2 * d + rnd() * 1.0) }));
    const a = bootstrapRoundTrips(byDelay, { seed: 7 });
    const b = bootstrapRoundTrips(byDelay, { seed: 7 });
    expect(a).toEqual(b);
    expect(a.lo).toBeLessThan(2.05);
    expect(a.hi).toBeGreaterThan(1.95);
    expect(a.hi - a.lo).toBeLessThan(0.2);
    expect(a.lo).toBeLessThanOrEqual(a.hi);
  });
});

describe('seededRandom', () => {
  it('gives the same sequence in [0, 1) for the same seed', () => {
    const a = seededRandom(1);
    const b = seededRandom(1);
    const xs = Array.from({ length: 1000 }, () => a());
    expect(xs).toEqual(Array.from({ length: 1000 }, () => b()));
    expect(Math.min(...xs)).toBeGreaterThanOrEqual(0);
    expect(Math.max(...xs)).toBeLessThan(1);
    expect(seededRandom(2)()).not.toBe(xs[0]);
  });
});
