// TCP programs for the fault suite (test/e2e/faults/), run inside function
// namespaces like fn-tcp.mjs: every result carries absolute timestamps (Date.now();
// all namespaces share the clock) so a test can relate it to a fault it injected.
//
//   node fault-tcp.mjs server watch '<json>'   echo server; one "conn" line per connection saying how it ended
//   node fault-tcp.mjs client conns '<json>'   many echo connections (count, or a loop for durationMs)
//   node fault-tcp.mjs client idle '<json>'    one echo, silence for idleMs, another echo
//   node fault-tcp.mjs client stream '<json>'  sends `bytes` then FIN, reads to EOF
//   node fault-tcp.mjs client reset '<json>'   one echo, then resets the connection (SO_LINGER 0)
import crypto from 'node:crypto';
import net from 'node:net';

const [role, mode, specText] = process.argv.slice(2);
const spec = JSON.parse(specText ?? '{}');
const emit = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** How a socket ended: "end" (FIN then close), an error code, or "closed" (neither). */
function watchEnd(sock) {
  const s = { gotEnd: false, error: null, closedAt: null };
  sock.on('end', () => (s.gotEnd = true));
  sock.on('error', (err) => (s.error ??= err.code ?? String(err)));
  const closed = new Promise((resolve) =>
    sock.on('close', () => {
      s.closedAt = Date.now();
      resolve(s.error ?? (s.gotEnd ? 'end' : 'closed'));
    }),
  );
  return { s, closed };
}

/** watch: echoes; with resetAfterBytes it resets the connection once that many bytes arrived. */
function watchServer() {
  const server = net.createServer({ allowHalfOpen: true }, (sock) => {
    const openedAt = Date.now();
    let bytes = 0;
    const { closed } = watchEnd(sock);
    sock.on('data', (d) => {
      bytes += d.length;
      if (spec.resetAfterBytes && bytes >= spec.resetAfterBytes) sock.resetAndDestroy();
      else sock.write(d);
    });
    sock.on('end', () => sock.end());
    closed.then((how) => emit({ event: 'conn', openedAt, closedAt: Date.now(), bytes, how }));
  });
  server.listen({ host: spec.ip, port: spec.port, backlog: 4096 }, () => emit({ event: 'ready' }));
}

function finish(result) {
  emit({ event: 'result', ...result });
  process.exit(0);
}

/** One echo connection: payload out, FIN after holdMs, the echo back to EOF. Resolves with its outcome. */
function echoOnce(target, bytes, holdMs, timeoutMs) {
  return new Promise((resolve) => {
    const startAt = Date.now();
    const payload = crypto.randomBytes(bytes);
    const chunks = [];
    let got = 0;
    const sock = net.connect({ host: target.ip, port: target.port, allowHalfOpen: true });
    const { s, closed } = watchEnd(sock);
    const timer = setTimeout(() => {
      s.error ??= 'TIMEOUT';
      sock.destroy();
    }, timeoutMs);
    sock.on('connect', async () => {
      sock.write(payload);
      if (holdMs) await sleep(holdMs);
      if (!sock.destroyed) sock.end();
    });
    sock.on('data', (d) => {
      chunks.push(d);
      got += d.length;
    });
    closed.then(() => {
      clearTimeout(timer);
      const intact = got === payload.length && Buffer.concat(chunks).equals(payload);
      // A connection that ended cleanly but short is a truncation: the one outcome fail-closed forbids.
      const outcome = s.error ?? (intact && s.gotEnd ? 'ok' : 'truncated');
      resolve({ startAt, endAt: Date.now(), outcome, got });
    });
  });
}

