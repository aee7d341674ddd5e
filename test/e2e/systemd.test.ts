// systemd integration without systemd: a python3 datagram socket stands in for
// systemd's NOTIFY_SOCKET (a file path, and an abstract '@name' inside the host's
// namespace, where abstract sockets live). The daemon must send READY=1 only once
// /healthz answers 200 and STOPPING=1 when SIGTERM starts the drain. The unit file
// passes `systemd-analyze verify` and its security exposure stays low, when
// systemd-analyze is on the machine.
import { spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI } from '../../daemon/demo/mesh.js';
import { destroyMesh, startMesh, type HostInfo, type Mesh } from '../support/e2e-mesh.js';
import { waitFor, withTimeout } from '../support/fn-net.js';
import { skipUnlessTool } from '../support/tools.js';
import { UNIT_FILE, unitDirective } from '../support/unit-file.js';

const TEST_MS = 30_000;
/** The daemon's default drain.graceMs: systemd must wait longer than that on stop. */
const DRAIN_GRACE_MS = 30_000;
/** systemd-analyze security's 0 (locked down) to 10 (exposed) scale: the unit must stay in its best band. */
const MAX_EXPOSURE = 2.5;

const RECEIVER = `
import json, socket, sys
path = sys.argv[1]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind("\\0" + path[1:] if path.startswith("@") else path)
print(json.dumps({"listening": True}), flush=True)
while True:
    print(json.dumps({"datagram": s.recv(4096).decode()}), flush=True)
`;

let mesh: Mesh;
let h1: HostInfo;
let h2: HostInfo;

beforeAll(async () => {
  mesh = await startMesh({ hosts: 2, functionsPerHost: 1 }, false);
  [h1, h2] = mesh.hosts as [HostInfo, HostInfo];
}, 60_000);

afterAll(async () => {
  await destroyMesh(mesh);
}, 60_000);

/** Output lines of a child, as they arrive. */
function lines(child: ChildProcess): string[] {
  const out: string[] = [];
  let partial = '';
  const take = (b: Buffer): void => {
    const parts = (partial + b.toString()).split('\n');
    partial = parts.pop() ?? '';
    out.push(...parts);
  };
  child.stdout?.on('data', take);
  child.stderr?.on('data', take);
  return out;
}

/** Starts the stand-in for systemd in `ns`, bound to `socketPath`; returns a reader of the datagrams received so far. */
async function notifyReceiver(ns: string, socketPath: string): Promise<() => string[]> {
  const child = mesh.topo.spawn(ns, ['python3', '-c', RECEIVER, socketPath], { stdio: ['ignore', 'pipe', 'pipe'] });
  const out = lines(child);
  await waitFor(() => out.some((l) => l.includes('"listening"')), 5_000, `notify receiver on ${socketPath}: ${out.join(' ')}`);
  return () => out.filter((l) => l.startsWith('{"datagram"')).map((l) => JSON.parse(l).datagram as string);
}

async function healthz(host: HostInfo): Promise<number> {
  return (await mesh.admin(host, '/healthz').catch(() => ({ status: 0 }))).status;
}

