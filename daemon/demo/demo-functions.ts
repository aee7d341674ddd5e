// The "functions" of `qmesh demo`: tiny Node programs (node -e) started inside
// function namespaces — an HTTP server, a TCP echo server, an HTTP client and a
// latency client. They know nothing of qmesh; demo.ts decides where they run.
import type { ChildProcess } from 'node:child_process';
import type { FunctionInfo, HostInfo, Topology } from './topology.js';

export const HTTP_PORT = 8080;
export const ECHO_PORT = 7007;
/** A server that has not printed "ready" by then is broken, not slow. */
const SERVER_READY_MS = 5_000;

/** Answers every GET with who it is; /echo/<text> repeats <text> (the wire check's marker travels both ways). */
const HTTP_SERVER = `
const http = require('node:http');
const [fn, host, port] = process.argv.slice(1);
http.createServer((req, res) => {
  const echo = req.url.startsWith('/echo/') ? ' echo ' + decodeURIComponent(req.url.slice(6)) : '';
  res.writeHead(200, { 'content-type': 'text/plain', 'x-served-by': fn + '@' + host, connection: 'close' });
  res.end('hello from ' + fn + ' on ' + host + echo + '\\n');
}).listen(Number(port), '0.0.0.0', () => console.log('ready'));`;

/** Echoes every byte back and closes when the client does. */
const ECHO_SERVER = `
const net = require('node:net');
net.createServer((s) => { s.on('error', () => {}); s.pipe(s); })
  .listen(Number(process.argv[1]), '0.0.0.0', () => console.log('ready'));`;

/** GETs each URL on a fresh TCP connection, one after another; prints one JSON line per request. */
const HTTP_CLIENT = `
const http = require('node:http');
const urls = JSON.parse(process.argv[1]);
(async () => {
  for (const url of urls) {
    const t0 = process.hrtime.bigint();
    const line = await new Promise((resolve) => {
      const req = http.get(url, { agent: false, timeout: 5000 }, (res) => {
        let body = '';
        res.setEncoding('utf8').on('data', (d) => { body += d; }).on('end', () => resolve({
          url, status: res.statusCode, body, servedBy: res.headers['x-served-by'] ?? '',
          ms: Number(process.hrtime.bigint() - t0) / 1e6,
        }));
      });
      req.on('timeout', () => req.destroy(new Error('no answer within 5 s')));
      req.on('error', (e) => resolve({ url, error: e.code ?? e.message, ms: Number(process.hrtime.bigint() - t0) / 1e6 }));
    });
    console.log(JSON.stringify(line));
  }
})();`;

/**
 * Opens warm + n connections one after another; each writes 5 bytes and waits for
 * the echo. Times connect() to echo received, keeps the last n, prints them as JSON.
 */
const LATENCY_CLIENT = `
const net = require('node:net');
const [host, port, n, warm] = process.argv.slice(1).map((v, i) => (i === 0 ? v : Number(v)));
const samples = [];
let i = 0;
const one = () => {
  if (i === n + warm) { process.stdout.write(JSON.stringify(samples)); return; }
  const t0 = process.hrtime.bigint();
  const guard = setTimeout(() => { console.error('connection ' + i + ': no echo within 5 s'); process.exit(2); }, 5000);
  const s = net.connect({ host, port, noDelay: true }, () => s.write('ping\\n'));
  let answered = false;
  s.once('data', () => {
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    clearTimeout(guard);
    answered = true;
    if (i >= warm) samples.push(ms);
    i++;
    s.end();
  });
  s.once('close', () => {
    if (answered) return setImmediate(one);
    console.error('connection ' + i + ': closed before the echo');
    process.exit(2);
  });
  s.on('error', (e) => { console.error('connection ' + i + ': ' + (e.code ?? e.message)); process.exit(2); });
};
one();`;

export interface HttpResult {
  url: string;
  status?: number;
  body?: string;
  servedBy?: string;
  error?: string;
  ms: number;
}

/** Starts a server script in fn's namespace and resolves once it prints "ready". */
async function startServer(topo: Topology, fn: FunctionInfo, script: string, args: string[]): Promise<ChildProcess> {
  const child = topo.spawn(fn.ns, [process.execPath, '-e', script, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`server in ${fn.name} not ready within ${SERVER_READY_MS} ms: ${output}`)), SERVER_READY_MS);
    child.stderr?.on('data', (d: Buffer) => (output += d.toString()));
    child.stdout?.on('data', (d: Buffer) => {
      output += d.toString();
      if (output.includes('ready')) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`server in ${fn.name} exited ${code}: ${output.trim()}`));
    });
  });
  child.stdout?.resume();
  return child;
}

export function startHttpServer(topo: Topology, host: HostInfo, fn: FunctionInfo): Promise<ChildProcess> {
  return startServer(topo, fn, HTTP_SERVER, [fn.name, host.name, String(HTTP_PORT)]);
}

export function startEchoServer(topo: Topology, fn: FunctionInfo): Promise<ChildProcess> {
  return startServer(topo, fn, ECHO_SERVER, [String(ECHO_PORT)]);
}

/** Runs the HTTP client in fn's namespace; one result per URL (a missing line counts as an error). */
export async function httpGets(topo: Topology, fn: FunctionInfo, urls: readonly string[]): Promise<HttpResult[]> {
  const r = await topo.exec(fn.ns, [process.execPath, '-e', HTTP_CLIENT, JSON.stringify(urls)], { timeoutMs: 10_000 + urls.length * 5_000 });
  const lines = r.stdout.split('\n').filter(Boolean).map((l) => JSON.parse(l) as HttpResult);
  return urls.map((url, i) => lines[i] ?? { url, error: oneLine(r.stderr) || `client exited ${r.code}`, ms: 0 });
}

/** n timed connect+echo round trips from fn to ip:ECHO_PORT (after `warm` untimed ones); milliseconds. */
export async function latencySamples(topo: Topology, fn: FunctionInfo, ip: string, n: number, warm: number): Promise<number[]> {
  const argv = [process.execPath, '-e', LATENCY_CLIENT, ip, String(ECHO_PORT), String(n), String(warm)];
  const r = await topo.exec(fn.ns, argv, { timeoutMs: 15_000 + n * 100 });
  if (r.code !== 0) throw new Error(`latency client in ${fn.name} failed (${r.timedOut ? 'timed out' : `exit ${r.code}`}): ${oneLine(r.stderr)}`);
  return JSON.parse(r.stdout) as number[];
}

export const oneLine = (s: string): string => s.replace(/\s*\n\s*/g, ' ').trim();
