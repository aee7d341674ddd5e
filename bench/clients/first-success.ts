// For bench/membership-join.ts, run inside a function namespace:
//   node first-success.js serve '{"port":7100}'         an echo server
//   node first-success.js probe '{"ip","port","intervalMs","attemptTimeoutMs","deadlineMs"}'
// probe starts a connection attempt every intervalMs (each sends 16 bytes and waits for
// their echo, or gives up after attemptTimeoutMs) and prints the wall-clock time of the
// first attempt that got its echo back: {"event":"first-success","atMs",...}. It prints
// {"event":"ready"} once running and {"event":"deadline"} if nothing succeeded in time.
import net from 'node:net';

const [mode, json] = process.argv.slice(2);
const spec = JSON.parse(json ?? '{}') as { port: number; ip?: string; intervalMs?: number; attemptTimeoutMs?: number; deadlineMs?: number };
const print = (o: object): void => {
  process.stdout.write(`${JSON.stringify(o)}\n`);
};

if (mode === 'serve') {
  net.createServer((s) => s.pipe(s).on('error', () => s.destroy())).listen(spec.port, () => print({ event: 'ready' }));
} else if (mode === 'probe') {
  const payload = Buffer.from('qmesh-join-probe');
  const started = Date.now();
  let attempts = 0;
  let done = false;
  const attempt = (): void => {
    attempts += 1;
    const startedAt = Date.now();
    const sock = net.connect({ host: spec.ip, port: spec.port });
    let got = 0;
    const timer = setTimeout(() => sock.destroy(), spec.attemptTimeoutMs ?? 1000);
    sock.on('connect', () => sock.write(payload));
    sock.on('data', (b) => {
      got += b.length;
      if (got < payload.length || done) return;
      done = true;
      print({ event: 'first-success', atMs: Date.now(), attemptStartedAtMs: startedAt, attempts });
      process.exit(0);
    });
    sock.on('error', () => undefined);
    sock.on('close', () => clearTimeout(timer));
  };
  setInterval(() => {
    if (Date.now() - started > (spec.deadlineMs ?? 30_000)) {
      print({ event: 'deadline', attempts });
      process.exit(1);
    }
    attempt();
  }, spec.intervalMs ?? 10);
  print({ event: 'ready' });
} else {
  process.stderr.write("usage: first-success.js serve|probe '<json>'\n");
  process.exit(2);
}
