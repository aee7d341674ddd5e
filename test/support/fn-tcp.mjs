// The programs the e2e suites run inside function (and host) namespaces: small
// TCP and HTTP servers and clients that report what they saw as JSON lines on
// stdout, so a test compares hashes computed on both ends of a tunnel.
// Plain Node ESM (the namespaces run `node`, which does not load TypeScript);
// test/support/fn-net.ts starts it and parses its output.
//
//   node fn-tcp.mjs server <mode> '<json spec>'   prints {"event":"ready"} then one line per connection
//   node fn-tcp.mjs client <mode> '<json spec>'   prints one {"event":"result",...} line and exits 0
import crypto from 'node:crypto';
import http from 'node:http';
import net from 'node:net';

const [role, mode, specText] = process.argv.slice(2);
const spec = JSON.parse(specText ?? '{}');
const emit = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');
const sha256 = () => crypto.createHash('sha256');

/** Bytes of each payload chunk; its first MARKER_SPAN bytes repeat the marker (ASCII), the rest is random. */
const CHUNK = 64 * 1024;
const MARKER_SPAN = 4 * 1024;

function* payloadChunks(total, marker) {
  const head = marker ? Buffer.from(marker.repeat(Math.ceil(MARKER_SPAN / marker.length))).subarray(0, MARKER_SPAN) : null;
  for (let left = total; left > 0; left -= CHUNK) {
    const chunk = crypto.randomBytes(Math.min(CHUNK, left));
    if (head) head.copy(chunk, 0, 0, Math.min(head.length, chunk.length));
    yield chunk;
  }
}

/** Writes `total` payload bytes with backpressure; resolves with the sha256 of what was written. */
async function writePayload(sock, total, marker) {
  const hash = sha256();
  for (const chunk of payloadChunks(total, marker)) {
    if (sock.destroyed) throw Object.assign(new Error('socket closed while sending'), { code: 'ECLOSED' });
    hash.update(chunk);
    if (!sock.write(chunk)) {
      await new Promise((resolve) => {
        const done = () => {
          sock.off('drain', done);
          sock.off('close', done);
          resolve();
        };
        sock.on('drain', done);
        sock.on('close', done);
      });
    }
  }
  return hash.digest('hex');
}

function listen(server) {
  server.listen({ host: spec.ip, port: spec.port, backlog: 1024 }, () => emit({ event: 'ready', port: server.address().port }));
}

// ---------------------------------------------------------------- servers

/**
 * rpc: reads the request until the client's FIN and replies spec.replyBytes
 * (after the FIN, or at once with replyWhen "connect", half-closing first),
 * ends its side spec.endDelayMs after the last reply byte, then reports both
 * hashes in one "conn" line.
 */
function rpcServer() {
  listen(
    net.createServer({ allowHalfOpen: true }, (sock) => {
      const t0 = Date.now();
      const reqHash = sha256();
      let requestBytes = 0;
      let requestDone = false;
      let reply = null;
      const report = {};
      sock.on('error', (err) => (report.error = err.code ?? String(err)));
      sock.on('data', (d) => {
        requestBytes += d.length;
        reqHash.update(d);
      });
      const sendReply = () => {
        reply = writePayload(sock, spec.replyBytes ?? 0, spec.marker).then(async (replySha256) => {
          if (spec.endDelayMs) await new Promise((r) => setTimeout(r, spec.endDelayMs));
          sock.end();
          return replySha256;
        });
      };
      sock.on('end', () => {
        requestDone = true;
        if (spec.replyWhen !== 'connect') sendReply();
      });
      if (spec.replyWhen === 'connect') sendReply();
      sock.on('close', async () => {
        const replySha256 = reply ? await reply.catch(() => null) : null;
        emit({
          event: 'conn',
          remote: sock.remoteAddress,
          requestBytes,
          requestSha256: reqHash.digest('hex'),
          requestDone,
          replyBytes: reply ? spec.replyBytes ?? 0 : 0,
          replySha256,
          ms: Date.now() - t0,
          ...report,
        });
      });
    }),
  );
}

/** echo: every byte back; the client's FIN becomes ours once the echo is out. */
function echoServer() {
  let conns = 0;
  listen(
    net.createServer({ allowHalfOpen: true }, (sock) => {
      conns++;
      sock.on('error', () => {});
      sock.pipe(sock);
      sock.on('close', () => emit({ event: 'conn', conns }));
    }),
  );
}

/** banner: speaks first ("220 <banner>"), answers "QUIT" with "221 bye" and closes. */
function bannerServer() {
  listen(
    net.createServer({ allowHalfOpen: true }, (sock) => {
      sock.on('error', () => {});
      sock.write(`220 ${spec.banner}\r\n`);
      let text = '';
      sock.on('data', (d) => {
        text += d.toString('latin1');
        if (text.includes('QUIT\r\n')) sock.end('221 bye\r\n');
      });
      sock.on('close', () => emit({ event: 'conn', received: text }));
    }),
  );
}

