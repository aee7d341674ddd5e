// A connection flood: `count` connections to an echo server, at most `concurrency`
// connecting at once, each sending one byte and holding once it is echoed; plus
// `halfOpen` connections that connect and never send (a slow client). Prints
// {"event":"held",...} once every attempt has settled, holds `holdMs`, closes
// everything and prints {"event":"result",...}.
//   node tcp-flood.mjs '{"ip":..,"port":..,"count":..,"halfOpen":..,"concurrency":..,"holdMs":..}'
import net from 'node:net';

const spec = JSON.parse(process.argv[2]);
const emit = (o) => process.stdout.write(JSON.stringify(o) + '\n');
const open = [];
const outcomes = {};
const tally = (k) => (outcomes[k] = (outcomes[k] ?? 0) + 1);

function attempt(silent) {
  return new Promise((resolve) => {
    const s = net.connect(spec.port, spec.ip);
    let settled = false;
    const settle = (k) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      tally(k);
      resolve();
    };
    const timer = setTimeout(() => settle(silent ? 'halfOpenHeld' : 'TIMEOUT'), silent ? 2_000 : 15_000);
    s.on('connect', () => {
      open.push(s);
      if (!silent) s.write('x');
    });
    s.on('data', () => settle('echoed'));
    s.on('error', (e) => settle(e.code ?? 'error'));
    s.on('close', () => settle('closed'));
  });
}

async function run(n, silent) {
  let next = 0;
  const worker = async () => {
    while (next < n) {
      next++;
      await attempt(silent);
    }
  };
  await Promise.all(Array.from({ length: Math.min(spec.concurrency ?? 200, n) }, worker));
}

const t0 = Date.now();
const progress = setInterval(() => emit({ event: 'progress', outcomes, connected: open.length, ms: Date.now() - t0 }), 2000);
await run(spec.halfOpen ?? 0, true);
await run(spec.count, false);
clearInterval(progress);
const alive = open.filter((s) => !s.destroyed).length;
emit({ event: 'held', outcomes, alive, ms: Date.now() - t0 });
await new Promise((r) => setTimeout(r, spec.holdMs ?? 3000));
for (const s of open) s.destroy();
emit({ event: 'result', outcomes, alive });
setTimeout(() => process.exit(0), 200);
