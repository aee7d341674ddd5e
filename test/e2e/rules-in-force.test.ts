// The iptables rules always match the config in force (#14 §1-§3), with real
// namespaces, real iptables and real daemons. host-1's daemon runs as the shipped
// unit runs it: its User=, capabilities and Environment= lines (read from
// systemd/qmesh.service), after the unit's privileged ExecStartPre has applied the
// rules. Cases: a peer added by editing the file is captured and tunnelled (the
// underlay sees no TCP to its CIDR); a reload whose rules cannot be applied keeps
// the old config and rules; 100 rule changes in a row while clients connect
// without pause leave no plaintext and refuse nothing; a deleted jump is seen
// within two check intervals and put back, or, without capture.applyRules,
// reported by /healthz (503), a metric and the log.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI } from '../../daemon/demo/mesh.js';
import { loadConfig, type Config } from '../../daemon/config/load.js';
import { RuleManager } from '../../daemon/iptables/manager.js';
import { Cidr } from '../../daemon/policy/cidr.js';
import { daemonOf, destroyMesh, logOf, outboundState, startMesh, type HostInfo, type Mesh } from '../support/e2e-mesh.js';
import { FnServer, fnClient, plaintextMarker, sleep, waitFor } from '../support/fn-net.js';
import { unitDirective } from '../support/unit-file.js';
import { WireCapture } from '../support/wire-capture.js';

const CHECK_MS = 1_000;
const RPC_PORT = 7301;
const ECHO_PORT = 7302;

let mesh: Mesh;
let h1: HostInfo;
let h2: HostInfo;
let h3: HostInfo;
/** A directory first on host-1's PATH whose iptables-nft-restore fails while FAIL_FLAG exists. */
let stubDir: string;
let failFlag: string;

const unitValues = unitDirective;

/** setpriv argv dropping to the unit's User=, CapabilityBoundingSet=, AmbientCapabilities= and NoNewPrivileges=. */
function asTheUnit(): { wrap: string[]; env: NodeJS.ProcessEnv } {
  const [user] = unitValues('User');
  const caps = (key: string): string => (unitValues(key)[0] ?? '').split(/\s+/).filter(Boolean).map((c) => `+${c.replace(/^CAP_/, '').toLowerCase()}`).join(',');
  const env: NodeJS.ProcessEnv = {};
  for (const line of unitValues('Environment')) {
    const [k, ...v] = line.split('=');
    env[k!] = v.join('=');
  }
  const wrap = [
    'setpriv', `--reuid=${user}`, `--regid=${user}`, '--clear-groups',
    `--inh-caps=-all,${caps('AmbientCapabilities')}`, `--ambient-caps=-all,${caps('AmbientCapabilities')}`,
    `--bounding-set=-all,${caps('CapabilityBoundingSet')}`,
    ...(unitValues('NoNewPrivileges')[0] === 'yes' ? ['--no-new-privs'] : []),
  ];
  return { wrap, env };
}

