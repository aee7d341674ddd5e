// The ansible role (ansible/) end to end: ansible-playbook (Debian's ansible) renders three
// hosts, each into its own root folder (local connection, qmesh_manage_service false), with
// the underlay addresses and function CIDRs of a Mesh; the three daemons then run in the
// Mesh's host namespaces from exactly the rendered files (config, certificates, and the
// installed package's CLI), and every function reaches every other one. A second run
// changes nothing. Then a fourth host joins the inventory: a re-run changes the three old
// configs (and installs the new host), SIGHUP (what the role's reload handler sends) makes
// the old daemons take the new peer (same processes), and all four hosts reach each other.
// Then certificates due for renewal are re-issued and the hosts reload onto them. Last,
// qmesh_fail_closed_cidrs: rendered as capture.failClosedCidrs, taken on reload, and gone again
// (byte for byte the config of before) when unset.
// Separately (no namespaces): two hosts rendered with etcd membership (the operator's etcd
// client certificates, made here with openssl), the checks that stop such a play early, and
// what restarts there (a host's function CIDRs) and what only reloads with file membership.
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ADMIN_PORT } from '../../daemon/demo/mesh.js';
import { daemonOf, destroyMesh, startMesh, type HostInfo, type Mesh, type RunningDaemon } from '../support/e2e-mesh.js';
import { FnServer, fnClient, waitFor } from '../support/fn-net.js';
import { skipUnlessTool } from '../support/tools.js';

