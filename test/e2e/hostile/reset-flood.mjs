// A stream flood through the tunnel: `count` captured connections to an echo
// server, `concurrency` at a time. Each writes a byte and is reset (RST) once the
// echo is back, so the stream surely reached the peer and its delivery connected;
// every other one is reset right after the write instead (it may or may not have
// left this host yet).
//   node reset-flood.mjs '{"ip":..,"port":..,"count":..,"concurrency":..}'
import net from 'node:net';

const spec = JSON.parse(process.argv[2]);
const outcomes = {};
const tally = (k) => (outcomes[k] = (outcomes[k] ?? 0) + 1);

function one(i) {
  return new Promise((resolve) => {
    const s = net.connect(spec.port, spec.ip);
    const timer = setTimeout(() => {
      tally('TIMEOUT');
      s.destroy();
      resolve();
    }, 10_000);
    s.on('error', () => {});
    const reset = (k) => {
      clearTimeout(timer);
      s.resetAndDestroy();
      tally(k);
      resolve();
    };
    s.on('connect', () => {
      s.write('x');
      if (i % 2) setImmediate(() => reset('resetAfterWrite'));
    });
    s.on('data', () => reset('resetAfterEcho'));
    s.on('close', () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

const t0 = Date.now();
let next = 0;
await Promise.all(
  Array.from({ length: spec.concurrency ?? 50 }, async () => {
    while (next < spec.count) await one(next++);
  }),
);
const secs = (Date.now() - t0) / 1000;
console.log(JSON.stringify({ done: spec.count, outcomes, secs, perSecond: Math.round(spec.count / secs) }));
