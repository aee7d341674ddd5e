// RuleManager against the real iptables, inside network namespaces this file
// creates and deletes: idempotent apply, clean remove, check(), and proof that
// REDIRECT captures TCP (nat OUTPUT and PREROUTING) while uncaptured UDP is dropped.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig, parseConfig } from '../../daemon/config/load.js';
import { RuleManager } from '../../daemon/iptables/manager.js';

const examplePath = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../config/examples/host-1.json');
const id = randomBytes(4).toString('hex');
const NS = `qm-ipt-${id}`; // host-1
const FN = `qm-ipt-${id}-f`; // a function (container) on host-1, 198.19.1.5
const STEP_MS = 15_000;

function bounded<T>(p: Promise<T>, what: string, ms = STEP_MS): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

function run(argv: string[], ms = STEP_MS): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(argv[0]!, argv.slice(1), { timeout: ms }, (err, stdout, stderr) =>
      err ? reject(new Error(`${argv.join(' ')}: ${stderr || err.message}`)) : resolve(stdout),
    );
  });
}
const inNs = (ns: string, argv: string[], ms?: number) => run(['ip', 'netns', 'exec', ns, ...argv], ms);

/** iptables-save without the timestamped comment lines and with counters zeroed. */
const save = async (ns = NS, bin = 'iptables-save') =>
  (await inNs(ns, [bin])).split('\n').filter((l) => !l.startsWith('#')).join('\n').replace(/\[\d+:\d+\]/g, '[0:0]');

/** Packet counters of a chain's rules, in order. */
async function counters(table: string, chain: string): Promise<number[]> {
  const out = await inNs(NS, ['iptables', '-w', '5', '-t', table, '-L', chain, '-v', '-x', '-n']);
  return out.split('\n').slice(2).filter((l) => l.trim() !== '').map((l) => Number(l.trim().split(/\s+/)[0]));
}

const CLIENT = `
const net = require('node:net'), dgram = require('node:dgram');
const [host, port] = process.argv.slice(1);
const tcp = new Promise((done) => {
  const s = net.connect({ host, port: Number(port) });
  let data = '';
  const t = setTimeout(() => { s.destroy(); done('timeout'); }, 1500);
  s.on('data', (c) => (data += c));
  s.on('end', () => { clearTimeout(t); done(data.trim()); });
  s.on('error', (e) => { clearTimeout(t); done('error:' + e.code); });
});
const udp = new Promise((done) => {
  const u = dgram.createSocket(host.includes(':') ? 'udp6' : 'udp4');
  u.send('x', 9, host, (e) => { u.close(); done(e ? 'error:' + e.code : 'sent'); });
});
Promise.all([tcp, udp]).then(([t, u]) => console.log(JSON.stringify({ tcp: t, udp: u })));
`;
const SERVER = `
require('node:net').createServer((s) => s.end('captured ' + s.localAddress + ':' + s.localPort + ' from ' + s.remoteAddress + '\\n'))
  .listen(15001, '0.0.0.0', () => console.log('ready'));
`;
const client = async (ns: string, host: string, port: number) =>
  JSON.parse(await inNs(ns, [process.execPath, '-e', CLIENT, host, String(port)], 5000)) as { tcp: string; udp: string };