/** http: answers every request with JSON describing what arrived (and the marker, so it crosses the wire too). */
function httpServer() {
  const server = http.createServer((req, res) => {
    const hash = sha256();
    let bodyBytes = 0;
    req.on('data', (d) => {
      bodyBytes += d.length;
      hash.update(d);
    });
    req.on('end', () => {
      const body = JSON.stringify({
        method: req.method,
        url: req.url,
        marker: req.headers['x-marker'] ?? null,
        remote: req.socket.remoteAddress,
        bodyBytes,
        bodySha256: hash.digest('hex'),
      });
      res.writeHead(200, { 'content-type': 'application/json', 'x-marker': String(req.headers['x-marker'] ?? '') });
      res.end(body);
      emit({ event: 'conn', url: req.url, bodyBytes });
    });
  });
  listen(server);
}

// ---------------------------------------------------------------- clients

/** Ends the process with one result line (once), whatever happens first. */
function finish(result) {
  if (finish.done) return;
  finish.done = true;
  emit({ event: 'result', ...result });
  process.exit(0);
}

function guard(t0, fields) {
  setTimeout(() => finish({ ...fields(), error: 'TIMEOUT', ms: Date.now() - t0 }), spec.timeoutMs ?? 30_000).unref();
}

/**
 * rpc: connects, sends spec.requestBytes and half-closes spec.endDelayMs later
 * (or, with sendAfterEnd, first waits for the server's FIN), reads the reply to EOF.
 */
function rpcClient() {
  const t0 = Date.now();
  const r = { connected: false, connectMs: null, requestBytes: spec.requestBytes ?? 0, requestSha256: null, replyBytes: 0, gotEnd: false, error: null, firstByteMs: null };
  const hash = sha256();
  guard(t0, () => r);
  const sock = net.connect({ host: spec.ip, port: spec.port, allowHalfOpen: true, ...(spec.localAddress ? { localAddress: spec.localAddress } : {}) });
  sock.setNoDelay(true);
  const send = () =>
    writePayload(sock, r.requestBytes, spec.marker).then(
      async (h) => {
        r.requestSha256 = h;
        if (spec.endDelayMs) await new Promise((res) => setTimeout(res, spec.endDelayMs));
        sock.end();
      },
      (err) => (r.error ??= err.code ?? String(err)),
    );
  sock.on('connect', () => {
    r.connected = true;
    r.connectMs = Date.now() - t0;
    if (!spec.sendAfterEnd) send();
  });
  sock.on('data', (d) => {
    r.firstByteMs ??= Date.now() - t0;
    r.replyBytes += d.length;
    hash.update(d);
  });
  sock.on('end', () => {
    r.gotEnd = true;
    if (spec.sendAfterEnd) send();
  });
  sock.on('error', (err) => (r.error ??= err.code ?? String(err)));
  sock.on('close', () => finish({ ...r, replySha256: hash.digest('hex'), ms: Date.now() - t0 }));
}

/**
 * many: spec.count connections at once, spread over spec.targets, each sending
 * its own payload (index, nonce, random bytes) to an echo server and checking
 * the echo byte for byte.
 */
async function manyClient() {
  const t0 = Date.now();
  const failures = [];
  const pending = new Map(); // i -> what a connection still open has seen
  let ok = 0;
  guard(t0, () => ({ ok, failed: failures.length, failures: failures.slice(0, 20), pending: [...pending.values()].slice(0, 20), pendingCount: pending.size }));
  const one = (i) =>
    new Promise((resolve) => {
      const target = spec.targets[i % spec.targets.length];
      const size = spec.minBytes + Math.floor(Math.random() * (spec.maxBytes - spec.minBytes + 1));
      const payload = Buffer.concat([Buffer.from(`conn ${i} ${crypto.randomBytes(8).toString('hex')}\n`), crypto.randomBytes(size)]);
      const chunks = [];
      const state = { i, target: `${target.ip}:${target.port}`, sent: payload.length, got: 0, connected: false, localPort: null, gotEnd: false, error: null };
      pending.set(i, state);
      const sock = net.connect({ host: target.ip, port: target.port, allowHalfOpen: true }, () => {
        state.connected = true;
        state.localPort = sock.localPort;
        sock.end(payload);
      });
      sock.on('data', (d) => {
        chunks.push(d);
        state.got += d.length;
      });
      sock.on('end', () => (state.gotEnd = true));
      sock.on('error', (err) => (state.error ??= err.code ?? String(err)));
      sock.on('close', () => {
        pending.delete(i);
        const got = Buffer.concat(chunks);
        if (!state.error && got.equals(payload)) ok++;
        else failures.push({ ...state, samePrefix: got.equals(payload.subarray(0, got.length)) });
        resolve();
      });
    });
  await Promise.all(Array.from({ length: spec.count }, (_, i) => one(i)));
  finish({ ok, failed: failures.length, failures: failures.slice(0, 20), pendingCount: 0, ms: Date.now() - t0 });
}

