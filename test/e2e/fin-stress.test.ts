// Under concurrency, every FIN arrives (issue #13): 200 concurrent connections,
// 40 runs in a row, while two busy loops keep both cores loaded. Each connection
// sends its own payload, half-closes, and must get exactly its bytes back and then
// the server's FIN; none may be left waiting for EOF. (The JavaScript data path
// lost about 1 zero-length FIN in 2,000 here: cloudflare/quiche#2525.)
import { spawn, type ChildProcess } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { destroyMesh, startMesh, type HostInfo, type Mesh } from '../support/e2e-mesh.js';
import { FnServer, fnClient } from '../support/fn-net.js';

const ECHO_PORT = 7007;
const CONNECTIONS = 200;
const RUNS = 40;
const KiB = 1024;

let mesh: Mesh;
let h1: HostInfo;
let h2: HostInfo;
const hogs: ChildProcess[] = [];

beforeAll(async () => {
  mesh = await startMesh({ hosts: 2, functionsPerHost: 2 });
  [h1, h2] = mesh.hosts as [HostInfo, HostInfo];
  for (const f of h2.functions) await FnServer.start(mesh, f.ns, 'echo', { ip: f.ip, port: ECHO_PORT });
}, 60_000);

afterAll(async () => {
  for (const h of hogs) h.kill('SIGKILL');
  await destroyMesh(mesh);
}, 60_000);

describe('FINs under load', () => {
  it(`${RUNS} runs of ${CONNECTIONS} concurrent connections with both cores busy: every connection ends with its bytes and a FIN`, { timeout: 600_000 }, async () => {
    // Two busy loops, one per core, for the whole test: killed in afterAll, and each ends by itself after 10 minutes.
    const busy = 'const end = Date.now() + 600_000; while (Date.now() < end);';
    for (let i = 0; i < 2; i++) hogs.push(spawn(process.execPath, ['-e', busy], { stdio: 'ignore' }));
    const targets = h2.functions.map((f) => ({ ip: f.ip, port: ECHO_PORT }));
    const perClient = CONNECTIONS / h1.functions.length;
    let pending = 0;
    let failures = 0;
    let ok = 0;
    const started = Date.now();
    for (let run = 0; run < RUNS; run++) {
      const results = await Promise.all(
        h1.functions.map((f) => fnClient(mesh, f.ns, 'many', { targets, count: perClient, minBytes: 0, maxBytes: 16 * KiB, timeoutMs: 20_000 })),
      );
      for (const r of results) {
        pending += (r.pending ?? []).length;
        failures += r.failures.length;
        ok += r.ok;
        expect(r.pending ?? [], `run ${run}: connections still waiting for EOF`).toEqual([]);
        expect(r.failures, `run ${run}`).toEqual([]);
      }
    }
    console.log(`FIGURE fin-stress: ${RUNS} x ${CONNECTIONS} connections with 2 busy loops: ok=${ok} failures=${failures} waitingForEof=${pending} in ${((Date.now() - started) / 1000).toFixed(1)} s`);
    expect(ok).toBe(RUNS * CONNECTIONS);
  });
});