const iptables = async (h: HostInfo, args: string[]): Promise<string> => {
  const r = await mesh.topo.exec(h.ns, ['iptables', ...args]);
  if (r.code !== 0) throw new Error(`iptables ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
};
const qmesh = (h: HostInfo, args: string[]) => mesh.topo.exec(h.ns, [process.execPath, CLI, ...args, '--config', mesh.configPath(h)]);
const mark = (h: HostInfo): number => daemonOf(mesh, h).log.length;
const waitLogAfter = (h: HostInfo, from: number, pred: (e: any) => boolean, ms: number, what: string): Promise<any> =>
  waitFor(() => logOf(daemonOf(mesh, h)).slice(from).find(pred), ms, `${h.name} log: ${what}`, 50);
const rpc = (from: HostInfo, to: HostInfo, marker?: string) =>
  fnClient(mesh, from.functions[0]!.ns, 'rpc', { ip: to.functions[0]!.ip, port: RPC_PORT, requestBytes: 300, timeoutMs: 8_000, ...(marker ? { marker } : {}) });
const rpcOk = (r: any): boolean => r.error === null && r.replyBytes === 512 && r.gotEnd;
const metric = (text: string, name: string): number => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1] ?? NaN);

/**
 * host-1 starts knowing only host-2; the others know everyone. host-1 and host-3 look for drift
 * every second; host-2 hardly ever, as the atomicity case rewrites its rules from outside.
 */
const withoutHost3 = (h: HostInfo): Record<string, unknown> => ({
  capture: { ruleCheckIntervalMs: h === h2 ? 3_600_000 : CHECK_MS, ...(h === h3 ? { applyRules: false } : {}) },
  ...(h === h1 ? { peers: mesh.baseConfig(h).peers.filter((p: any) => p.name !== h3.name) } : {}),
});

beforeAll(async () => {
  const user = unitValues('User')[0]!;
  if (spawnSync('id', [user]).status !== 0) {
    const r = spawnSync('useradd', ['--system', '--no-create-home', '--shell', '/usr/sbin/nologin', user], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`useradd ${user}: ${r.stderr}`);
  }
  mesh = await startMesh({ hosts: 3, functionsPerHost: 1 }, false);
  [h1, h2, h3] = mesh.hosts as [HostInfo, HostInfo, HostInfo];
  for (const h of mesh.hosts) mesh.writeConfig(h, { configFor: withoutHost3 });
  // The unit's user reads the config and certificates (in /etc/qmesh on a host); here the mesh folder.
  spawnSync('chown', ['-R', `${user}:${user}`, mesh.dir]);
  stubDir = path.join(mesh.dir, 'stub-bin');
  failFlag = path.join(mesh.dir, 'fail-restore');
  fs.mkdirSync(stubDir);
  for (const bin of ['iptables-nft-restore', 'iptables-restore']) {
    const real = spawnSync('sh', ['-c', `command -v ${bin}`], { encoding: 'utf8' }).stdout.trim();
    fs.writeFileSync(path.join(stubDir, bin), `#!/bin/sh\nif [ -e ${failFlag} ]; then echo "stub: ${bin} refused (test)" >&2; exit 4; fi\nexec ${real} "$@"\n`, { mode: 0o755 });
  }
  spawnSync('chmod', ['o+x', mesh.dir]);
  for (const h of mesh.hosts) {
    await FnServer.start(mesh, h.functions[0]!.ns, 'rpc', { ip: h.functions[0]!.ip, port: RPC_PORT, replyBytes: 512 });
    await FnServer.start(mesh, h.functions[0]!.ns, 'echo', { ip: h.functions[0]!.ip, port: ECHO_PORT });
  }

  // host-1 as the unit starts it: the privileged ExecStartPre applies the rules, then the daemon runs unprivileged.
  const pre = await qmesh(h1, ['iptables', 'apply']);
  if (pre.code !== 0) throw new Error(`ExecStartPre iptables apply: ${pre.stderr}`);
  const unit = asTheUnit();
  await mesh.startDaemon(h1, 15_000, { wrap: unit.wrap, env: { ...unit.env, PATH: `${stubDir}:${process.env.PATH ?? ''}` } });
  await mesh.startDaemon(h2);
  const h3Rules = await qmesh(h3, ['iptables', 'apply']); // host-3 has capture.applyRules false: its operator applies them
  if (h3Rules.code !== 0) throw new Error(`iptables apply on host-3: ${h3Rules.stderr}`);
  await mesh.startDaemon(h3);
  // host-3's tunnel to host-1 stays down until host-1 learns of host-3.
  for (const [a, b] of [[h1, h2], [h2, h1], [h2, h3], [h3, h2]] as const) {
    await waitFor(async () => (await outboundState(mesh, a, b)) === 'up' || undefined, 15_000, `${a.name} -> ${b.name} up`);
  }
}, 120_000);

afterAll(async () => {
  await destroyMesh(mesh);
}, 60_000);

