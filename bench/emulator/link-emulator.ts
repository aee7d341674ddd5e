// One host's egress link emulator, run inside that host's namespace. The kernel
// hands it every packet leaving eth0 (an iptables mangle POSTROUTING NFQUEUE
// rule that emulator-control.ts installs); it drops a fraction of them and
// holds the rest for holdMs before the ACCEPT verdict. Commands on stdin
// (line-protocol.ts): set {holdMs, lossRate}, stats {reset}.
// Usage: node link-emulator.js <queue-num>
import nfq, { type NFQueuePacket } from 'nfqueue';
import { summarize } from '../lib/stats.js';
import { serveCommands } from '../lib/line-protocol.js';
import { DelayLine } from './delay-line.js';
import { nowMs, PreciseTimer } from './precise-timer.js';

/** Netlink receive buffer: a burst of ~5,000 full-size packets queued while JS is busy. */
const NETLINK_BUFFER_BYTES = 8 * 1024 * 1024;
/** Packets due within this much of now leave in the same batch. */
const BATCH_TOLERANCE_MS = 0.02;
/** Wake-up latency compensation is learnt (EWMA) but never more than this. */
const MAX_LEAD_MS = 0.3;
/** How many recent hold errors the stats command summarises. */
const ERROR_SAMPLES = 20_000;

const queueNum = Number(process.argv[2] ?? '7');
if (!Number.isInteger(queueNum) || queueNum < 0 || queueNum > 65535) {
  process.stderr.write(`usage: link-emulator.js <queue-num 0..65535>\n`);
  process.exit(2);
}

type Packet = NFQueuePacket;
const line = new DelayLine<Packet>();
const counters = { packets: 0, dropped: 0, passed: 0, held: 0 };
let holdErrors: number[] = [];
let leadMs = 0.05;
let armedForMs = 0;

const timer = new PreciseTimer(onDue);

function release(now: number): void {
  const due = line.takeDue(now + BATCH_TOLERANCE_MS);
  const hold = line.settings.holdMs;
  for (const h of due) {
    h.item.setVerdict(nfq.NF_ACCEPT);
    if (holdErrors.length < ERROR_SAMPLES) holdErrors.push(now - h.arrivedMs - hold);
  }
  const next = line.nextDueMs;
  if (next === undefined) {
    armedForMs = 0;
    timer.disarm();
  } else {
    armedForMs = next - leadMs;
    timer.arm(armedForMs);
  }
}

function onDue(): void {
  const now = nowMs();
  if (armedForMs > 0) {
    const late = now - armedForMs;
    leadMs = Math.min(MAX_LEAD_MS, Math.max(0, leadMs * 0.9 + (leadMs + late) * 0.1));
  }
  release(now);
}

nfq.createQueueHandler(queueNum, NETLINK_BUFFER_BYTES, (pkt) => {
  counters.packets++;
  const now = nowMs();
  const wasEmpty = line.length === 0;
  switch (line.arrive(pkt, now)) {
    case 'drop':
      counters.dropped++;
      pkt.setVerdict(nfq.NF_DROP);
      return;
    case 'pass':
      counters.passed++;
      pkt.setVerdict(nfq.NF_ACCEPT);
      return;
    case 'held':
      counters.held++;
      if (wasEmpty) {
        armedForMs = line.nextDueMs! - leadMs;
        timer.arm(armedForMs);
      }
  }
});

serveCommands(
  {
    set: (a) => {
      line.set({ holdMs: Number(a.holdMs ?? 0), lossRate: Number(a.lossRate ?? 0) });
      return line.settings;
    },
    stats: (a) => {
      const out = { ...counters, settings: line.settings, leadMs, holdErrorMs: summarize(holdErrors), queued: line.length };
      if (a.reset) {
        counters.packets = counters.dropped = counters.passed = counters.held = 0;
        holdErrors = [];
      }
      return out;
    },
  },
  () => {
    // Release whatever is held so no connection is left waiting, then go.
    for (const h of line.takeAll()) h.item.setVerdict(nfq.NF_ACCEPT);
    void timer.stop().finally(() => process.exit(0));
  },
);
