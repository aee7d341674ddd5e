// The privileges README's "Least privilege" table states, checked: the daemons run as an
// unprivileged uid with CAP_NET_ADMIN as their only capability (ambient and bounding set,
// no new privileges: what systemd/qmesh.service gives them), apply their capture rules at
// start and on reload themselves, and carry traffic; without the capability, start fails
// on the rules with a message naming it; without it and with capture.applyRules=false
// (rules installed by root beforehand), traffic flows and delivery goes on unmarked with
// one warning, but /healthz answers 503 since the daemon cannot read its rules.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, sleep } from '../../daemon/demo/mesh.js';
import { daemonOf, destroyMesh, logOf, startMesh, waitLog, type HostInfo, type Mesh } from '../support/e2e-mesh.js';
import { FnServer, fnClient, waitFor } from '../support/fn-net.js';
import { requireTool } from '../support/tools.js';

const RPC_PORT = 9300;
const TEST_MS = 45_000;
/** Longer than the daemon's log flush (250 ms) and event pump (20 ms) together, with room. */
const LOG_SETTLE_MS = 1_000;
const NOBODY = 65534;
/** CAP_NET_ADMIN is capability 12. */
const NET_ADMIN_MASK = 1n << 12n;

const setpriv = requireTool('setpriv', 'util-linux');
/** What the unit does: User=, AmbientCapabilities= and CapabilityBoundingSet= of caps, NoNewPrivileges=yes. */
const asNobody = (caps: 'net_admin' | 'none'): string[] => [
  setpriv!, `--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups', '--no-new-privs',
  ...(caps === 'net_admin'
    ? ['--inh-caps=-all,+net_admin', '--ambient-caps=-all,+net_admin', '--bounding-set=-all,+net_admin']
    : ['--inh-caps=-all', '--ambient-caps=-all', '--bounding-set=-all']),
];

let mesh: Mesh;
let h1: HostInfo;
let h2: HostInfo;

/** The daemon's config, certificates and key readable by it alone, as /etc/qmesh is for the qmesh user. */
function handToNobody(dir: string): void {
  const walk = (p: string): void => {
    fs.chownSync(p, NOBODY, NOBODY);
    if (fs.statSync(p).isDirectory()) for (const e of fs.readdirSync(p)) walk(path.join(p, e));
  };
  walk(dir);
}

function procStatus(pid: number): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of fs.readFileSync(`/proc/${pid}/status`, 'utf8').split('\n')) {
    const i = line.indexOf(':');
    if (i > 0) out[line.slice(0, i)] = line.slice(i + 1).trim();
  }
  return out;
}

async function rpc(from: HostInfo, to: HostInfo): Promise<any> {
  const f = to.functions[0]!;
  return fnClient(mesh, from.functions[0]!.ns, 'rpc', { ip: f.ip, port: RPC_PORT, requestBytes: 4096, timeoutMs: 10_000 });
}

const iptablesNat = async (h: HostInfo): Promise<string> => (await mesh.topo.exec(h.ns, ['iptables', '-w', '10', '-t', 'nat', '-S', 'QMESH_OUTPUT'])).stdout;

beforeAll(async () => {
  mesh = await startMesh({ hosts: 2, functionsPerHost: 1 }, false);
  [h1, h2] = mesh.hosts as [HostInfo, HostInfo];
  handToNobody(mesh.dir);
  for (const h of mesh.hosts) await mesh.startDaemon(h, 15_000, { wrap: asNobody('net_admin') });
  await mesh.waitTunnelsUp(15_000);
  for (const h of mesh.hosts) {
    const f = h.functions[0]!;
    await FnServer.start(mesh, f.ns, 'rpc', { ip: f.ip, port: RPC_PORT, replyBytes: 64 * 1024 });
  }
}, 90_000);

afterAll(async () => {
  await destroyMesh(mesh);
}, 60_000);

describe('least privilege: the daemon as an unprivileged user with only CAP_NET_ADMIN', () => {
  it('runs as uid 65534 with CAP_NET_ADMIN as its only capability, effective and bounding', () => {
    for (const h of [h1, h2]) {
      const pid = daemonOf(mesh, h).child.pid!;
      // ip netns exec and setpriv both exec: the child's pid is the daemon's node process.
      expect(fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').slice(0, 3), h.name).toEqual([process.execPath, CLI, 'run']);
      const st = procStatus(pid);
      expect(st.Uid!.split(/\s+/), h.name).toEqual([String(NOBODY), String(NOBODY), String(NOBODY), String(NOBODY)]);
      expect(BigInt(`0x${st.CapEff}`), `${h.name} CapEff`).toBe(NET_ADMIN_MASK);
      expect(BigInt(`0x${st.CapBnd}`), `${h.name} CapBnd`).toBe(NET_ADMIN_MASK);
      expect(st.NoNewPrivs, h.name).toBe('1');
    }
  });

  it('applied its own capture rules at start, carries traffic both ways, and sets SO_MARK without a warning', async () => {
    for (const h of [h1, h2]) {
      // Logs reach stdout through a buffer flushed every 250 ms, so wait for the line.
      await waitLog(daemonOf(mesh, h), (e) => e.msg === 'iptables capture rules applied', 5_000, 'rules applied');
      expect(await iptablesNat(h), h.name).toMatch(/-j REDIRECT --to-ports 15001/);
    }
    expect((await rpc(h1, h2)).error).toBeNull();
    expect((await rpc(h2, h1)).error).toBeNull();
    await sleep(LOG_SETTLE_MS); // a warning would have been flushed by now
    for (const h of [h1, h2]) {
      expect(logOf(daemonOf(mesh, h)).filter((e) => /SO_MARK/.test(e.msg ?? '')), h.name).toEqual([]);
    }
  }, TEST_MS);

  it('applies the rules of a reloaded config itself (SIGHUP), still unprivileged', async () => {
    const extra = '198.19.250.0/24';
    const conf = JSON.parse(fs.readFileSync(mesh.configPath(h1), 'utf8'));
    conf.peers[0].cidrs.push(extra);
    fs.writeFileSync(mesh.configPath(h1), JSON.stringify(conf, null, 2));
    const d = daemonOf(mesh, h1);
    const before = logOf(d).length;
    d.child.kill('SIGHUP');
    const outcomes = ['configuration reloaded', 'reload rejected; the running configuration stays'];
    const line = await waitFor(() => logOf(d).slice(before).find((e) => outcomes.includes(e.msg)), 10_000, 'reload outcome');
    expect(line.msg, JSON.stringify(line)).toBe('configuration reloaded');
    expect(await iptablesNat(h1)).toContain(`-d ${extra} -p tcp`);
  }, TEST_MS);

  it('without CAP_NET_ADMIN, refuses to start on the iptables rules and names the capability', async () => {
    await mesh.stopDaemon(h2);
    const err = await mesh.startDaemon(h2, 15_000, { wrap: asNobody('none') }).then(() => null, (e: Error) => e);
    expect(err?.message).toMatch(/exited 1/);
    const d = daemonOf(mesh, h2);
    expect(await d.exited).toBe(1);
    // 'exit' may come before the last of stderr: wait for the line.
    const line = await waitFor(() => d.log.find((l) => l.startsWith('qmesh: ')), 5_000, 'the one stderr line');
    expect(line).toMatch(/^qmesh: QMESH_ERR_IPTABLES: .*Permission denied.*likely fix: run as root or with CAP_NET_ADMIN$/);
  }, TEST_MS);

  it('without CAP_NET_ADMIN and with rules installed beforehand (capture.applyRules=false): carries traffic, delivers unmarked with one warning, but /healthz is 503 (it cannot read the rules)', async () => {
    await mesh.stopDaemon(h2);
    mesh.writeConfig(h2, { configFor: () => ({ capture: { applyRules: false } }) });
    fs.chownSync(mesh.configPath(h2), NOBODY, NOBODY);
    // Never healthy: the drift look cannot read the rules without the capability.
    const err = await mesh.startDaemon(h2, 5_000, { wrap: asNobody('none') }).then(() => null, (e: Error) => e);
    expect(err?.message).toMatch(/not healthy within/);
    const d = daemonOf(mesh, h2);
    await waitLog(d, (e) => e.msg === 'cannot read the iptables rules to look for drift', 5_000, 'the failed look');
    const health = await mesh.admin(h2, '/healthz');
    expect(health.status).toBe(503);
    expect(health.body).toMatch(/^unhealthy:\n  iptables rules: .*Permission denied/);
    await mesh.waitTunnelsUp(15_000);
    // h1 -> h2: h2's daemon delivers to its function from a socket without SO_MARK.
    for (let i = 0; i < 3; i++) expect((await rpc(h1, h2)).error).toBeNull();
    await waitLog(d, (e) => /SO_MARK/.test(e.msg ?? ''), 5_000, 'the SO_MARK warning');
    await sleep(LOG_SETTLE_MS); // and no second one
    const warned = logOf(d).filter((e) => /SO_MARK/.test(e.msg ?? ''));
    expect(warned.map((e) => [e.level, e.msg])).toEqual([['warn', 'cannot set SO_MARK on delivery sockets; continuing unmarked']]);
    // Its outbound side is unaffected: captured connections leave through the tunnel.
    expect((await rpc(h2, h1)).error).toBeNull();
  }, TEST_MS);
});