/** Runs `qmesh run` on `host` with NOTIFY_SOCKET set, the way systemd starts ExecStart=. */
function startDaemon(host: HostInfo, notifySocket: string): { child: ChildProcess; log: string[]; exited: Promise<number | null> } {
  const child = mesh.topo.spawn(host.ns, ['env', `NOTIFY_SOCKET=${notifySocket}`, process.execPath, CLI, 'run', '--config', mesh.configPath(host)], { stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  return { child, log: lines(child), exited };
}

describe('systemd readiness (Type=notify)', () => {
  it('sends READY=1 on a socket path once /healthz answers 200, and STOPPING=1 on SIGTERM', async () => {
    const socketPath = path.join(mesh.dir, 'notify.sock');
    const got = await notifyReceiver(h1.ns, socketPath);
    const d = startDaemon(h1, socketPath);
    const ready = await waitFor(() => got().find((m) => m.split('\n').includes('READY=1')), 15_000, `READY=1 (daemon log: ${d.log.slice(-5).join('\n')})`);
    // The moment READY=1 is out, the admin listener must already say ready.
    expect(await healthz(h1)).toBe(200);
    expect(ready).toMatch(/^READY=1\nSTATUS=ready: 1 peer\(s\)$/);
    expect(got().filter((m) => m.includes('READY=1'))).toHaveLength(1);
    d.child.kill('SIGTERM');
    await waitFor(() => got().find((m) => m.startsWith('STOPPING=1')), 10_000, 'STOPPING=1');
    expect(await withTimeout(d.exited, 10_000, 'daemon exit after SIGTERM')).toBe(0);
    expect(d.log.filter((l) => l.includes('cannot notify systemd'))).toEqual([]);
  }, TEST_MS);

  it('reaches an abstract-namespace socket (@name) too', async () => {
    const abstract = `@qmesh-notify-${h2.ns}-${process.pid}`;
    const got = await notifyReceiver(h2.ns, abstract);
    const d = startDaemon(h2, abstract);
    await waitFor(() => got().some((m) => m.startsWith('READY=1')), 15_000, `READY=1 on ${abstract} (daemon log: ${d.log.slice(-5).join('\n')})`);
    expect(await healthz(h2)).toBe(200);
    d.child.kill('SIGTERM');
    expect(await withTimeout(d.exited, 10_000, 'daemon exit after SIGTERM')).toBe(0);
  }, TEST_MS);

  it('runs normally, with one warning, when NOTIFY_SOCKET names nothing', async () => {
    const d = startDaemon(h1, path.join(mesh.dir, 'nobody-listens.sock'));
    await waitFor(async () => (await healthz(h1)) === 200, 15_000, 'healthz 200');
    await waitFor(() => d.log.find((l) => l.includes('cannot notify systemd')), 5_000, 'notify warning');
    d.child.kill('SIGTERM');
    expect(await withTimeout(d.exited, 10_000, 'daemon exit after SIGTERM')).toBe(0);
    expect(d.log.filter((l) => l.includes('cannot notify systemd'))).toHaveLength(1);
  }, TEST_MS);
});

describe('systemd/qmesh.service', () => {
  const unit = fs.readFileSync(UNIT_FILE, 'utf8');
  const directive = unitDirective;

  it('is Type=notify for the main process, reloads with SIGHUP and waits longer than the drain on stop', () => {
    expect(directive('Type')).toEqual(['notify']);
    expect(directive('NotifyAccess')).toEqual(['main']);
    // A bad config fails the reload; otherwise SIGHUP, and the daemon applies the new rules itself.
    expect(directive('ExecReload')).toEqual(['/usr/local/bin/qmesh check-config --config /etc/qmesh/config.json', '/bin/kill -HUP $MAINPID']);
    expect(unit).not.toMatch(/QMESH_CAPTURE_APPLY_RULES=false/);
    expect(directive('RestrictAddressFamilies')[0]).toContain('AF_UNIX'); // the notify socket
    const stop = /^(\d+)s$/.exec(directive('TimeoutStopSec')[0] ?? '');
    expect(Number(stop?.[1]) * 1000).toBeGreaterThan(DRAIN_GRACE_MS);
    expect(directive('User')).toEqual(['qmesh']);
    expect(directive('NoNewPrivileges')).toEqual(['yes']);
    expect(directive('CapabilityBoundingSet')).toEqual(['CAP_NET_ADMIN']);
  });

  const analyze = !skipUnlessTool('systemd-analyze', 'systemd');

  it.skipIf(!analyze)('passes systemd-analyze verify (with ExecStart= pointing at this build)', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qmesh-unit-'));
    try {
      const file = path.join(dir, 'qmesh.service');
      fs.writeFileSync(file, unit.replaceAll('/usr/local/bin/qmesh', CLI));
      const r = spawnSync('systemd-analyze', ['verify', file], { encoding: 'utf8', timeout: 20_000 });
      expect(r.stdout + r.stderr).toBe('');
      expect(r.status).toBe(0);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }, TEST_MS);

  it.skipIf(!analyze)(`has a systemd-analyze security exposure of at most ${MAX_EXPOSURE}`, () => {
    const r = spawnSync('systemd-analyze', ['security', '--offline=true', '--no-pager', UNIT_FILE], { encoding: 'utf8', timeout: 20_000 });
    const score = /Overall exposure level for qmesh\.service: (\d+(?:\.\d+)?)/.exec(r.stdout);
    expect(score, r.stdout + r.stderr).not.toBeNull();
    expect(Number(score![1])).toBeLessThanOrEqual(MAX_EXPOSURE);
  }, TEST_MS);
});
