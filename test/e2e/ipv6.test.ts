// IPv6 end to end: ip6tables REDIRECT capture, IP6T_SO_ORIGINAL_DST, QUIC over an
// IPv6 underlay, a v6 stream header and delivery to a v6 function. The topology is
// built for IPv4; this test adds v6 addresses and routes to it before the daemons start.
// Last, capture.failClosedCidrs over a v6 fleet block drops what would cross in plaintext.
import fs from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sleep } from '../../daemon/demo/mesh.js';
import { destroyMesh, logOf, startDaemons, startMesh, type HostInfo, type Mesh } from '../support/e2e-mesh.js';
import { waitFor } from '../support/fn-net.js';

let mesh: Mesh;

const v6 = {
  underlay: (i: number) => `fd00:18::${i}`,
  cidr: (i: number) => `fd00:19:${i}::/64`,
  gateway: (i: number) => `fd00:19:${i}::1`,
  fn: (i: number) => `fd00:19:${i}::11`,
};

async function run(ns: string, ...argv: string[]): Promise<void> {
  const r = await mesh.topo.exec(ns, argv, { timeoutMs: 5_000 });
  if (r.code !== 0) throw new Error(`${argv.join(' ')} in ${ns}: ${r.stderr}`);
}

/** The v6 fleet: every host's function CIDR lies inside it. */
const V6_FLEET = 'fd00:19::/32';

/** A host's v6 config: the other host as its peer unless `peers` is false; `failClosed` sets capture.failClosedCidrs. */
function v6Config(h: HostInfo, opts: { peers?: boolean; failClosed?: boolean } = {}): Record<string, unknown> {
  const other = 3 - h.index;
  return {
    listen: { quic: `[${v6.underlay(h.index)}]:4433` },
    local: { cidrs: [v6.cidr(h.index)] },
    peers: opts.peers === false ? [] : [{ name: `host-${other}`, endpoint: `[${v6.underlay(other)}]:4433`, cidrs: [v6.cidr(other)] }],
    capture: { failClosedCidrs: opts.failClosed ? [V6_FLEET] : [] },
  };
}

/** Rewrites both hosts' configs and waits until both daemons have reloaded them, rules included. */
async function reconfigure(optsFor: (h: HostInfo) => { peers?: boolean; failClosed?: boolean }): Promise<void> {
  const marks = new Map([...mesh.daemons.values()].map((d) => [d.host.name, d.log.length]));
  const changed = new Set<string>();
  for (const h of mesh.hosts) {
    const before = fs.readFileSync(mesh.configPath(h), 'utf8');
    mesh.writeConfig(h, { configFor: (x) => v6Config(x, optsFor(x)) });
    if (fs.readFileSync(mesh.configPath(h), 'utf8') !== before) changed.add(h.name);
  }
  // A daemon whose file did not change does not reload.
  for (const d of [...mesh.daemons.values()].filter((x) => changed.has(x.host.name))) {
    const e = await waitFor(
      () => logOf(d).slice(marks.get(d.host.name)).find((l) => l.msg === 'configuration reloaded' || l.msg?.startsWith('reload rejected')),
      15_000,
      `${d.host.name} reload`,
      50,
    );
    expect(e.msg).toBe('configuration reloaded');
  }
}

/** A one-shot request from a function namespace; prints the reply, the error code, or "timeout" after 2 s. */
async function request(ns: string, ip: string): Promise<string> {
  const script = `const c=require('net').connect(8080,'${ip}',()=>c.end('hello v6'));let g='';c.setTimeout(2000,()=>{console.log('timeout');process.exit(0)});c.on('data',d=>g+=d);c.on('end',()=>console.log(g));c.on('error',e=>console.log('error '+e.code))`;
  const r = await mesh.topo.exec(ns, [process.execPath, '-e', script], { timeoutMs: 8_000 });
  return r.stdout.trim();
}

