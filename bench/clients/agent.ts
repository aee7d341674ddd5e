// The one process the bench runs in each function (and host) namespace: servers for the
// destination side, measuring clients for the source side, all driven by JSON
// commands on stdin with JSON results on stdout (lib/line-protocol.ts).
// Long-lived, so the JIT is warm and no process start-up lands in a sample.
import { serveCommands } from '../lib/line-protocol.js';
import { bulkSend } from './bulk.js';
import { connectEcho, firstConnection, warmUp } from './connect-echo.js';
import { connRate } from './conn-rate.js';
import { httpRate } from './http-load.js';
import { closeIdle, openIdle } from './idle-conns.js';
import { closeServers, listenEcho, listenHttp, listenRelays, listenSink } from './servers.js';

serveCommands({
  'listen-echo': (a) => listenEcho(a as { port: number }),
  'listen-http': (a) => listenHttp(a as { port: number }),
  'listen-sink': (a) => listenSink(a as { port: number; hash?: boolean }),
  'listen-relays': (a) => listenRelays(a as Parameters<typeof listenRelays>[0]),
  'close-servers': () => closeServers(),
  'connect-echo': (a) => connectEcho(a as Parameters<typeof connectEcho>[0]),
  'first-connection': (a) => firstConnection(a as Parameters<typeof firstConnection>[0]),
  'warm-up': (a) => warmUp(a as Parameters<typeof warmUp>[0]),
  'conn-rate': (a) => connRate(a as Parameters<typeof connRate>[0]),
  'http-rate': (a) => httpRate(a as Parameters<typeof httpRate>[0]),
  'bulk-send': (a) => bulkSend(a as Parameters<typeof bulkSend>[0]),
  'open-idle': (a) => openIdle(a as Parameters<typeof openIdle>[0]),
  'close-idle': () => closeIdle(),
  // In host namespaces: the daemon's admin listener, without starting a process per request.
  'admin-get': async (a) => {
    try {
      const r = await fetch(String(a.url), { signal: AbortSignal.timeout(Number(a.timeoutMs ?? 3000)) });
      return { status: r.status, body: await r.text() };
    } catch (err) {
      return { status: 0, body: String(err) };
    }
  },
  'gc': () => {
    (globalThis as { gc?: () => void }).gc?.();
    return { rssBytes: process.memoryUsage().rss };
  },
});