describe('RuleManager in a network namespace', () => {
  const config = loadConfig(examplePath);
  const manager = new RuleManager(config, { commandPrefix: ['ip', 'netns', 'exec', NS] });
  let server: ChildProcess | undefined;
  let before = '';
  let applied = '';

  beforeAll(async () => {
    await run(['ip', 'netns', 'add', NS]);
    await run(['ip', 'netns', 'add', FN]);
    for (const argv of [
      ['ip', 'link', 'set', 'dev', 'lo', 'up'],
      // The underlay: this kernel has no dummy links, so a veth pair whose far end leads nowhere;
      // a static neighbour for the peer host lets packets leave without ARP, then vanish.
      ['ip', 'link', 'add', 'd0', 'type', 'veth', 'peer', 'name', 'd1'],
      ['ip', 'link', 'set', 'dev', 'd0', 'up'],
      ['ip', 'link', 'set', 'dev', 'd1', 'up'],
      ['ip', 'addr', 'add', '198.18.0.1/24', 'dev', 'd0'],
      ['ip', 'neigh', 'add', '198.18.0.2', 'lladdr', '02:00:00:00:00:02', 'dev', 'd0'],
      ['ip', 'route', 'add', '198.19.2.0/24', 'via', '198.18.0.2'],
      ['ip', 'link', 'add', 'vh0', 'type', 'veth', 'peer', 'name', 'vf0', 'netns', FN],
      ['ip', 'addr', 'add', '198.19.1.1/24', 'dev', 'vh0'],
      ['ip', 'link', 'set', 'dev', 'vh0', 'up'],
      ['sysctl', '-q', '-w', 'net.ipv4.ip_forward=1'],
      // Rules that are not qmesh's: they must survive apply and remove untouched.
      ['iptables', '-w', '5', '-t', 'filter', '-A', 'INPUT', '-p', 'tcp', '--dport', '2222', '-m', 'comment', '--comment', 'unrelated', '-j', 'ACCEPT'],
      ['iptables', '-w', '5', '-t', 'nat', '-A', 'POSTROUTING', '-o', 'd0', '-m', 'comment', '--comment', 'unrelated', '-j', 'RETURN'],
    ]) await inNs(NS, argv);
    for (const argv of [
      ['ip', 'link', 'set', 'dev', 'lo', 'up'],
      ['ip', 'addr', 'add', '198.19.1.5/24', 'dev', 'vf0'],
      ['ip', 'link', 'set', 'dev', 'vf0', 'up'],
      ['ip', 'route', 'add', 'default', 'via', '198.19.1.1'],
    ]) await inNs(FN, argv);
    before = await save();
    server = spawn('ip', ['netns', 'exec', NS, process.execPath, '-e', SERVER], { stdio: ['ignore', 'pipe', 'inherit'] });
    await bounded(new Promise<void>((resolve) => server!.stdout!.once('data', () => resolve())), 'capture server start');
  }, 60_000);

  afterAll(async () => {
    if (server?.pid !== undefined && server.exitCode === null) server.kill('SIGTERM');
    await run(['ip', 'netns', 'del', FN]).catch(() => undefined);
    await run(['ip', 'netns', 'del', NS]).catch(() => undefined);
  }, 30_000);

  it('without rules, TCP to a peer CIDR is not captured', async () => {
    expect(await client(NS, '198.19.2.7', 80)).toEqual({ tcp: 'timeout', udp: 'sent' });
    expect((await bounded(manager.check(), 'check')).missing.length).toBeGreaterThan(0);
  });

  it('apply twice gives identical iptables-save output and leaves other rules alone', async () => {
    expect(await bounded(manager.backend(), 'backend')).toBe('nft');
    await bounded(manager.apply(), 'apply 1');
    applied = await save();
    await bounded(manager.apply(), 'apply 2');
    expect(await save()).toBe(applied);
    expect(applied).toContain('-A INPUT -p tcp -m tcp --dport 2222 -m comment --comment unrelated -j ACCEPT');
    expect(applied).toContain('-A POSTROUTING -o d0 -m comment --comment unrelated -j RETURN');
    expect(applied).toMatch(/^-A OUTPUT -m comment --comment "qmesh: capture TCP from host processes to peers" -j QMESH_OUTPUT$/m);
    expect(await bounded(manager.check(), 'check')).toEqual({ missing: [] });
  });

  it('captures TCP from host processes (nat OUTPUT); filter OUTPUT drops only the uncaptured UDP', async () => {
    const drops = (await counters('filter', 'QMESH_OUTPUT'))[0]!;
    const result = await client(NS, '198.19.2.7', 80);
    expect(result.tcp).toBe('captured 127.0.0.1:15001 from 198.18.0.1');
    expect(result.udp).toBe('error:EPERM'); // a DROP in OUTPUT fails sendmsg() locally
    // Exactly one packet hit the DROP: the REDIRECTed TCP reached filter OUTPUT already rewritten to 127.0.0.1.
    expect((await counters('filter', 'QMESH_OUTPUT'))[0]).toBe(drops + 1);
    // The capture port takes only redirected connections.
    expect((await client(NS, '198.18.0.1', 15001)).tcp).toBe('error:ECONNREFUSED');
  });

  it('captures TCP from a function namespace (nat PREROUTING); FORWARD drops its UDP', async () => {
    const drops = (await counters('filter', 'QMESH_FORWARD'))[0]!;
    const result = await client(FN, '198.19.2.7', 80);
    expect(result).toEqual({ tcp: 'captured 198.19.1.1:15001 from 198.19.1.5', udp: 'sent' });
    expect((await counters('filter', 'QMESH_FORWARD'))[0]).toBe(drops + 1);
    expect((await client(FN, '198.19.1.1', 15001)).tcp).toBe('error:ECONNREFUSED');
  });

  it('check() sees drift and apply() repairs it', async () => {
    const ipt = (...args: string[]) => inNs(NS, ['iptables', '-w', '5', ...args]);
    await ipt('-t', 'nat', '-D', 'QMESH_OUTPUT', '1');
    await ipt('-t', 'filter', '-A', 'FORWARD', '-j', 'QMESH_FORWARD', '-m', 'comment', '--comment', 'qmesh: fail closed for traffic routed between functions');
    await ipt('-t', 'filter', '-I', 'INPUT', '1', '-p', 'tcp', '--dport', '2223', '-j', 'ACCEPT');
    const { missing } = await bounded(manager.check(), 'check');
    expect(missing.join('\n')).toMatch(/nat QMESH_OUTPUT: rule missing: .*--mark 0x51e5/);
    expect(missing.join('\n')).toMatch(/filter FORWARD: 2 jumps to QMESH_FORWARD/);
    expect(missing.join('\n')).toMatch(/filter INPUT: jump to QMESH_INPUT is rule 2, not the first/);
    await bounded(manager.apply(), 'apply');
    expect(await bounded(manager.check(), 'check')).toEqual({ missing: [] });
    await ipt('-t', 'filter', '-D', 'INPUT', '-p', 'tcp', '--dport', '2223', '-j', 'ACCEPT');
    expect(await save()).toBe(applied);
  });

  it('the print() script, pasted twice, installs what apply() does', async () => {
    await bounded(manager.remove(), 'remove');
    const script = manager.print();
    await inNs(NS, ['sh', '-c', script]);
    await inNs(NS, ['sh', '-c', script]);
    expect(await save()).toBe(applied);
  });

  it('remove() restores the state before apply, twice; check() then reports what is missing', async () => {
    await bounded(manager.remove(), 'remove 1');
    expect(await save()).toBe(before);
    await bounded(manager.remove(), 'remove 2');
    expect(await save()).toBe(before);
    const { missing } = await bounded(manager.check(), 'check');
    expect(missing).toContain('iptables-nft nat QMESH_OUTPUT: chain does not exist');
    expect(missing).toContain('iptables-nft filter INPUT: jump to QMESH_INPUT is missing');
  });

  it('IPv6 rules install, check clean and remove with ip6tables', async () => {
    const raw = JSON.parse(fs.readFileSync(examplePath, 'utf8')) as Record<string, any>;
    const v6 = parseConfig({
      ...raw,
      listen: { ...raw.listen, quic: '[fd00:18::1]:4433' },
      local: { cidrs: ['fd00:19:1::/64'] },
      peers: [{ name: 'host-2', endpoint: '[fd00:18::2]:4433', cidrs: ['fd00:19:2::/64'] }],
    }, examplePath);
    const m6 = new RuleManager(v6, { commandPrefix: ['ip', 'netns', 'exec', NS] });
    const before6 = await save(NS, 'ip6tables-save');
    await bounded(m6.apply(), 'apply v6');
    expect(await save(NS, 'ip6tables-save')).toMatch(/-A QMESH_INPUT -p tcp -m tcp --dport 15001 -m conntrack ! --ctstate DNAT .* -j REJECT --reject-with tcp-reset/);
    expect(await bounded(m6.check(), 'check v6')).toEqual({ missing: [] });
    await bounded(m6.remove(), 'remove v6');
    expect((await save(NS, 'ip6tables-save')).includes('QMESH')).toBe(false);
    expect(before6.includes('QMESH')).toBe(false);
  });

  it('a family the config stops using loses its chains and jumps; the other family keeps its rules', async () => {
    const raw = JSON.parse(fs.readFileSync(examplePath, 'utf8')) as Record<string, any>;
    const dual = parseConfig({
      ...raw,
      local: { cidrs: [...raw.local.cidrs, 'fd00:19:1::/64'] },
      peers: raw.peers.map((p: any, i: number) => (i === 0 ? { ...p, cidrs: [...p.cidrs, 'fd00:19:2::/64'] } : p)),
    }, examplePath);
    const v6only = parseConfig({
      ...raw,
      listen: { ...raw.listen, quic: '[fd00:18::1]:4433' },
      local: { cidrs: ['fd00:19:1::/64'] },
      peers: [{ name: 'host-2', endpoint: '[fd00:18::2]:4433', cidrs: ['fd00:19:2::/64'] }],
    }, examplePath);
    const prefix = { commandPrefix: ['ip', 'netns', 'exec', NS] };
    await bounded(new RuleManager(dual, prefix).apply(), 'apply dual-stack');
    expect(await save(NS, 'ip6tables-save')).toContain('-j QMESH_PREROUTING');
    await bounded(manager.apply(), 'apply IPv4 only');
    expect((await save(NS, 'ip6tables-save')).includes('QMESH')).toBe(false);
    expect(await bounded(manager.check(), 'check v4')).toEqual({ missing: [] });
    await bounded(new RuleManager(v6only, prefix).apply(), 'apply IPv6 only');
    expect((await save()).includes('QMESH')).toBe(false);
    expect(await save(NS, 'ip6tables-save')).toContain('-j QMESH_PREROUTING');
    await bounded(new RuleManager(v6only, prefix).remove(), 'remove');
    expect((await save(NS, 'ip6tables-save')).includes('QMESH')).toBe(false);
  });

  it('the legacy backend is used when asked, and detected where only legacy holds rules', async () => {
    const legacy = new RuleManager(config, { commandPrefix: ['ip', 'netns', 'exec', NS], backend: 'legacy' });
    await bounded(legacy.apply(), 'apply legacy');
    expect(await save(NS, 'iptables-legacy-save')).toContain(':QMESH_PREROUTING - [0:0]');
    expect(await save()).toBe(before); // nothing went to nf_tables
    expect(await bounded(legacy.check(), 'check legacy')).toEqual({ missing: [] });
    await bounded(legacy.remove(), 'remove legacy');
    expect(await save(NS, 'iptables-legacy-save')).not.toContain('QMESH');

    const inFn = { commandPrefix: ['ip', 'netns', 'exec', FN] };
    expect(await bounded(new RuleManager(config, inFn).backend(), 'detect')).toBe('nft');
    await inNs(FN, ['iptables-legacy', '-w', '5', '-A', 'INPUT', '-p', 'tcp', '--dport', '2222', '-j', 'ACCEPT']);
    expect(await bounded(new RuleManager(config, inFn).backend(), 'detect')).toBe('legacy');
  });
});