beforeAll(async () => {
  // Built without daemons (start = false): the v6 addresses go in first.
  mesh = await startMesh({
    hosts: 2,
    functionsPerHost: 1,
    configFor: (h) => v6Config(h),
  }, false);
  for (const h of mesh.hosts) {
    const other = 3 - h.index;
    await run(h.ns, 'sysctl', '-qw', 'net.ipv6.conf.all.forwarding=1');
    await run(h.ns, 'ip', '-6', 'addr', 'add', `${v6.underlay(h.index)}/64`, 'dev', 'eth0', 'nodad');
    await run(h.ns, 'ip', '-6', 'addr', 'add', `${v6.gateway(h.index)}/64`, 'dev', 'fbr0', 'nodad');
    await run(h.ns, 'ip', '-6', 'route', 'add', v6.cidr(other), 'via', v6.underlay(other));
    const f = h.functions[0]!;
    await run(f.ns, 'ip', '-6', 'addr', 'add', `${v6.fn(h.index)}/64`, 'dev', 'eth0', 'nodad');
    await run(f.ns, 'ip', '-6', 'route', 'add', 'default', 'via', v6.gateway(h.index));
    const server = `require('net').createServer({allowHalfOpen:true},s=>{s.on('data',d=>s.write('to ${f.name}: '+d));s.on('end',()=>s.end())}).listen(8080,'::',()=>console.log('ready'))`;
    const child = mesh.topo.spawn(f.ns, [process.execPath, '-e', server], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise((r) => child.stdout!.once('data', r));
  }
  await sleep(200);
}, 60_000);

afterAll(async () => {
  await destroyMesh(mesh);
}, 30_000);

describe('IPv6', () => {
  it('carries a connection between v6 functions through the tunnel, both ways', async () => {
    await startDaemons(mesh);
    const [h1, h2] = mesh.hosts as [any, any];
    expect(await request(h1.functions[0].ns, v6.fn(2))).toBe(`to ${h2.functions[0].name}: hello v6`);
    expect(await request(h2.functions[0].ns, v6.fn(1))).toBe(`to ${h1.functions[0].name}: hello v6`);
    const st = await mesh.status(h1);
    expect(st.peers[0].outbound.state).toBe('up');
    expect(st.peers[0].outbound.streamsTotal).toBeGreaterThanOrEqual(1);
    expect(st.peers[0].endpoint).toBe(`[${v6.underlay(2)}]:4433`);
  }, 30_000);

  it('installs the capture rules with ip6tables', async () => {
    const r = await mesh.topo.exec(mesh.hosts[0]!.ns, ['ip6tables', '-t', 'nat', '-S', 'QMESH_PREROUTING']);
    expect(r.stdout).toContain(`-d ${v6.cidr(2)}`);
    expect(r.stdout).toContain('REDIRECT --to-ports 15001');
  });

  it('capture.failClosedCidrs over the v6 fleet: no plaintext crosses to or from a v6 function of a host that is no peer', async () => {
    const [h1, h2] = mesh.hosts as [any, any];
    // No peers, no fail-closed: the underlay routes v6 between the hosts, so the request crosses in plaintext.
    await reconfigure(() => ({ peers: false, failClosed: false }));
    expect(await request(h1.functions[0].ns, v6.fn(2))).toBe(`to ${h2.functions[0].name}: hello v6`);
    // Only host-2 fail-closed: it drops host-1's plaintext coming in, and its own going out.
    await reconfigure((h) => ({ peers: false, failClosed: h === h2 }));
    expect(await request(h1.functions[0].ns, v6.fn(2)), 'inbound plaintext from a non-peer').toBe('timeout');
    expect(await request(h2.functions[0].ns, v6.fn(1)), 'outbound plaintext to a non-peer').toBe('timeout');
    const rules = await mesh.topo.exec(h2.ns, ['ip6tables-save']);
    expect(rules.stdout).toContain(V6_FLEET);
    // Peers again: the tunnel carries it, fail-closed or not.
    await reconfigure(() => ({ peers: true, failClosed: true }));
    await mesh.waitTunnelsUp();
    expect(await request(h1.functions[0].ns, v6.fn(2))).toBe(`to ${h2.functions[0].name}: hello v6`);
    expect(await request(h2.functions[0].ns, v6.fn(1))).toBe(`to ${h1.functions[0].name}: hello v6`);
  }, 60_000);
});