/**
 * ticker: one long-lived connection to an echo server, sending spec.tickBytes every
 * spec.tickMs for spec.durationMs, then half-closing; checks the echo byte for byte.
 */
function tickerClient() {
  const t0 = Date.now();
  const r = { connected: false, ticks: 0, sentBytes: 0, echoedBytes: 0, echoIntact: false, gotEnd: false, error: null, maxEchoGapMs: 0 };
  guard(t0, () => r);
  const sent = [];
  const got = [];
  let lastEcho = null;
  const sock = net.connect({ host: spec.ip, port: spec.port, allowHalfOpen: true });
  sock.setNoDelay(true);
  let timer = null;
  sock.on('connect', () => {
    r.connected = true;
    lastEcho = Date.now();
    timer = setInterval(() => {
      if (Date.now() - t0 >= spec.durationMs) {
        clearInterval(timer);
        sock.end();
        return;
      }
      const chunk = crypto.randomBytes(spec.tickBytes ?? 1024);
      sent.push(chunk);
      r.ticks++;
      r.sentBytes += chunk.length;
      sock.write(chunk);
    }, spec.tickMs ?? 50);
  });
  sock.on('data', (d) => {
    const now = Date.now();
    r.maxEchoGapMs = Math.max(r.maxEchoGapMs, now - lastEcho);
    lastEcho = now;
    got.push(d);
    r.echoedBytes += d.length;
  });
  sock.on('end', () => (r.gotEnd = true));
  sock.on('error', (err) => (r.error ??= err.code ?? String(err)));
  sock.on('close', () => {
    clearInterval(timer);
    r.echoIntact = Buffer.concat(got).equals(Buffer.concat(sent));
    finish({ ...r, ms: Date.now() - t0 });
  });
}

/** banner: connects without sending, waits for the server's first line, says QUIT, reads to EOF. */
function bannerClient() {
  const t0 = Date.now();
  const r = { banner: null, rest: '', gotEnd: false, error: null };
  guard(t0, () => r);
  let text = '';
  const sock = net.connect({ host: spec.ip, port: spec.port, allowHalfOpen: true });
  sock.on('data', (d) => {
    text += d.toString('latin1');
    if (r.banner === null && text.includes('\r\n')) {
      r.banner = text.slice(0, text.indexOf('\r\n'));
      text = text.slice(text.indexOf('\r\n') + 2);
      sock.write('QUIT\r\n');
    }
  });
  sock.on('end', () => {
    r.gotEnd = true;
    sock.end();
  });
  sock.on('error', (err) => (r.error ??= err.code ?? String(err)));
  sock.on('close', () => finish({ ...r, rest: text, ms: Date.now() - t0 }));
}

/** http: one POST with spec.bodyBytes of payload and the marker in a header; returns the parsed answer. */
function httpClient() {
  const t0 = Date.now();
  const r = { status: null, answer: null, markerHeader: null, error: null };
  guard(t0, () => r);
  const req = http.request({ host: spec.ip, port: spec.port, method: 'POST', path: spec.path ?? '/', agent: false, headers: { 'x-marker': spec.marker ?? '' } }, (res) => {
    r.status = res.statusCode;
    r.markerHeader = res.headers['x-marker'] ?? null;
    const chunks = [];
    res.on('data', (d) => chunks.push(d));
    res.on('end', () => {
      try {
        r.answer = JSON.parse(Buffer.concat(chunks).toString());
      } catch (err) {
        r.error = `bad JSON: ${err.message}`;
      }
      finish({ ...r, ms: Date.now() - t0 });
    });
  });
  req.on('error', (err) => finish({ ...r, error: err.code ?? String(err), ms: Date.now() - t0 }));
  writePayload(req, spec.bodyBytes ?? 0, spec.marker).then(
    (h) => {
      r.bodySha256 = h;
      req.end();
    },
    () => {},
  );
}

const table = {
  server: { rpc: rpcServer, echo: echoServer, banner: bannerServer, http: httpServer },
  client: { rpc: rpcClient, many: manyClient, banner: bannerClient, http: httpClient, ticker: tickerClient },
};
const run = table[role]?.[mode];
if (!run) {
  process.stderr.write(`usage: fn-tcp.mjs server|client <mode> '<json>' (modes: ${Object.keys(table.server)} / ${Object.keys(table.client)})\n`);
  process.exit(2);
}
run();
