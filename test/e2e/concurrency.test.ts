// Many connections at once share one tunnel without mixing bytes: 200
// concurrent connections from two functions on host-1 to two echo servers on
// host-2, each with its own payload, all come back byte for byte, each as its
// own stream, and every stream closes cleanly.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { daemonOf, destroyMesh, logOf, startMesh, type HostInfo, type Mesh } from '../support/e2e-mesh.js';
import { FnServer, fnClient, waitFor } from '../support/fn-net.js';

const ECHO_PORT = 7007;
const CONNECTIONS = 200;
const KiB = 1024;

let mesh: Mesh;
let h1: HostInfo;
let h2: HostInfo;

beforeAll(async () => {
  // Debug logging: the data plane reports a summary per connection only then.
  mesh = await startMesh({ hosts: 2, functionsPerHost: 2, logLevel: 'debug' });
  [h1, h2] = mesh.hosts as [HostInfo, HostInfo];
  for (const f of h2.functions) await FnServer.start(mesh, f.ns, 'echo', { ip: f.ip, port: ECHO_PORT });
}, 60_000);

afterAll(async () => {
  await destroyMesh(mesh);
}, 60_000);

const outbound = async (): Promise<any> => (await mesh.status(h1)).peers.find((p: any) => p.name === h2.name).outbound;

describe('concurrent connections', () => {
  it(`${CONNECTIONS} concurrent connections each get exactly their own bytes back`, { timeout: 60_000 }, async () => {
    const before = await outbound();
    // Log lines from this test only.
    const mark = { h1: daemonOf(mesh, h1).log.length, h2: daemonOf(mesh, h2).log.length };
    const targets = h2.functions.map((f) => ({ ip: f.ip, port: ECHO_PORT }));
    const perClient = CONNECTIONS / h1.functions.length;
    const results = await Promise.all(
      h1.functions.map((f) => fnClient(mesh, f.ns, 'many', { targets, count: perClient, minBytes: 1, maxBytes: 16 * KiB, timeoutMs: 15_000 })),
    );
    for (const r of results) {
      expect(r.pending ?? [], 'connections still open when the client gave up').toEqual([]);
      expect(r.failures).toEqual([]);
      expect(r.ok).toBe(perClient);
    }
    // Each connection was its own stream in host-1's tunnel to host-2, and all of them are finished.
    const after = await waitFor(async () => {
      const o = await outbound();
      return o.streamsActive === before.streamsActive ? o : null;
    }, 10_000, 'streams drained');
    expect(after.streamsTotal - before.streamsTotal).toBe(CONNECTIONS);
    // One summary line per connection on each side, each a clean close.
    const closes = (host: HostInfo, direction: string) =>
      logOf(daemonOf(mesh, host))
        .slice(host === h1 ? mark.h1 : mark.h2)
        .filter((e) => e.msg === 'connection closed' && e.direction === direction);
    // Log lines are batched by the daemon; wait until both sides have written theirs.
    await waitFor(() => closes(h1, 'outbound').length >= CONNECTIONS && closes(h2, 'inbound').length >= CONNECTIONS, 10_000, 'connection summaries');
    for (const [host, direction] of [[h1, 'outbound'], [h2, 'inbound']] as const) {
      const lines = closes(host, direction);
      expect(lines).toHaveLength(CONNECTIONS);
      expect(lines.filter((e) => e.outcome !== 'closed')).toEqual([]);
    }
  });
});
