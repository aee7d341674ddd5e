// The pure heart of the link emulator: a FIFO of held packets, each released
// `holdMs` after it arrived, and the loss decision. A constant hold keeps
// arrival order, so the head is always the next packet due. link-emulator.ts
// feeds it from NFQUEUE and releases what it returns; no I/O here.

export interface LinkSettings {
  /** How long each packet is held before its ACCEPT verdict (one direction, one host's egress). */
  readonly holdMs: number;
  /** Fraction 0..1 of packets dropped (NF_DROP) instead of held. */
  readonly lossRate: number;
}

export interface Held<T> {
  readonly item: T;
  readonly arrivedMs: number;
  readonly dueMs: number;
}

export function validateSettings(s: Partial<LinkSettings>): LinkSettings {
  const holdMs = s.holdMs ?? 0;
  const lossRate = s.lossRate ?? 0;
  if (!(holdMs >= 0 && holdMs <= 10_000)) throw new RangeError(`holdMs must be within 0..10000 (got ${holdMs})`);
  if (!(lossRate >= 0 && lossRate < 1)) throw new RangeError(`lossRate must be within 0..1 (got ${lossRate})`);
  return { holdMs, lossRate };
}

export class DelayLine<T> {
  #queue: Held<T>[] = [];
  #head = 0;
  #settings: LinkSettings = { holdMs: 0, lossRate: 0 };

  constructor(private readonly random: () => number = Math.random) {}

  get settings(): LinkSettings {
    return this.#settings;
  }

  /** New settings apply to packets arriving from now on; packets already held keep their due time. */
  set(s: Partial<LinkSettings>): void {
    this.#settings = validateSettings({ ...this.#settings, ...s });
  }

  get length(): number {
    return this.#queue.length - this.#head;
  }

  /** Due time of the next packet to release, or undefined when nothing is held. */
  get nextDueMs(): number | undefined {
    return this.#queue[this.#head]?.dueMs;
  }

  /**
   * A packet arrived at nowMs: 'drop' (loss), or 'held' (queued for release).
   * With a zero hold and an empty queue the caller may release at once ('pass'),
   * which keeps d = 0 free of timer wake-ups.
   */
  arrive(item: T, nowMs: number): 'drop' | 'held' | 'pass' {
    const { holdMs, lossRate } = this.#settings;
    if (lossRate > 0 && this.random() < lossRate) return 'drop';
    if (holdMs === 0 && this.length === 0) return 'pass';
    // Never earlier than the packet ahead: a lowered hold must not reorder.
    const prev = this.#queue[this.#queue.length - 1];
    const dueMs = Math.max(nowMs + holdMs, this.length > 0 && prev ? prev.dueMs : -Infinity);
    this.#queue.push({ item, arrivedMs: nowMs, dueMs });
    return 'held';
  }

  /** Removes and returns every held packet due at or before nowMs, in arrival order. */
  takeDue(nowMs: number): Held<T>[] {
    const out: Held<T>[] = [];
    while (this.#head < this.#queue.length && this.#queue[this.#head]!.dueMs <= nowMs) {
      out.push(this.#queue[this.#head]!);
      this.#head++;
    }
    // Compact now and then so the array does not grow without bound.
    if (this.#head > 1024 && this.#head * 2 > this.#queue.length) {
      this.#queue = this.#queue.slice(this.#head);
      this.#head = 0;
    }
    return out;
  }

  /** Empties the line, returning what was held (the caller releases it). */
  takeAll(): Held<T>[] {
    const out = this.#queue.slice(this.#head);
    this.#queue = [];
    this.#head = 0;
    return out;
  }
}