describe('the rules follow every reload, under the unit\'s user and capabilities', () => {
  it('runs as the unit\'s user with only its capabilities', async () => {
    const pid = daemonOf(mesh, h1).child.pid!;
    const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    const uid = Number(/^Uid:\s+(\d+)/m.exec(status)?.[1]);
    expect(uid).not.toBe(0);
    expect(/^CapEff:\s+(\S+)/m.exec(status)?.[1]).toBe('0000000000001000'); // CAP_NET_ADMIN (12) only
  });

  it('a peer added by editing the file is captured at once: its traffic crosses the underlay as QUIC only', async () => {
    const wire = await WireCapture.start(mesh);
    const marker = plaintextMarker('added-peer');
    const from = mark(h1);
    mesh.writeConfig(h1, { configFor: (h) => ({ capture: { ruleCheckIntervalMs: CHECK_MS }, peers: mesh.baseConfig(h).peers }) });
    const reloaded = await waitLogAfter(h1, from, (e) => e.msg === 'configuration reloaded' || e.msg?.startsWith('reload rejected'), 15_000, 'reload');
    expect(reloaded.msg).toBe('configuration reloaded');
    expect(reloaded.rulesApplied).toBe(true);
    const results = [];
    for (let i = 0; i < 5; i++) results.push(await rpc(h1, h3, marker));
    await wire.stop();
    expect(results.every(rpcOk), JSON.stringify(results)).toBe(true);
    const summary = await wire.summarize(mesh.hosts.map((h) => h.underlayIp), 4433);
    expect(summary.tcp).toEqual([]);
    expect(wire.contains(marker)).toBe(false);
    expect(summary.quicPackets).toBeGreaterThan(0);
    expect((await qmesh(h1, ['iptables', 'check'])).code).toBe(0); // the installed rules are the new config's
  }, 40_000);

  it('a reload whose rules cannot be applied is refused: the old config and the old rules stay', async () => {
    const before = await iptables(h1, ['-t', 'nat', '-S']);
    fs.writeFileSync(failFlag, '');
    try {
      const from = mark(h1);
      mesh.writeConfig(h1, { configFor: withoutHost3 }); // drops host-3 again
      const refused = await waitLogAfter(h1, from, (e) => e.msg === 'configuration reloaded' || e.msg?.startsWith('reload rejected'), 15_000, 'reload');
      expect(refused.msg).toBe('reload rejected; the running configuration stays');
      expect(refused.reason).toMatch(/iptables: .*stub: iptables(-nft)?-restore refused/s);
      expect(await iptables(h1, ['-t', 'nat', '-S'])).toBe(before);
      const status = await mesh.status(h1);
      expect(status.peers.map((p: any) => p.name)).toContain(h3.name);
      expect(rpcOk(await rpc(h1, h3))).toBe(true);
    } finally {
      fs.rmSync(failFlag, { force: true });
    }
    const from = mark(h1);
    daemonOf(mesh, h1).child.kill('SIGHUP');
    const applied = await waitLogAfter(h1, from, (e) => e.msg === 'configuration reloaded', 15_000, 'configuration reloaded');
    expect(applied.peers).toEqual([h2.name]);
    expect((await qmesh(h1, ['iptables', 'check'])).code).toBe(0);
    expect(await iptables(h1, ['-t', 'nat', '-S'])).not.toMatch(new RegExp(h3.functionCidr.replace(/\./g, '\\.')));
  }, 40_000);
});

describe('rule changes are atomic', () => {
  it('100 applies in a row while clients connect without pause: no plaintext, no refused connection', async () => {
    // host-2's rules alternate between its config and one with an extra CIDR for host-1, so
    // every apply rewrites every chain. host-2's own drift look is slowed down so it does not join in.
    const current: Config = loadConfig(mesh.configPath(h2));
    const withExtra: Config = { ...current, peers: current.peers.map((p) => (p.name === h1.name ? { ...p, cidrs: [...p.cidrs, Cidr.parse('203.0.113.0/24')] } : p)) };
    const managers = [new RuleManager(withExtra, { commandPrefix: ['ip', 'netns', 'exec', h2.ns] }), new RuleManager(current, { commandPrefix: ['ip', 'netns', 'exec', h2.ns] })];
    const wire = await WireCapture.start(mesh);
    // In the sending function's namespace: a SYN seen twice was dropped once (a rule change left a gap).
    const fnWire = await WireCapture.start(mesh, { ns: h2.functions[0]!.ns, iface: 'eth0', name: 'fn' });
    const marker = plaintextMarker('atomic');
    let applying = true;
    const rounds: any[] = [];
    const load = (async () => {
      while (applying) {
        rounds.push({ many: await fnClient(mesh, h2.functions[0]!.ns, 'many', { targets: [{ ip: h1.functions[0]!.ip, port: ECHO_PORT }], count: 10, minBytes: 16, maxBytes: 64, timeoutMs: 10_000 }) });
        rounds.push({ rpc: await rpc(h2, h1, marker) });
      }
    })();
    await sleep(300);
    for (let i = 0; i < 100; i++) await managers[i % 2]!.apply();
    applying = false;
    await load;
    await wire.stop();
    await fnWire.stop();
    const synRetransmits = await retransmittedSyns(fnWire);
    const summary = await wire.summarize(mesh.hosts.map((h) => h.underlayIp), 4433);
    expect(summary.tcp).toEqual([]);
    expect(wire.contains(marker)).toBe(false);
    expect(fnWire.dropped).toBe(0);
    expect(synRetransmits.length, `SYNs dropped by a gap: ${synRetransmits.slice(0, 5).join(", ")}`).toBe(0);
    const rpcs = rounds.filter((r) => r.rpc).map((r) => r.rpc);
    const many = rounds.filter((r) => r.many).map((r) => r.many);
    expect(rpcs.length).toBeGreaterThan(3);
    expect(rpcs.filter((r) => !rpcOk(r))).toEqual([]);
    expect(many.filter((r) => r.failed !== 0 || r.ok !== 10)).toEqual([]);
    console.log(`FIGURE rules-atomic applies=100 connections=${many.length * 10 + rpcs.length} synRetransmits=${synRetransmits.length} underlayTcp=${summary.tcp.length}`);
    expect((await qmesh(h2, ['iptables', 'check'])).code).toBe(0);
  }, 120_000);
});