/** conns: `count` connections (or as many as durationMs allows), `concurrency` at a time. */
async function connsClient() {
  const targets = spec.targets ?? [{ ip: spec.ip, port: spec.port }];
  const results = [];
  let started = 0;
  const t0 = Date.now();
  const more = () => (spec.durationMs ? Date.now() - t0 < spec.durationMs : started < spec.count);
  const worker = async () => {
    while (more()) {
      const i = started++;
      results.push(await echoOnce(targets[i % targets.length], spec.bytes ?? 64, spec.holdMs ?? 0, spec.connTimeoutMs ?? 10_000));
      if (spec.gapMs) await sleep(spec.gapMs);
    }
  };
  await Promise.all(Array.from({ length: spec.concurrency ?? 1 }, worker));
  const outcomes = {};
  for (const r of results) outcomes[r.outcome] = (outcomes[r.outcome] ?? 0) + 1;
  finish({ total: results.length, outcomes, conns: spec.keepConns ? results : undefined, ms: Date.now() - t0 });
}

/** idle: echo "one", stay silent idleMs (noting a close meanwhile), echo "two". */
async function idleClient() {
  const r = { connectedAt: null, firstEcho: false, secondEcho: false, closedAt: null, how: null };
  const sock = net.connect({ host: spec.ip, port: spec.port, allowHalfOpen: true });
  const { closed } = watchEnd(sock);
  let text = '';
  sock.on('data', (d) => (text += d.toString()));
  closed.then((how) => {
    r.closedAt = Date.now();
    r.how = how;
  });
  const until = async (pred, ms) => {
    const deadline = Date.now() + ms;
    while (!pred() && Date.now() < deadline && r.how === null) await sleep(10);
    return pred();
  };
  setTimeout(() => finish({ ...r, error: 'TIMEOUT' }), spec.timeoutMs ?? 60_000).unref();
  await new Promise((res) => {
    sock.once('connect', res);
    closed.then(res);
  });
  r.connectedAt = Date.now();
  if (r.how === null) {
    sock.write('one');
    r.firstEcho = await until(() => text === 'one', 5_000);
    r.idleFrom = Date.now();
    await until(() => false, spec.idleMs);
    if (r.how === null) {
      sock.write('two');
      r.secondEcho = await until(() => text === 'onetwo', 5_000);
      sock.end();
      await Promise.race([closed, sleep(5_000)]);
    }
  }
  finish(r);
}

/** stream: `bytes` of random data, then FIN; reads the echo to EOF. Reports what was sent and how it ended. */
async function streamClient() {
  const r = { connectedAt: null, sent: 0, echoed: 0, how: null, endAt: null, sentAll: false };
  const sock = net.connect({ host: spec.ip, port: spec.port, allowHalfOpen: true });
  const { closed } = watchEnd(sock);
  sock.on('data', (d) => (r.echoed += d.length));
  setTimeout(() => finish({ ...r, how: 'TIMEOUT', endAt: Date.now() }), spec.timeoutMs ?? 60_000).unref();
  sock.on('connect', async () => {
    r.connectedAt = Date.now();
    const chunk = crypto.randomBytes(256 * 1024);
    if (spec.marker) chunk.write(spec.marker.repeat(64), 0, 'latin1'); // plaintext proof if it ever crosses the wire
    while (r.sent < spec.bytes && !sock.destroyed) {
      r.sent += chunk.length;
      if (!sock.write(chunk)) await new Promise((res) => (sock.once('drain', res), sock.once('close', res)));
    }
    r.sentAll = !sock.destroyed;
    if (!sock.destroyed) sock.end();
  });
  const how = await closed;
  finish({ ...r, how, endAt: Date.now() });
}

/** reset: one echo, then SO_LINGER 0 close. */
function resetClient() {
  const sock = net.connect({ host: spec.ip, port: spec.port, allowHalfOpen: true });
  sock.on('error', () => {});
  sock.on('connect', () => sock.write('hello'));
  sock.once('data', () => {
    const resetAt = Date.now();
    sock.resetAndDestroy();
    sock.on('close', () => finish({ echoed: true, resetAt }));
  });
  setTimeout(() => finish({ echoed: false, error: 'TIMEOUT' }), spec.timeoutMs ?? 10_000).unref();
}

const table = { server: { watch: watchServer }, client: { conns: connsClient, idle: idleClient, stream: streamClient, reset: resetClient } };
const run = table[role]?.[mode];
if (!run) {
  process.stderr.write(`usage: fault-tcp.mjs server watch|client conns|idle|stream|reset '<json>'\n`);
  process.exit(2);
}
run();
