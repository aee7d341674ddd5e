// The namespace topology every e2e test, the demo and the benchmarks stand on:
// plain TCP between functions on different hosts (the baseline path, no qmesh),
// underlay reachability, MTU changes, and that nothing is left behind after
// destroy(), cleanupStale() or Ctrl-C.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { once } from 'node:events';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanupStale, randomPrefix, Topology, TopologyError } from '../../daemon/demo/topology.js';
import { requireTool } from '../support/tools.js';

const STEP_MS = 10_000;
const TEST_MS = 30_000;
const ECHO_PORT = 7007;
const NODE = process.execPath;
const PING = requireTool('ping', 'iputils-ping');

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

function ipOut(args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile('ip', args, { timeout: STEP_MS, killSignal: 'SIGKILL' }, (err, stdout) => (err ? reject(err) : resolve(stdout)));
  });
}

async function namespacesWith(prefix: string): Promise<string[]> {
  return (await ipOut(['netns', 'list'])).split('\n').map((l) => l.split(' ')[0] ?? '').filter((n) => n.startsWith(prefix));
}

/** Resolves with the first stdout line matching re (the child's "I am ready" signal). */
function waitForLine(child: ChildProcess, re: RegExp, ms: number, what: string): Promise<string> {
  return withTimeout(
    new Promise<string>((resolve, reject) => {
      let buf = '';
      child.stdout?.setEncoding('utf8').on('data', (d: string) => {
        buf += d;
        const line = buf.split('\n').find((l) => re.test(l));
        if (line !== undefined) resolve(line);
      });
      child.once('exit', (code, signal) => reject(new Error(`${what} exited early (${code ?? signal}): ${buf}`)));
    }),
    ms,
    what,
  );
}

// Echoes every byte back, half-close aware, and logs each peer address so the
// test can see that the source address survives the routed path (no NAT).
const ECHO_SERVER = `
const net = require('node:net');
const [ip, port] = process.argv.slice(1);
net.createServer({ allowHalfOpen: true }, (s) => {
  console.log('conn ' + s.remoteAddress);
  s.on('error', () => {});
  s.pipe(s);
}).listen(Number(port), ip, () => console.log('ready'));`;

// Sends stdin to ip:port, half-closes, prints everything echoed back as base64.
const ECHO_CLIENT = `
const net = require('node:net');
const [ip, port] = process.argv.slice(1);
const out = [], input = [];
process.stdin.on('data', (c) => input.push(c)).on('end', () => {
  const s = net.connect({ host: ip, port: Number(port), allowHalfOpen: true }, () => s.end(Buffer.concat(input)));
  s.on('data', (d) => out.push(d));
  s.on('end', () => process.stdout.write(Buffer.concat(out).toString('base64')));
  s.on('error', (e) => { console.error(e.code); process.exit(2); });
});`;

// Connects to a port nobody listens on: ECONNREFUSED proves a round trip (the
// RST came back), where a routing hole shows as a timeout or EHOSTUNREACH.
const REFUSED_PROBE = `
const s = require('node:net').connect({ host: process.argv[1], port: 9 });
s.setTimeout(2000, () => { console.log('TIMEOUT'); process.exit(0); });
s.on('connect', () => { console.log('CONNECTED'); process.exit(0); });
s.on('error', (e) => { console.log(e.code); process.exit(0); });`;