/** SYNs (no ACK) seen more than once with the same source port and sequence number: each was dropped at least once. */
async function retransmittedSyns(cap: WireCapture): Promise<string[]> {
  const r = spawnSync('tcpdump', ['-r', cap.file, '-nn', 'tcp[tcpflags] & (tcp-syn|tcp-ack) == tcp-syn'], { encoding: 'utf8', maxBuffer: 64 << 20 });
  const seen = new Map<string, number>();
  for (const line of r.stdout.split('\n')) {
    const m = /IP (\S+) > (\S+): Flags \[S\], seq (\d+)/.exec(line);
    if (m) seen.set(`${m[1]} > ${m[2]} seq ${m[3]}`, (seen.get(`${m[1]} > ${m[2]} seq ${m[3]}`) ?? 0) + 1);
  }
  return [...seen].filter(([, n]) => n > 1).map(([k, n]) => `${k} x${n}`);
}

describe('drift is noticed', () => {
  const jumpOf = async (h: HostInfo): Promise<string[]> => (await iptables(h, ['-t', 'nat', '-S', 'PREROUTING'])).split('\n').filter((l) => l.includes('-j QMESH_PREROUTING'));

  it('a deleted jump is seen within two check intervals and put back (capture.applyRules, unprivileged daemon)', async () => {
    const from = mark(h1);
    const before = metric(await mesh.admin(h1, '/metrics').then((r) => r.body), 'qmesh_iptables_repairs_total');
    await iptables(h1, ['-t', 'nat', '-D', 'PREROUTING', '1']);
    expect(await jumpOf(h1)).toEqual([]);
    const deleted = Date.now();
    const drift = await waitLogAfter(h1, from, (e) => e.msg?.startsWith('iptables rules drifted'), 2 * CHECK_MS + 1_500, 'drift seen');
    expect(drift.missing.join('\n')).toMatch(/nat PREROUTING: jump to QMESH_PREROUTING is missing/);
    await waitLogAfter(h1, from, (e) => e.msg === 'iptables rules repaired', 5_000, 'repaired');
    expect(Date.now() - deleted).toBeLessThan(2 * CHECK_MS + 3_000);
    const rules = (await iptables(h1, ['-t', 'nat', '-S', 'PREROUTING'])).split('\n').filter((l) => l.startsWith('-A'));
    expect(rules[0]).toMatch(/-j QMESH_PREROUTING$/);
    const metrics = (await mesh.admin(h1, '/metrics')).body;
    expect(metric(metrics, 'qmesh_iptables_repairs_total')).toBe(before + 1);
    expect(metric(metrics, 'qmesh_iptables_drift_total')).toBeGreaterThanOrEqual(1);
    expect(metric(metrics, 'qmesh_iptables_rules_ok')).toBe(1);
    expect((await mesh.admin(h1, '/healthz')).status).toBe(200);
    expect(rpcOk(await rpc(h1, h2))).toBe(true);
  }, 30_000);

  it('without capture.applyRules, a deleted jump turns /healthz 503 naming it, until the operator applies the rules', async () => {
    expect((await mesh.admin(h3, '/healthz')).status).toBe(200);
    const from = mark(h3);
    await iptables(h3, ['-t', 'nat', '-D', 'PREROUTING', '1']);
    const logged = await waitLogAfter(h3, from, (e) => e.msg?.startsWith('iptables rules drifted'), 2 * CHECK_MS + 1_500, 'drift seen');
    expect(logged.level).toBe('error'); // nothing will put them back
    const health = await mesh.admin(h3, '/healthz');
    expect(health.status).toBe(503);
    expect(health.body).toMatch(/iptables rule drift: .*nat PREROUTING: jump to QMESH_PREROUTING is missing/);
    const metrics = (await mesh.admin(h3, '/metrics')).body;
    expect(metric(metrics, 'qmesh_iptables_rules_ok')).toBe(0);
    expect(metric(metrics, 'qmesh_iptables_drift_total')).toBeGreaterThanOrEqual(1);
    expect(await jumpOf(h3)).toEqual([]); // not put back
    expect((await mesh.status(h3)).rules.missing.join('\n')).toMatch(/jump to QMESH_PREROUTING is missing/);
    expect((await qmesh(h3, ['iptables', 'apply'])).code).toBe(0);
    await waitFor(async () => (await mesh.admin(h3, '/healthz')).status === 200 || undefined, 5_000, 'healthz 200 again');
    await waitLogAfter(h3, from, (e) => e.msg === 'iptables rules are in place again', 2 * CHECK_MS + 1_500, 'in place again');
  }, 30_000);
});
