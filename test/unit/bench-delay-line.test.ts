// bench/emulator/delay-line.ts: the link emulator's hold queue and loss decision,
// with a scripted clock and random source.
import { describe, expect, it } from 'vitest';
import { DelayLine, validateSettings } from '../../bench/emulator/delay-line.js';

describe('DelayLine', () => {
  it('passes packets straight through with no hold and nothing queued', () => {
    const line = new DelayLine<string>(() => 0.5);
    expect(line.arrive('a', 100)).toBe('pass');
    expect(line.length).toBe(0);
  });

  it('holds each packet holdMs after its arrival and releases in order', () => {
    const line = new DelayLine<string>(() => 0.5);
    line.set({ holdMs: 2.5 });
    expect(line.arrive('a', 10)).toBe('held');
    expect(line.arrive('b', 10.4)).toBe('held');
    expect(line.nextDueMs).toBe(12.5);
    expect(line.takeDue(12.4)).toEqual([]);
    expect(line.takeDue(12.5).map((h) => h.item)).toEqual(['a']);
    const [b] = line.takeDue(20);
    expect(b).toMatchObject({ item: 'b', arrivedMs: 10.4, dueMs: 12.9 });
    expect(line.length).toBe(0);
    expect(line.nextDueMs).toBeUndefined();
  });

  it('never reorders when the hold is lowered while packets are queued', () => {
    const line = new DelayLine<string>(() => 0.5);
    line.set({ holdMs: 10 });
    line.arrive('slow', 0);
    line.set({ holdMs: 0 });
    // Not 'pass': something is still queued ahead of it.
    expect(line.arrive('fast', 1)).toBe('held');
    expect(line.takeDue(5)).toEqual([]);
    expect(line.takeDue(10).map((h) => h.item)).toEqual(['slow', 'fast']);
  });

  it('drops exactly when the random draw falls below lossRate', () => {
    const draws = [0.005, 0.02, 0.0099, 0.5];
    const line = new DelayLine<number>(() => draws.shift()!);
    line.set({ lossRate: 0.01 });
    expect([1, 2, 3, 4].map((i) => line.arrive(i, 0))).toEqual(['drop', 'pass', 'drop', 'pass']);
  });

  it('never calls the random source when there is no loss', () => {
    const line = new DelayLine<number>(() => {
      throw new Error('random called');
    });
    line.set({ holdMs: 1 });
    expect(line.arrive(1, 0)).toBe('held');
  });

  it('takeAll empties the line', () => {
    const line = new DelayLine<number>();
    line.set({ holdMs: 5 });
    for (let i = 0; i < 3; i++) line.arrive(i, i);
    expect(line.takeAll().map((h) => h.item)).toEqual([0, 1, 2]);
    expect(line.length).toBe(0);
  });

  it('keeps working across many packets (internal compaction)', () => {
    const line = new DelayLine<number>();
    line.set({ holdMs: 1 });
    let released = 0;
    for (let i = 0; i < 5000; i++) {
      line.arrive(i, i);
      const out = line.takeDue(i);
      for (const h of out) expect(h.item).toBe(released++);
    }
    expect(released).toBe(4999);
    expect(line.length).toBe(1);
  });
});

describe('validateSettings', () => {
  it('defaults to no hold and no loss and refuses out-of-range values', () => {
    expect(validateSettings({})).toEqual({ holdMs: 0, lossRate: 0 });
    expect(() => validateSettings({ holdMs: -1 })).toThrow(RangeError);
    expect(() => validateSettings({ lossRate: 1 })).toThrow(RangeError);
    expect(() => validateSettings({ holdMs: NaN })).toThrow(RangeError);
  });
});