describe('Topology', () => {
  const prefix = randomPrefix();
  let topo: Topology;
  let server: ChildProcess | undefined;
  const serverLines: string[] = [];

  beforeAll(async () => {
    topo = await withTimeout(Topology.create({ prefix, hosts: 2, functionsPerHost: 2 }), STEP_MS, 'Topology.create');
  }, TEST_MS);

  afterAll(async () => {
    await withTimeout(topo?.destroy() ?? Promise.resolve(), STEP_MS, 'destroy').catch(() => undefined);
    await cleanupStale(prefix); // even if create() or destroy() went wrong half-way
  }, TEST_MS);

  const h1 = () => topo.hosts[0]!;
  const h2 = () => topo.hosts[1]!;

  it('lays out names and addresses as documented', () => {
    expect(topo.underlayNs).toBe(`${prefix}-ul`);
    expect(topo.hosts.map((h) => [h.name, h.ns, h.underlayIp, h.functionCidr, h.gatewayIp])).toEqual([
      ['host-1', `${prefix}-h1`, '198.18.0.1', '198.19.1.0/24', '198.19.1.1'],
      ['host-2', `${prefix}-h2`, '198.18.0.2', '198.19.2.0/24', '198.19.2.1'],
    ]);
    expect(h2().functions).toEqual([
      { name: 'fn-2-1', ns: `${prefix}-h2f1`, ip: '198.19.2.11' },
      { name: 'fn-2-2', ns: `${prefix}-h2f2`, ip: '198.19.2.12' },
    ]);
    expect(topo.namespaces).toHaveLength(1 + 2 * (1 + 2));
  });

  it('echoes exact bytes from a function on host-1 to a function on host-2 over plain TCP', async () => {
    const target = h2().functions[1]!;
    server = topo.spawn(target.ns, [NODE, '-e', ECHO_SERVER, target.ip, String(ECHO_PORT)], { stdio: ['ignore', 'pipe', 'inherit'] });
    server.stdout?.on('data', (d: Buffer) => serverLines.push(...d.toString().split('\n').filter(Boolean)));
    await waitForLine(server, /^ready$/, STEP_MS, 'echo server');

    const payload = randomBytes(256 * 1024);
    const client = h1().functions[0]!;
    const res = await topo.exec(client.ns, [NODE, '-e', ECHO_CLIENT, target.ip, String(ECHO_PORT)], {
      input: payload,
      timeoutMs: STEP_MS,
    });
    expect(res.stderr).toBe('');
    expect(res.code).toBe(0);
    expect(Buffer.from(res.stdout, 'base64').equals(payload)).toBe(true);
    expect(serverLines).toContain(`conn ${client.ip}`);
  }, TEST_MS);

  it('routes every host and function to every other host, both ways', async () => {
    const probes: Promise<string>[] = [];
    for (const a of topo.hosts) {
      for (const b of topo.hosts) {
        if (a === b) continue;
        for (const [ns, ip] of [[a.ns, b.underlayIp], [a.functions[0]!.ns, b.functions[1]!.ip]] as const) {
          probes.push(topo.exec(ns, [NODE, '-e', REFUSED_PROBE, ip], { timeoutMs: STEP_MS }).then((r) => `${ns}->${ip} ${r.stdout.trim()}`));
        }
      }
    }
    const results = await Promise.all(probes);
    for (const line of results) expect(line).toMatch(/ ECONNREFUSED$/);
  }, TEST_MS);

  it.skipIf(PING === undefined)('pings host-2 from host-1 over the underlay', async () => {
    const res = await topo.exec(h1().ns, [PING!, '-c', '1', '-W', '2', h2().underlayIp], { timeoutMs: STEP_MS });
    expect(res.code, res.stdout + res.stderr).toBe(0);
  }, TEST_MS);

  it('changes the underlay MTU and keeps carrying traffic', async () => {
    await topo.setMtu(9000);
    expect(topo.mtu).toBe(9000);
    expect(await ipOut(['-n', h1().ns, 'link', 'show', 'eth0'])).toMatch(/ mtu 9000 /);
    expect(await ipOut(['-n', topo.underlayNs, 'link', 'show', 'br0'])).toMatch(/ mtu 9000 /);
    expect(await ipOut(['-n', h1().functions[0]!.ns, 'link', 'show', 'eth0'])).toMatch(/ mtu 1500 /);
    const payload = randomBytes(64 * 1024);
    const res = await topo.exec(h1().functions[1]!.ns, [NODE, '-e', ECHO_CLIENT, h2().functions[1]!.ip, String(ECHO_PORT)], {
      input: payload,
      timeoutMs: STEP_MS,
    });
    expect(Buffer.from(res.stdout, 'base64').equals(payload)).toBe(true);
    await topo.setMtu(1500);
    expect(await ipOut(['-n', h2().ns, 'link', 'show', 'eth0'])).toMatch(/ mtu 1500 /);
  }, TEST_MS);

  it('refuses namespaces it does not own and bad options, with QMESH_ERR_TOPOLOGY', async () => {
    await expect(topo.exec('not-ours', ['true'])).rejects.toMatchObject({ code: 'QMESH_ERR_TOPOLOGY' });
    const bad = [
      { prefix: 'Bad_Prefix', hosts: 2, functionsPerHost: 1 },
      { prefix: 'qmtlongerthan8', hosts: 2, functionsPerHost: 1 },
      { prefix: randomPrefix(), hosts: 7, functionsPerHost: 1 },
      { prefix: randomPrefix(), hosts: 2, functionsPerHost: 0 },
      { prefix: randomPrefix(), hosts: 2, functionsPerHost: 1, mtu: 100 },
    ];
    for (const opts of bad) {
      const err = await Topology.create(opts).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(TopologyError);
      expect(err).toMatchObject({ code: 'QMESH_ERR_TOPOLOGY' });
    }
  });

  it('destroy() kills spawned processes, removes every namespace, and can be called twice', async () => {
    const t0 = performance.now();
    await withTimeout(topo.destroy(), STEP_MS, 'destroy');
    const elapsedMs = performance.now() - t0;
    expect(server?.exitCode !== null || server?.signalCode !== null).toBe(true);
    expect(await namespacesWith(prefix)).toEqual([]);
    await withTimeout(topo.destroy(), STEP_MS, 'second destroy');
    expect(topo.destroyed).toBe(true);
    await expect(topo.exec(h1().ns, ['true'])).rejects.toMatchObject({ code: 'QMESH_ERR_TOPOLOGY' });
    expect(elapsedMs).toBeLessThan(5_000);
  }, TEST_MS);
});