const REPO = fileURLToPath(new URL('../..', import.meta.url));
const ANSIBLE_DIR = path.join(REPO, 'ansible');
const ECHO_PORT = 7300;
const PLAYBOOK_MS = 240_000;
const OUTPUT = Symbol('ansible-playbook output');
/** The hosts each handler was notified for, e.g. { 'Reload qmesh': ['host-1'] } (ansible prints one block per handler, a line per host). */
function handlersRun(out: string): Record<string, string[]> {
  const runs: Record<string, string[]> = {};
  for (const block of out.split(/^RUNNING HANDLER \[qmesh : /m).slice(1)) {
    const name = block.slice(0, block.indexOf(']'));
    const body = block.split(/^(?:PLAY|TASK|RUNNING)/m)[0]!;
    runs[name] = [...body.matchAll(/^(?:ok|changed|skipping): \[([^\]]+)\]/gm)].map((m) => m[1]!).sort();
  }
  return runs;
}
/** Per host, the tasks and handlers that reported "changed" in a playbook's output. */
function changedTasks(out: string): Record<string, string[]> {
  const changed: Record<string, string[]> = {};
  for (const block of out.split(/^(?=TASK \[|RUNNING HANDLER \[)/m).slice(1)) {
    const name = block.slice(block.indexOf('[') + 1, block.indexOf(']'));
    for (const m of block.matchAll(/^changed: \[([^\]]+)\]/gm)) (changed[m[1]!] ??= []).push(name);
  }
  return changed;
}
const hasAnsible = !skipUnlessTool('ansible-playbook', 'ansible-core');
const hasOpenssl = !skipUnlessTool('openssl', 'openssl');

let mesh: Mesh;
let work: string;
/** What the inventory needs of a host (a Mesh's HostInfo, or a made-up one where nothing runs). */
type InventoryHost = Pick<HostInfo, 'name' | 'underlayIp' | 'functionCidr'> & { vars?: Record<string, unknown> };
const rootOf = (h: Pick<HostInfo, 'name'>): string => path.join(work, 'roots', h.name);
const configOf = (h: Pick<HostInfo, 'name'>): string => path.join(rootOf(h), 'etc/qmesh/config.json');

/** The inventory of `hosts`: a local connection, each host rendered into its own root folder. */
function writeInventory(hosts: readonly InventoryHost[]): string {
  const inventory = {
    qmesh: {
      hosts: Object.fromEntries(
        hosts.map((h) => [h.name, { qmesh_root: rootOf(h), qmesh_underlay_ip: h.underlayIp, qmesh_function_cidrs: [h.functionCidr], ...h.vars }]),
      ),
      vars: {
        ansible_connection: 'local',
        ansible_become: false,
        ansible_python_interpreter: '/usr/bin/python3',
        qmesh_source_dir: REPO,
        qmesh_control_dir: path.join(work, 'control'),
        qmesh_control_node: process.execPath,
        qmesh_manage_service: false,
        qmesh_manage_user: false,
        qmesh_install_packages: false,
        qmesh_user: 'root',
        qmesh_group: 'root',
      },
    },
  };
  const file = path.join(work, 'inventory.yml');
  fs.writeFileSync(file, JSON.stringify(inventory, null, 2)); // JSON is YAML
  return file;
}

type Recap = Record<string, { ok: number; changed: number; failed: number }>;

/** Runs site.yml (with `extraVars` as -e JSON); resolves with its exit code and output. */
async function runPlaybook(hosts: readonly InventoryHost[], extraVars: Record<string, unknown> = {}): Promise<{ code: number | null; out: string }> {
  const inventory = writeInventory(hosts);
  const child = spawn('ansible-playbook', ['-i', inventory, '-e', JSON.stringify(extraVars), 'site.yml'], {
    cwd: ANSIBLE_DIR,
    env: { ...process.env, ANSIBLE_NOCOLOR: '1', ANSIBLE_PIPELINING: '1', ANSIBLE_RETRY_FILES_ENABLED: '0', ANSIBLE_LOCAL_TEMP: path.join(work, 'ansible-tmp'), ANSIBLE_REMOTE_TEMP: path.join(work, 'ansible-tmp') },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout.on('data', (b: Buffer) => (out += b.toString()));
  child.stderr.on('data', (b: Buffer) => (out += b.toString()));
  const code = await new Promise<number | null>((r) => child.once('exit', r));
  return { code, out };
}

/** Runs site.yml (with `extraVars` as -e JSON); resolves with the PLAY RECAP counters per host and the output (throws on failure). */
async function playbook(hosts: readonly InventoryHost[], extraVars: Record<string, unknown> = {}): Promise<Recap & { [OUTPUT]?: string }> {
  const { code, out } = await runPlaybook(hosts, extraVars);
  if (code !== 0) throw new Error(`ansible-playbook exited ${code}:\n${out.slice(-4000)}`);
  const recap: Recap & { [OUTPUT]?: string } = {};
  recap[OUTPUT] = out;
  for (const m of out.matchAll(/^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=\d+\s+failed=(\d+)/gm)) {
    recap[m[1]!] = { ok: Number(m[2]), changed: Number(m[3]), failed: Number(m[4]) };
  }
  return recap;
}

/** `qmesh run` in the host's namespace, from the rendered root: its installed CLI and its config. */
async function startRendered(h: HostInfo): Promise<RunningDaemon> {
  const cli = path.join(rootOf(h), 'usr/local/bin/qmesh');
  const child = mesh.topo.spawn(h.ns, [process.execPath, cli, 'run', '--config', configOf(h)], { stdio: ['ignore', 'pipe', 'pipe'] });
  const log: string[] = [];
  const collect = (b: Buffer): void => {
    for (const line of b.toString().split('\n')) if (line) log.push(line);
  };
  child.stdout?.on('data', collect);
  child.stderr?.on('data', collect);
  const exited = new Promise<number | null>((r) => child.once('exit', (c) => r(c)));
  const d: RunningDaemon = { host: h, child, log, exited };
  mesh.daemons.set(h.name, d); // mesh.destroy() stops it
  await waitFor(
    async () => {
      if (child.exitCode !== null) throw new Error(`qmesh on ${h.name} exited ${child.exitCode}: ${log.slice(-5).join('\n')}`);
      return (await mesh.admin(h, '/healthz')).status === 200;
    },
    15_000,
    `${h.name} healthy (admin ${ADMIN_PORT})`,
  );
  return d;
}

/** What the role's Reload handler does on a real host: SIGHUP; then wait for the daemon's "configuration reloaded". */
async function sighupAndWait(h: HostInfo): Promise<void> {
  const d = daemonOf(mesh, h);
  const mark = d.log.length;
  d.child.kill('SIGHUP');
  await waitFor(() => d.log.slice(mark).some((l) => l.includes('"configuration reloaded"')), 10_000, `${h.name} reloads`);
}

/** Every function reaches every other host's function through the tunnels. */
async function allPairs(hosts: readonly HostInfo[]): Promise<void> {
  const failures: string[] = [];
  for (const a of hosts) {
    for (const b of hosts) {
      if (a === b) continue;
      const fa = a.functions[0]!;
      const fb = b.functions[0]!;
      const r = await fnClient(mesh, fa.ns, 'rpc', { ip: fb.ip, port: ECHO_PORT, requestBytes: 4096, timeoutMs: 5_000 });
      if (r.error !== null || r.replyBytes !== 4096) failures.push(`${a.name} -> ${b.name}: ${JSON.stringify(r)}`);
    }
  }
  expect(failures).toEqual([]);
}

describe.skipIf(!hasAnsible)('ansible role: render three hosts, run them, re-run idempotently, add a fourth', () => {
  let three: HostInfo[];
  let h4: HostInfo;

  beforeAll(async () => {
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'qmesh-ansible-'));
    mesh = await startMesh({ hosts: 4, functionsPerHost: 1 }, false);
    three = mesh.hosts.slice(0, 3);
    h4 = mesh.hosts[3]!;
    for (const h of mesh.hosts) await FnServer.start(mesh, h.functions[0]!.ns, 'echo', { ip: h.functions[0]!.ip, port: ECHO_PORT });
  }, 60_000);

  afterAll(async () => {
    await destroyMesh(mesh);
    if (work) fs.rmSync(work, { recursive: true, force: true });
  }, 60_000);

  it('renders three hosts, each into its own root', async () => {
    const recap = await playbook(three);
    expect(Object.keys(recap).sort()).toEqual(three.map((h) => h.name));
    for (const h of three) {
      expect(recap[h.name]!.failed).toBe(0);
      const cfg = JSON.parse(fs.readFileSync(configOf(h), 'utf8'));
      expect(cfg.node.name).toBe(h.name);
      expect(cfg.listen.quic).toBe(`${h.underlayIp}:4433`);
      expect(cfg.local.cidrs).toEqual([h.functionCidr]);
      expect(cfg.capture).toBeUndefined(); // qmesh_fail_closed_cidrs [] (the default) renders nothing
      expect(cfg.peers).toEqual(three.filter((p) => p !== h).map((p) => ({ name: p.name, endpoint: `${p.underlayIp}:4433`, cidrs: [p.functionCidr] })));
      // The config names the rendered certificates, inside this host's root.
      for (const f of [cfg.tls.ca, cfg.tls.cert, cfg.tls.key]) expect(f.startsWith(path.join(rootOf(h), 'etc/qmesh/pki/'))).toBe(true);
      expect(fs.statSync(cfg.tls.key).mode & 0o777).toBe(0o600);
      expect(fs.readlinkSync(path.join(rootOf(h), 'usr/local/bin/qmesh'))).toBe(path.join(rootOf(h), 'opt/qmesh/dist/daemon/cli/main.js'));
      expect(fs.readFileSync(path.join(rootOf(h), 'etc/systemd/system/qmesh.service'), 'utf8')).toBe(fs.readFileSync(path.join(REPO, 'systemd/qmesh.service'), 'utf8'));
    }
    expect(fs.existsSync(configOf(h4))).toBe(false);
  }, PLAYBOOK_MS);

  it('runs the three rendered daemons in the namespaces; every function reaches every other', async () => {
    for (const h of three) await startRendered(h);
    await mesh.waitTunnelsUp(15_000);
    await allPairs(three);
  }, 90_000);

  it('a second run changes nothing', async () => {
    const recap = await playbook(three);
    expect(changedTasks(recap[OUTPUT]!), 'tasks that changed on the second run').toEqual({});
    expect(Object.fromEntries(three.map((h) => [h.name, recap[h.name]?.changed]))).toEqual(Object.fromEntries(three.map((h) => [h.name, 0])));
  }, PLAYBOOK_MS);

  it('a fourth host in the inventory joins: the others take it on reload, all four reach each other', async () => {
    const before = new Map(three.map((h) => [h.name, fs.readFileSync(configOf(h), 'utf8')]));
    const recap = await playbook(mesh.hosts);
    for (const h of mesh.hosts) expect(recap[h.name]!.changed).toBeGreaterThan(0);
    // The old hosts are told to reload, never to restart (here the handlers are skipped: no systemd).
    // The new host gets both; on a first start the role's handlers do nothing.
    const handlers = handlersRun(recap[OUTPUT]!);
    expect(handlers['Reload qmesh']).toEqual(mesh.hosts.map((h) => h.name).sort());
    expect(handlers['Restart qmesh'] ?? []).toEqual([h4.name]);
    for (const h of three) {
      expect(fs.readFileSync(configOf(h), 'utf8')).not.toBe(before.get(h.name));
      expect(JSON.parse(fs.readFileSync(configOf(h), 'utf8')).peers.map((p: any) => p.name)).toContain(h4.name);
    }
    // What the role's "Reload qmesh" handler does with systemd: SIGHUP, no restart.
    const pids = three.map((h) => daemonOf(mesh, h).child.pid);
    for (const h of three) {
      await sighupAndWait(h);
    }
    await startRendered(h4);
    await mesh.waitTunnelsUp(15_000);
    await allPairs(mesh.hosts);
    expect(three.map((h) => daemonOf(mesh, h).child.pid)).toEqual(pids);
  }, PLAYBOOK_MS);

  it('a certificate within qmesh_cert_renew_before_seconds of its end is re-issued; the hosts reload onto it', async () => {
    const certOf = (h: HostInfo): string => fs.readFileSync(path.join(rootOf(h), `etc/qmesh/pki/${h.name}.crt`), 'utf8');
    const before = new Map(mesh.hosts.map((h) => [h.name, certOf(h)]));
    // 400 days is more than the role's 365-day lifetime: every certificate is due.
    const recap = await playbook(mesh.hosts, { qmesh_cert_renew_before_seconds: 400 * 86400 });
    for (const h of mesh.hosts) {
      expect(recap[h.name]!.changed).toBeGreaterThan(0);
      expect(certOf(h)).not.toBe(before.get(h.name));
    }
    expect(handlersRun(recap[OUTPUT]!)).toEqual({ 'Reload qmesh': mesh.hosts.map((h) => h.name).sort() });
    const pids = mesh.hosts.map((h) => daemonOf(mesh, h).child.pid);
    for (const h of mesh.hosts) {
      await sighupAndWait(h);
    }
    await allPairs(mesh.hosts);
    expect(mesh.hosts.map((h) => daemonOf(mesh, h).child.pid)).toEqual(pids);
    // With the default window (30 days) the fresh certificates are not due: nothing changes.
    const again = await playbook(mesh.hosts);
    expect(Object.fromEntries(mesh.hosts.map((h) => [h.name, again[h.name]?.changed]))).toEqual(Object.fromEntries(mesh.hosts.map((h) => [h.name, 0])));
  }, PLAYBOOK_MS * 2);

  it('qmesh_fail_closed_cidrs is rendered as capture.failClosedCidrs and taken on reload; unset, the config is the one of before', async () => {
    const before = new Map(mesh.hosts.map((h) => [h.name, fs.readFileSync(configOf(h), 'utf8')]));
    const FLEET = ['198.19.0.0/16']; // every host's function CIDR (198.19.<i>.0/24) lies inside; the underlay (198.18.0.<i>) outside
    const recap = await playbook(mesh.hosts, { qmesh_fail_closed_cidrs: FLEET });
    for (const h of mesh.hosts) {
      expect(recap[h.name]!.changed).toBeGreaterThan(0);
      const cfg = JSON.parse(fs.readFileSync(configOf(h), 'utf8'));
      expect(cfg.capture).toEqual({ failClosedCidrs: FLEET });
      // Everything else as before.
      expect({ ...cfg, capture: undefined }).toEqual({ ...JSON.parse(before.get(h.name)!), capture: undefined });
    }
    // It follows reload: no restart.
    expect(handlersRun(recap[OUTPUT]!)).toEqual({ 'Reload qmesh': mesh.hosts.map((h) => h.name).sort() });
    const pids = mesh.hosts.map((h) => daemonOf(mesh, h).child.pid);
    for (const h of mesh.hosts) {
      await sighupAndWait(h);
      expect((await mesh.admin(h, '/healthz')).status).toBe(200);
    }
    await allPairs(mesh.hosts); // peers' traffic is captured: the fail-closed rules leave it alone
    expect(mesh.hosts.map((h) => daemonOf(mesh, h).child.pid)).toEqual(pids);
    // Back to the default []: the capture section goes, and each config is byte for byte the one of before.
    const back = await playbook(mesh.hosts);
    expect(handlersRun(back[OUTPUT]!)).toEqual({ 'Reload qmesh': mesh.hosts.map((h) => h.name).sort() });
    for (const h of mesh.hosts) expect(fs.readFileSync(configOf(h), 'utf8')).toBe(before.get(h.name));
  }, PLAYBOOK_MS * 2);
});

describe.skipIf(!hasAnsible || !hasOpenssl)('ansible role: etcd membership', () => {
  // Rendered only (nothing runs here, so no namespaces and no etcd): made-up underlay addresses.
  const hosts: InventoryHost[] = [1, 2].map((i) => ({ name: `host-${i}`, underlayIp: `198.18.0.${i}`, functionCidr: `198.19.${i}.0/24` }));
  const ENDPOINTS = ['https://198.18.0.101:2379', 'https://198.18.0.102:2379'];
  const FLEET = ['198.19.0.0/16']; // the fleet's function address space: every functionCidr inside, the underlay and etcd outside
  let etcdPki: string;
  const etcdVars = (): Record<string, unknown> => ({
    qmesh_membership: 'etcd',
    qmesh_etcd_endpoints: ENDPOINTS,
    qmesh_etcd_prefix: '/fleet/test/',
    qmesh_etcd_lease_ttl_ms: 5000,
    qmesh_etcd_pki_dir: etcdPki,
    qmesh_fail_closed_cidrs: FLEET,
  });

  beforeAll(() => {
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'qmesh-ansible-etcd-'));
    // The operator's etcd PKI (the role makes none): a CA, and per host a client certificate whose CN is the inventory hostname.
    etcdPki = path.join(work, 'etcd-pki');
    fs.mkdirSync(etcdPki);
    const openssl = (...args: string[]): void => void execFileSync('openssl', args, { cwd: etcdPki, stdio: ['ignore', 'ignore', 'pipe'] });
    const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
    openssl('req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.crt', '-subj', '/CN=etcd test CA', '-days', '2');
    for (const h of hosts) {
      openssl('req', ...ec, '-keyout', `${h.name}.key`, '-out', `${h.name}.csr`, '-subj', `/CN=${h.name}`);
      openssl('x509', '-req', '-in', `${h.name}.csr`, '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-out', `${h.name}.crt`, '-days', '2');
    }
  });

  afterAll(() => {
    if (work) fs.rmSync(work, { recursive: true, force: true });
  });

  it('renders peers: [] and the membership section, installs the etcd client TLS files, and check-config accepts it', async () => {
    const recap = await playbook(hosts, etcdVars());
    for (const h of hosts) {
      expect(recap[h.name]!.failed).toBe(0);
      const etcdDir = path.join(rootOf(h), 'etc/qmesh/etcd');
      const cfg = JSON.parse(fs.readFileSync(configOf(h), 'utf8'));
      expect(cfg.node.name).toBe(h.name);
      expect(cfg.peers).toEqual([]);
      expect(cfg.capture).toEqual({ failClosedCidrs: FLEET });
      expect(cfg.membership).toEqual({
        source: 'etcd',
        etcd: {
          endpoints: ENDPOINTS,
          ca: path.join(etcdDir, 'ca.crt'),
          cert: path.join(etcdDir, `${h.name}.crt`),
          key: path.join(etcdDir, `${h.name}.key`),
          prefix: '/fleet/test/',
          leaseTtlMs: 5000,
        },
      });
      // The operator's files, byte for byte, with the mesh key's modes.
      expect(fs.statSync(etcdDir).mode & 0o777).toBe(0o750);
      for (const [f, mode] of [['ca.crt', 0o644], [`${h.name}.crt`, 0o644], [`${h.name}.key`, 0o600]] as const) {
        const installed = path.join(etcdDir, f);
        expect(fs.readFileSync(installed, 'utf8')).toBe(fs.readFileSync(path.join(etcdPki, f), 'utf8'));
        expect([f, fs.statSync(installed).mode & 0o777]).toEqual([f, mode]);
      }
      expect(fs.readdirSync(etcdDir).sort()).toEqual(['ca.crt', `${h.name}.crt`, `${h.name}.key`].sort());
      // The role validated it already (template validate); once more here, reading the installed files.
      const cli = path.join(rootOf(h), 'usr/local/bin/qmesh');
      const out = execFileSync(process.execPath, [cli, 'check-config', '--config', configOf(h)], { encoding: 'utf8' });
      expect(out).toContain(`fail-closed cidrs (dropped unless local or a peer's): ${FLEET.join(', ')}`);
      expect(out).toContain(`membership: etcd ${ENDPOINTS.join(', ')} as user "${h.name}", entries under /fleet/test/ (this host: /fleet/test/${h.name}), lease 5 s`);
      expect(out).not.toContain('warning');
    }

    // A membership key is one only a restart applies: the role restarts, it does not (only) reload.
    // Without prefix (""), the key is left out and the daemon's default applies.
    const again = await playbook(hosts, { ...etcdVars(), qmesh_etcd_prefix: '' });
    const out = again[OUTPUT]!;
    for (const h of hosts) {
      expect(again[h.name]!.changed).toBeGreaterThan(0);
      expect(out).toContain(`"msg": "${h.name}: changed membership, which only a restart applies"`);
      const cfg = JSON.parse(fs.readFileSync(configOf(h), 'utf8'));
      expect(Object.keys(cfg.membership.etcd)).toEqual(['endpoints', 'ca', 'cert', 'key', 'leaseTtlMs']);
      const check = execFileSync(process.execPath, [path.join(rootOf(h), 'usr/local/bin/qmesh'), 'check-config', '--config', configOf(h)], { encoding: 'utf8' });
      expect(check).toContain(`entries under /qmesh/qmesh.test/hosts/ (this host: /qmesh/qmesh.test/hosts/${h.name})`);
    }
    expect(handlersRun(out)['Restart qmesh']).toEqual(hosts.map((h) => h.name));

    // With etcd a host's own entry (its function CIDRs) is written at start: a change of them
    // restarts that host. The other host's config does not change (its peers come from etcd).
    const moved = hosts.map((h) => (h.name === 'host-1' ? { ...h, functionCidr: '198.19.11.0/24' } : h));
    const before2 = fs.readFileSync(configOf(hosts[1]!), 'utf8');
    const cidrs = await playbook(moved, { ...etcdVars(), qmesh_etcd_prefix: '' });
    const cidrsOut = cidrs[OUTPUT]!;
    expect(JSON.parse(fs.readFileSync(configOf(hosts[0]!), 'utf8')).local.cidrs).toEqual(['198.19.11.0/24']);
    expect(fs.readFileSync(configOf(hosts[1]!), 'utf8')).toBe(before2);
    expect(cidrs['host-2']!.changed).toBe(0);
    expect(cidrsOut).toContain('"msg": "host-1: changed local.cidrs, which only a restart applies"');
    expect(handlersRun(cidrsOut)['Restart qmesh']).toEqual(['host-1']);
    // Back (restarts host-1 again), for the cases below.
    await playbook(hosts, etcdVars());
  }, PLAYBOOK_MS);

  it('fails the play early when the endpoints or qmesh_fail_closed_cidrs are missing, or an etcd TLS file is not on the control node', async () => {
    const noEndpoints = await runPlaybook(hosts, { ...etcdVars(), qmesh_etcd_endpoints: [] });
    expect(noEndpoints.code).not.toBe(0);
    for (const h of hosts) {
      expect(noEndpoints.out).toContain(`${h.name}: qmesh_membership is etcd but qmesh_etcd_endpoints is empty or not a list`);
    }
    // Before anything is installed or rendered.
    expect(noEndpoints.out).not.toContain('TASK [qmesh : Render the config');

    const noFailClosed = await runPlaybook(hosts, { ...etcdVars(), qmesh_fail_closed_cidrs: [] });
    expect(noFailClosed.code).not.toBe(0);
    for (const h of hosts) {
      expect(noFailClosed.out).toContain(`${h.name}: qmesh_membership is etcd but qmesh_fail_closed_cidrs is empty: list the fleet's function address space`);
      expect(noFailClosed.out).toMatch(new RegExp(`fatal: \\[${h.name}\\]`));
    }
    expect(noFailClosed.out).not.toContain('TASK [qmesh : Render the config');

    fs.renameSync(path.join(etcdPki, 'host-2.key'), path.join(etcdPki, 'host-2.key.away'));
    try {
      const noKey = await runPlaybook(hosts, etcdVars());
      expect(noKey.code).not.toBe(0);
      expect(noKey.out).toContain(`host-2: qmesh_membership is etcd but qmesh_etcd_pki_dir lacks ${etcdPki}/host-2.key;`);
      expect(noKey.out).toMatch(/fatal: \[host-2\]/);
      expect(noKey.out).not.toMatch(/fatal: \[host-1\]/);
    } finally {
      fs.renameSync(path.join(etcdPki, 'host-2.key.away'), path.join(etcdPki, 'host-2.key'));
    }
  }, PLAYBOOK_MS);

  it('a qmesh_quic_port set on one host only: its peers dial that port, and it dials theirs (the default)', async () => {
    const custom = hosts.map((h) => (h.name === 'host-1' ? { ...h, vars: { qmesh_quic_port: 5443 } } : h));
    await playbook(custom, { qmesh_fail_closed_cidrs: FLEET });
    const endpoints = (h: InventoryHost): Record<string, string> =>
      Object.fromEntries(JSON.parse(fs.readFileSync(configOf(h), 'utf8')).peers.map((p: any) => [p.name, p.endpoint]));
    const [h1, h2] = hosts as [InventoryHost, InventoryHost];
    expect(JSON.parse(fs.readFileSync(configOf(h1), 'utf8')).listen.quic).toBe(`${h1.underlayIp}:5443`);
    expect(JSON.parse(fs.readFileSync(configOf(h2), 'utf8')).listen.quic).toBe(`${h2.underlayIp}:4433`);
    expect(endpoints(h1)).toEqual({ [h2.name]: `${h2.underlayIp}:4433` });
    expect(endpoints(h2)).toEqual({ [h1.name]: `${h1.underlayIp}:5443` });
    await playbook(hosts, { qmesh_fail_closed_cidrs: FLEET }); // back to the default everywhere
    expect(endpoints(h2)[h1.name]).toBe(`${h1.underlayIp}:4433`);
  }, PLAYBOOK_MS * 2);

  it('with file membership a change of function CIDRs only reloads (restart-only with etcd alone)', async () => {
    const fileVars = { qmesh_fail_closed_cidrs: FLEET };
    await playbook(hosts, fileVars); // etcd -> file: membership changes, a restart
    const moved = hosts.map((h) => (h.name === 'host-1' ? { ...h, functionCidr: '198.19.11.0/24' } : h));
    const recap = await playbook(moved, fileVars);
    const out = recap[OUTPUT]!;
    for (const h of hosts) expect(recap[h.name]!.changed).toBeGreaterThan(0); // host-2: host-1's peer entry
    expect(JSON.parse(fs.readFileSync(configOf(hosts[1]!), 'utf8')).peers[0].cidrs).toEqual(['198.19.11.0/24']);
    expect(out).not.toContain('which only a restart applies');
    expect(handlersRun(out)).toEqual({ 'Reload qmesh': hosts.map((h) => h.name) });
  }, PLAYBOOK_MS);
});
