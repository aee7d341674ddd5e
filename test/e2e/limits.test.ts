// capture.maxConnections: past the limit new captured connections are reset at
// once and counted, open ones are untouched, and once they close new ones work
// again; the daemon's file descriptors return to where they were. tunnel.maxStreams
// follows reload: lowered by SIGHUP, it refuses the peer's next connection past it.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { daemonOf, destroyMesh, logOf, startMesh, waitLog, type HostInfo, type Mesh } from '../support/e2e-mesh.js';
import { FnServer, fnClient, waitFor } from '../support/fn-net.js';

const PORT = 7007;
const LIMIT = 5;
let mesh: Mesh;
let h1: HostInfo;
let h2: HostInfo;

beforeAll(async () => {
  mesh = await startMesh({ hosts: 2, functionsPerHost: 1, configFor: () => ({ capture: { maxConnections: LIMIT } }) });
  [h1, h2] = mesh.hosts as [HostInfo, HostInfo];
  await FnServer.start(mesh, h2.functions[0]!.ns, 'echo', { ip: h2.functions[0]!.ip, port: PORT });
}, 60_000);

afterAll(async () => {
  await destroyMesh(mesh);
}, 60_000);

async function daemonFds(host: HostInfo): Promise<number> {
  const r = await mesh.topo.exec(host.ns, ['ls', `/proc/${daemonOf(mesh, host).child.pid}/fd`]);
  return r.stdout.split('\n').filter(Boolean).length;
}

describe('capture connection limit', () => {
  it('resets connections past capture.maxConnections, counts them, and recovers', async () => {
    const fdsBefore = await daemonFds(h1);
    // LIMIT connections held open for 3 s, then one more while they are open.
    const holder = `
      const net = require('net'); const socks = [];
      for (let i = 0; i < ${LIMIT}; i++) socks.push(net.connect(${PORT}, '${h2.functions[0]!.ip}').on('error', () => {}));
      setTimeout(() => {
        const extra = net.connect(${PORT}, '${h2.functions[0]!.ip}');
        const t = Date.now();
        extra.on('error', (e) => console.log(JSON.stringify({ extra: e.code, ms: Date.now() - t })));
        extra.on('data', () => console.log(JSON.stringify({ extra: 'data' })));
        extra.on('connect', () => extra.write('x'));
      }, 1500);
      setTimeout(() => { for (const s of socks) s.destroy(); process.exit(0); }, 3000);`;
    const r = await mesh.topo.exec(h1.functions[0]!.ns, [process.execPath, '-e', holder], { timeoutMs: 10_000 });
    const extra = JSON.parse(r.stdout.trim().split('\n')[0]!);
    expect(extra.extra).toMatch(/^(ECONNRESET|EPIPE)$/);
    const status = await mesh.status(h1);
    expect(status.capture.limitHits).toBeGreaterThanOrEqual(1);
    // Once the held connections are gone, new ones go through again.
    await waitFor(async () => (await mesh.status(h1)).capture.active === 0, 10_000, 'held connections closed');
    const ok = await fnClient(mesh, h1.functions[0]!.ns, 'rpc', { ip: h2.functions[0]!.ip, port: PORT, requestBytes: 100, timeoutMs: 5_000 });
    expect(ok).toMatchObject({ error: null, replyBytes: 100 });
    const metrics = (await mesh.admin(h1, '/metrics')).body;
    expect(metrics).toMatch(/^qmesh_capture_limit_hits_total [1-9]/m);
    await waitFor(async () => (await daemonFds(h1)) <= fdsBefore, 10_000, 'file descriptors back to baseline');
  }, 60_000);

  it('applies a tunnel.maxStreams lowered by reload to the next connection', async () => {
    // The function holds 2 connections, checks a 3rd works, then waits for the reload
    // (a file: namespaces share the file system) and tries a 3rd again.
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qmesh-streams-'));
    const ip = h2.functions[0]!.ip;
    const script = `
      const net = require('net'); const fs = require('fs');
      const open = () => new Promise((done) => {
        const s = net.connect(${PORT}, '${ip}');
        s.on('connect', () => s.write('x'));
        s.once('data', () => done({ s, r: 'data' }));
        s.on('error', (e) => done({ s, r: e.code }));
        s.on('close', () => done({ s, r: 'closed' }));
        setTimeout(() => done({ s, r: 'timeout' }), 4000);
      });
      const waitFile = (f) => new Promise((done) => { const t = setInterval(() => { if (fs.existsSync(f)) { clearInterval(t); done(); } }, 20); });
      (async () => {
        const held = [await open(), await open()];
        const before = await open(); before.s.destroy();
        fs.writeFileSync('${dir}/held', '');
        await waitFile('${dir}/reloaded');
        const after = await open();
        console.log(JSON.stringify({ held: held.map((h) => h.r), before: before.r, after: after.r }));
        for (const h of held) h.s.destroy();
        process.exit(0);
      })();`;
    const run = mesh.topo.exec(h1.functions[0]!.ns, [process.execPath, '-e', script], { timeoutMs: 20_000 });
    await waitFor(async () => fs.existsSync(`${dir}/held`), 10_000, 'two connections held, a third one worked');
    const d = daemonOf(mesh, h2);
    const mark = d.log.length;
    mesh.writeConfig(h2, { configFor: () => ({ tunnel: { maxStreams: 2 } }) });
    d.child.kill('SIGHUP');
    await waitFor(async () => logOf(d).slice(mark).find((e) => e.msg === 'configuration reloaded' || e.msg?.startsWith('reload rejected')), 10_000, 'host-2 reloads');
    expect(logOf(d).slice(mark).find((e) => e.msg?.startsWith('reload rejected'))).toBeUndefined();
    fs.writeFileSync(`${dir}/reloaded`, '');
    const out = JSON.parse((await run).stdout.trim().split('\n').pop()!);
    fs.rmSync(dir, { recursive: true, force: true });
    expect(out.held).toEqual(['data', 'data']);
    expect(out.before).toBe('data');
    expect(out.after).toMatch(/^(ECONNRESET|EPIPE|closed)$/);
    const line = await waitLog(d, (e) => e.msg === "tunnel.maxStreams reached; the peer's new streams are reset", 5_000, 'limit warning');
    expect(line).toMatchObject({ peer: h1.name, maxStreams: 2 });
    expect((await mesh.status(h2)).inbound.limitHits).toBeGreaterThanOrEqual(1);
  }, 60_000);
});
