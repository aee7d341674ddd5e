// What `qmesh demo` prints: progress lines ("doing X ... ok (0.4 s)"), request
// results, the wire check and the latency table. Plain text for people, not
// JSON; demo.ts decides what to print when.
import type { HttpResult } from './demo-functions.js';
import type { WireReport } from './demo-wire.js';

export class DemoOutput {
  /** The step whose "label ... " line waits for its "ok", if any. */
  #open: number | undefined;
  #steps = 0;
  #muted = false;

  constructor(private readonly out: NodeJS.WritableStream = process.stdout) {}

  line(text = ''): void {
    this.#write(`${this.#closeLine()}${text}\n`);
  }

  /** From now on print nothing (a signal's cleanup is talking). Ends a half-printed line first. */
  mute(): void {
    this.#write(this.#closeLine());
    this.#muted = true;
  }

  /** Prints "label ... ", runs fn, then "ok (x.x s)" plus an optional note, or "failed". */
  async step<T>(label: string, fn: () => Promise<T>, note?: (r: T) => string): Promise<T> {
    const id = ++this.#steps;
    this.#write(`${this.#closeLine()}${label} ... `);
    this.#open = id;
    const t0 = performance.now();
    try {
      const r = await fn();
      const extra = note?.(r);
      const done = `ok (${seconds(performance.now() - t0)})${extra ? `: ${extra}` : ''}`;
      // Another line came in between: repeat the label so the "ok" still says what it is about.
      this.#write(this.#open === id ? `${done}\n` : `${this.#closeLine()}${label}: ${done}\n`);
      this.#open = undefined;
      return r;
    } catch (err) {
      if (this.#open === id) this.#write('failed\n');
      this.#open = undefined;
      throw err;
    }
  }

  #closeLine(): string {
    const open = this.#open !== undefined;
    this.#open = undefined;
    return open ? '\n' : '';
  }

  #write(text: string): void {
    if (!this.#muted && text) this.out.write(text);
  }
}

export const seconds = (ms: number): string => `${(ms / 1000).toFixed(1)} s`;
const millis = (ms: number): string => `${ms < 10 ? ms.toFixed(2) : ms.toFixed(1)} ms`;

/** One request: "  fn-1-1 (host-1) -> GET http://… -> 200 "hello from …" (answered by …, 1.2 ms)". */
export function requestLine(from: string, r: HttpResult): string {
  if (r.error !== undefined) return `  ${from} -> GET ${r.url} -> FAILED: ${r.error}`;
  const snippet = (r.body ?? '').trim().slice(0, 60);
  return `  ${from} -> GET ${r.url} -> ${r.status} "${snippet}" (answered by ${r.servedBy || '?'}, ${millis(r.ms)})`;
}

/**
 * "  with qmesh: underlay packets: 12, all UDP port 4433: yes; plaintext marker seen on the wire: no".
 * ARP, IGMP and IPv6 neighbour discovery carry no application data and are counted apart;
 * with qmesh, anything else is listed.
 */
export function wireLines(label: string, w: WireReport, mode: 'quic' | 'plain', quicPort: number, plainPort: number): string[] {
  const traffic = w.packets - w.link;
  const link = w.link > 0 ? ` (plus ${w.link} ARP/IGMP/IPv6-ND frame${w.link === 1 ? '' : 's'}, no application data)` : '';
  const allQuic = traffic > 0 && w.quic === traffic;
  const kind = mode === 'quic' ? `all UDP port ${quicPort}: ${allQuic ? 'yes' : 'no'}` : `TCP port ${plainPort} in the clear: ${w.plainTcp}`;
  const lines = [`  ${label}: underlay packets: ${traffic}${link}, ${kind}; plaintext marker seen on the wire: ${w.markerSeen ? 'yes' : 'no'}`];
  if (mode === 'quic' && w.otherCount > 0) {
    lines.push(`    ${w.otherCount} packet(s) neither UDP ${quicPort} nor ARP/IGMP/IPv6-ND, e.g.:`);
    for (const l of w.other) lines.push(`      ${l}`);
  }
  return lines;
}

export interface LatencyStats {
  n: number;
  p50: number;
  p99: number;
  min: number;
}

/** Nearest-rank percentiles. */
export function latencyStats(samples: readonly number[]): LatencyStats {
  const sorted = [...samples].sort((a, b) => a - b);
  const at = (p: number): number => sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))] ?? NaN;
  return { n: sorted.length, p50: at(50), p99: at(99), min: sorted[0] ?? NaN };
}

export function latencyTable(plain: LatencyStats, qmesh: LatencyStats): string[] {
  const col = (s: string): string => s.padStart(10);
  const row = (label: string, s: LatencyStats): string => `  ${label.padEnd(15)}${col(millis(s.p50))}${col(millis(s.p99))}${col(millis(s.min))}`;
  const ratio = (a: number, b: number): string => col(`${(a / b).toFixed(1)}x`);
  return [
    `  ${''.padEnd(15)}${col('p50')}${col('p99')}${col('min')}`,
    row('plain TCP', plain),
    row('through qmesh', qmesh),
    `  ${'qmesh / plain'.padEnd(15)}${ratio(qmesh.p50, plain.p50)}${ratio(qmesh.p99, plain.p99)}${ratio(qmesh.min, plain.min)}`,
  ];
}

/**
 * What the table means, computed from it. No link delay here, so the difference
 * is qmesh's processing; with a round trip of R between hosts plain TCP needs
 * 2R for connect + request, qmesh R (a stream on an open tunnel): qmesh is ahead
 * once R exceeds the processing it adds.
 */
export function latencyNotes(plain: LatencyStats, qmesh: LatencyStats): string[] {
  const added = qmesh.p50 - plain.p50;
  const ms = (v: number): string => v.toFixed(2);
  const breakEven =
    added > 0
      ? `so qmesh comes out ahead once R exceeds about ${ms(added)} ms`
      : 'so qmesh comes out ahead at any R';
  return [
    '  plain TCP was measured first, before the daemons started (no capture rule in its way);',
    '  qmesh with both daemons running and their tunnels already open.',
    '  This machine emulates no link delay (the hosts are namespaces joined by a bridge; a round trip costs',
    `  microseconds), so the table shows only the processing qmesh adds: ${ms(added)} ms per new connection at p50`,
    '  (capture, two user-space hops, encryption). What qmesh saves is round trips: a new plain TCP',
    '  connection plus a request needs 2 between hosts, qmesh 1 (a new stream in a tunnel already open).',
    `  With R ms per round trip, plain takes about 2R + ${ms(plain.p50)} ms and qmesh R + ${ms(qmesh.p50)} ms on this machine,`,
    `  ${breakEven}; and plain TCP is not encrypted at all.`,
    '  bench/ measures this with emulated link delay.',
  ];
}