describe('cleanupStale', () => {
  it('removes leftover namespaces and root links carrying the prefix, nothing else', async () => {
    const stale = randomPrefix('qms');
    const bystander = randomPrefix('qmb');
    try {
      await ipOut(['netns', 'add', `${stale}-h1`]);
      await ipOut(['netns', 'add', `${bystander}-h1`]);
      await ipOut(['link', 'add', `${stale}a`, 'type', 'veth', 'peer', 'name', `${stale}b`]);
      const removed = await withTimeout(cleanupStale(stale), STEP_MS, 'cleanupStale');
      expect(removed).toContain(`${stale}-h1`);
      expect(removed.some((n) => n === `${stale}a` || n === `${stale}b`)).toBe(true);
      expect(await namespacesWith(stale)).toEqual([]);
      expect(await ipOut(['-o', 'link', 'show'])).not.toContain(stale);
      expect(await namespacesWith(bystander)).toEqual([`${bystander}-h1`]);
    } finally {
      await cleanupStale(stale);
      await cleanupStale(bystander);
    }
  }, TEST_MS);
});

// Runs the real module in a child process (the build in dist/, which `npm test`
// makes first) and checks the process-level handlers.
describe('exit and signal handlers', () => {
  let dir: string;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'qmesh-topology-'));
    const built = new URL('../../dist/daemon/demo/topology.js', import.meta.url).href;
    await writeFile(join(dir, 'package.json'), '{"type":"module"}');
    await writeFile(
      join(dir, 'child.js'),
      `import { Topology } from '${built}';
const [prefix, how] = process.argv.slice(2);
const topo = await Topology.create({ prefix, hosts: 2, functionsPerHost: 1 });
topo.spawn(topo.hosts[0].functions[0].ns, ['sleep', '60'], { stdio: 'ignore' });
console.log('ready');
if (how === 'exit') process.exit(0);
setInterval(() => {}, 1000);`,
    );
  }, TEST_MS);

  afterAll(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  for (const how of ['SIGINT', 'SIGTERM', 'exit'] as const) {
    it(`leaves no namespace behind on ${how}`, async () => {
      const prefix = randomPrefix('qmx');
      const child = spawn(NODE, [join(dir, 'child.js'), prefix, how], { stdio: ['ignore', 'pipe', 'inherit'] });
      try {
        const exited = once(child, 'exit');
        await waitForLine(child, /^ready$/, STEP_MS, 'child').catch((err: unknown) => {
          if (how !== 'exit') throw err;
        });
        if (how !== 'exit') child.kill(how);
        const [code, signal] = await withTimeout(exited, STEP_MS, 'child exit');
        if (how === 'exit') expect(code).toBe(0);
        else expect(signal).toBe(how);
        expect(await namespacesWith(prefix)).toEqual([]);
      } finally {
        child.kill('SIGKILL');
        await cleanupStale(prefix);
      }
    }, TEST_MS);
  }
});
