// `node dist/bench/quiche-cost.js [--megabytes N]`: what one call into the quiche
// binding (@matrixai/quic's native.quiche) costs, with no sockets, no kernel and no
// other process: a client and a server connection in this one thread, a bulk stream
// from one to the other, every packet handed straight across. It times conn.send()
// and conn.recv() per packet at the 1500- and 9000-MTU datagram sizes and records
// the garbage collector's pauses (PerformanceObserver), so the bench's S6 and S4
// figures can be set against what the binding alone allows. Last, it sends N packets,
// forces a full GC and times the native work that follows (the finalizers of the
// objects the binding returned, which only a full GC releases). Needs no root.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { PerformanceObserver } from 'node:perf_hooks';
import v8 from 'node:v8';
import vm from 'node:vm';
import { Command } from 'commander';
import { CLIENT, SERVER, connectedPair, credentials, pump, type Configs, type Pair, type Timing } from './lib/quiche-pair.js';

interface SizeResult {
  datagramBytes: number;
  megabytes: number;
  packets: number;
  mbPerSecond: number;
  sendMicros: number;
  recvMicros: number;
  gcPauses: number;
  gcTotalMs: number;
  gcMaxMs: number;
}

/** Streams data from client to server until `until` says enough (ACKs come back untimed). */
function transfer(c: Pair, until: (received: number, packets: number) => boolean, timing: Timing | null): { received: number; packets: number } {
  const chunk = Buffer.alloc(1 << 20, 0x61);
  const sink = Buffer.alloc(1 << 16);
  let received = 0;
  let packets = 0;
  while (!until(received, packets)) {
    c.client.streamSend(0, chunk, false);
    packets += pump(c.client, c.server, CLIENT, SERVER, c.out, timing);
    for (let r = c.server.streamRecv(0, sink); r !== null; r = c.server.streamRecv(0, sink)) received += r[0];
    pump(c.server, c.client, SERVER, CLIENT, c.out, null);
  }
  return { received, packets };
}

async function measure(configs: Configs, datagramBytes: number, megabytes: number): Promise<SizeResult> {
  const pair = connectedPair(configs);

  const pauses: number[] = [];
  const obs = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) pauses.push(e.duration);
  });
  obs.observe({ entryTypes: ['gc'] });
  const timing: Timing = { send: 0, recv: 0 };
  const target = megabytes * 1_000_000;
  const t0 = performance.now();
  const { received, packets } = transfer(pair, (bytes) => bytes >= target, timing);
  const ms = performance.now() - t0;
  await new Promise((r) => setTimeout(r, 200)); // gc entries arrive on a later turn
  obs.disconnect();
  return {
    datagramBytes,
    megabytes: received / 1e6,
    packets,
    mbPerSecond: received / 1000 / ms,
    sendMicros: (1000 * timing.send) / packets,
    recvMicros: (1000 * timing.recv) / packets,
    gcPauses: pauses.length,
    gcTotalMs: pauses.reduce((a, b) => a + b, 0),
    gcMaxMs: pauses.reduce((a, b) => Math.max(a, b), 0),
  };
}

interface FinalizerResult {
  packets: number;
  fullGcMs: number;
  afterGcMs: number;
}

const nextTurn = (): Promise<void> => new Promise((r) => setImmediate(r));

/** A forced full GC: how long it takes, and the native work Node runs after it (N-API finalizers, from its immediate queue). */
async function timeFullGc(gc: () => void): Promise<{ fullGcMs: number; afterGcMs: number }> {
  const t0 = performance.now();
  gc();
  const t1 = performance.now();
  await nextTurn();
  await nextTurn();
  return { fullGcMs: t1 - t0, afterGcMs: performance.now() - t1 };
}

/** N packets, then a forced full GC: how long the GC takes, and the native work queued behind it. */
async function finalizerBatch(configs: Configs, packets: number, gc: () => void): Promise<FinalizerResult> {
  const pair = connectedPair(configs);
  await timeFullGc(gc);
  const sent = transfer(pair, (_b, n) => n >= packets, null).packets;
  return { packets: sent, ...(await timeFullGc(gc)) };
}

interface CallCost {
  call: string;
  micros: number;
  afterGcMs: number;
}

/** 100,000 calls of a per-turn query: its cost, and the native work a full GC leaves behind it. */
async function callCosts(configs: Configs, gc: () => void): Promise<CallCost[]> {
  const { server } = connectedPair(configs);
  const calls = 100_000;
  const cases: Array<[string, () => void]> = [
    ['isReadable()', () => server.isReadable()],
    ['streamReadable(id)', () => server.streamReadable(0)],
    ['readable(), iterated', () => {
      for (const id of server.readable()) void id;
    }],
  ];
  const out: CallCost[] = [];
  for (const [call, fn] of cases) {
    await timeFullGc(gc);
    const t0 = performance.now();
    for (let i = 0; i < calls; i++) fn();
    const micros = (1000 * (performance.now() - t0)) / calls;
    out.push({ call, micros, afterGcMs: (await timeFullGc(gc)).afterGcMs });
  }
  return out;
}

async function main(): Promise<void> {
  const opts = new Command('quiche-cost')
    .description('Per-call cost of the quiche binding: send/recv per packet at 1350 and 8952 bytes, one thread, no I/O.')
    .option('--megabytes <n>', 'stream bytes per datagram size', '400')
    .parse(process.argv)
    .opts<{ megabytes: string }>();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qmesh-quiche-cost-'));
  try {
    const configFor = await credentials(dir);
    const results: SizeResult[] = [];
    for (const size of [1350, 8952]) results.push(await measure(configFor(size), size, Number(opts.megabytes)));
    console.log(`quiche binding cost, one thread, no I/O; ${os.cpus().length} cores (${os.cpus()[0]?.model ?? '?'}), Node ${process.version}`);
    console.log('datagram  MB     packets   MB/s   send us/pkt  recv us/pkt  GC pauses  GC total ms  GC max ms');
    for (const r of results) {
      console.log(
        [String(r.datagramBytes).padEnd(8), r.megabytes.toFixed(0).padEnd(6), String(r.packets).padEnd(9), r.mbPerSecond.toFixed(0).padEnd(6), r.sendMicros.toFixed(2).padEnd(12), r.recvMicros.toFixed(2).padEnd(12), String(r.gcPauses).padEnd(10), r.gcTotalMs.toFixed(0).padEnd(12), r.gcMaxMs.toFixed(1)].join(' '),
      );
    }
    v8.setFlagsFromString('--expose-gc');
    const gc = vm.runInNewContext('gc') as () => void;
    const batches: FinalizerResult[] = [];
    for (const n of [10_000, 40_000, 160_000]) batches.push(await finalizerBatch(configFor(1350), n, gc));
    console.log('packets sent  full GC ms  native work after it, ms');
    for (const b of batches) console.log([String(b.packets).padEnd(13), b.fullGcMs.toFixed(1).padEnd(11), b.afterGcMs.toFixed(1)].join(' '));
    const queries = await callCosts(configFor(1350), gc);
    console.log('query (100,000 calls)   us/call  native work after a full GC, ms');
    for (const q of queries) console.log([q.call.padEnd(23), q.micros.toFixed(2).padEnd(8), q.afterGcMs.toFixed(1)].join(' '));
    console.log(JSON.stringify({ sizes: results, finalizers: batches, queries }));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
