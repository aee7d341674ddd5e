// A sub-millisecond wake-up for the main thread. Node's setTimeout works on a
// cached millisecond clock, so a 0.5 ms hold would come out anywhere from 0 to
// 1.5 ms. Here a worker thread sleeps in Atomics.wait (a futex with a
// nanosecond timeout) until the deadline and then posts a message, which wakes
// the main loop at once (uv_async). No thread spins; the main thread never blocks.
//
// Protocol over a SharedArrayBuffer: i32[0] is a sequence number bumped on every
// change, f64[1] the deadline (ms on the monotonic clock, 0 = none). The worker
// posts the deadline it reached and then waits for the sequence to move.
import { Worker } from 'node:worker_threads';

export const nowMs = (): number => Number(process.hrtime.bigint()) / 1e6;

const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const seq = new Int32Array(workerData, 0, 1);
const deadline = new Float64Array(workerData, 8, 1);
const now = () => Number(process.hrtime.bigint()) / 1e6;
for (;;) {
  const s = Atomics.load(seq, 0);
  if (s < 0) break;
  const due = deadline[0];
  if (due === 0) { Atomics.wait(seq, 0, s); continue; }
  const wait = due - now();
  if (wait > 0) { Atomics.wait(seq, 0, s, wait); continue; }
  parentPort.postMessage(due);
  Atomics.wait(seq, 0, s);
}
`;

export class PreciseTimer {
  readonly #shared = new SharedArrayBuffer(16);
  readonly #seq = new Int32Array(this.#shared, 0, 1);
  readonly #deadline = new Float64Array(this.#shared, 8, 1);
  readonly #worker: Worker;

  /** `onDue` runs on the main thread when the armed deadline has passed. */
  constructor(onDue: () => void) {
    this.#worker = new Worker(WORKER_SOURCE, { eval: true, workerData: this.#shared });
    this.#worker.on('message', onDue);
    this.#worker.unref();
  }

  /** Wake at deadlineMs (nowMs() clock); replaces any earlier deadline. */
  arm(deadlineMs: number): void {
    this.#deadline[0] = deadlineMs;
    this.#bump();
  }

  disarm(): void {
    this.#deadline[0] = 0;
    this.#bump();
  }

  async stop(): Promise<void> {
    Atomics.store(this.#seq, 0, -1);
    Atomics.notify(this.#seq, 0);
    await this.#worker.terminate();
  }

  #bump(): void {
    // Stays non-negative: -1 means stop.
    const next = (Atomics.load(this.#seq, 0) + 1) & 0x3fffffff;
    Atomics.store(this.#seq, 0, next);
    Atomics.notify(this.#seq, 0);
  }
}
