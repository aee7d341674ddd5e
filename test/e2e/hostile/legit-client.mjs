// The legitimate traffic that runs during a hostile case: sequential request/
// response connections to an fn-tcp.mjs rpc server, at least `count` of them and
// for at least `durationMs`. Prints one JSON line: ok, failed, error codes, latency.
//   node legit-client.mjs '{"ip":..,"port":..,"count":..,"durationMs":..,"replyBytes":..}'
import net from 'node:net';

const spec = JSON.parse(process.argv[2]);
const timeoutMs = spec.timeoutMs ?? 15_000;

function once() {
  return new Promise((resolve) => {
    const t0 = Date.now();
    let got = 0;
    const sock = net.connect(spec.port, spec.ip);
    const done = (error) => {
      clearTimeout(timer);
      sock.destroy();
      resolve({ error, ms: Date.now() - t0 });
    };
    const timer = setTimeout(() => done('TIMEOUT'), timeoutMs);
    sock.on('connect', () => sock.end(Buffer.alloc(spec.requestBytes ?? 100, 0x61)));
    sock.on('data', (d) => (got += d.length));
    sock.on('end', () => done(got === spec.replyBytes ? null : `SHORT_${got}`));
    sock.on('error', (e) => done(e.code ?? String(e)));
  });
}

const until = Date.now() + (spec.durationMs ?? 0);
const errors = {};
const ms = [];
let ok = 0;
let failed = 0;
while (ok + failed < spec.count || Date.now() < until) {
  const r = await once();
  if (r.error) {
    failed++;
    errors[r.error] = (errors[r.error] ?? 0) + 1;
  } else {
    ok++;
    ms.push(r.ms);
  }
  if (spec.pauseMs) await new Promise((r) => setTimeout(r, spec.pauseMs));
}
ms.sort((a, b) => a - b);
console.log(JSON.stringify({ ok, failed, errors, p50Ms: ms[Math.floor(ms.length / 2)] ?? null, maxMs: ms.at(-1) ?? null }));
