// The whole data path between two in-process daemons on loopback (fake
// original destination, no iptables): bytes, half-close, resets, refusals.
import crypto from 'node:crypto';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectCaptured, startLoopbackMesh, type LoopbackHost } from '../support/loopback-mesh.js';

let mesh: Awaited<ReturnType<typeof startLoopbackMesh>>;
let a: LoopbackHost;
let b: LoopbackHost;
let server: net.Server;
const SERVER_IP = '127.11.0.10'; // inside lo-2's cidr 127.11.0.0/16
const CLIENT_IP = '127.10.0.10'; // inside lo-1's cidr
let port: number;

beforeAll(async () => {
  mesh = await startLoopbackMesh(2);
  [a, b] = mesh.hosts as [LoopbackHost, LoopbackHost];
  server = net.createServer({ allowHalfOpen: true }, (s) => {
    // Echo, and answer FIN with FIN after the echo: half-close visible to the client.
    s.on('data', (d) => s.write(d));
    s.on('end', () => s.end());
    s.on('error', () => {});
  });
  await new Promise<void>((r) => server.listen(0, SERVER_IP, () => r()));
  port = (server.address() as net.AddressInfo).port;
  const deadline = Date.now() + 5000;
  while (!([...a.daemon.pool.tunnels.values()].every((t) => t.state === 'up')) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
}, 20_000);

afterAll(async () => {
  server?.close();
  await mesh?.stop();
});

function roundTrip(payload: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    connectCaptured(a, CLIENT_IP, { host: SERVER_IP, port }).then((s) => {
      const chunks: Buffer[] = [];
      s.on('data', (d) => chunks.push(d));
      s.on('end', () => resolve(Buffer.concat(chunks)));
      s.on('error', reject);
      s.end(payload);
    }, reject);
  });
}

describe('data path over a loopback tunnel', () => {
  it('echoes a small request and delivers both FINs', async () => {
    const reply = await roundTrip(Buffer.from('hello qmesh'));
    expect(reply.toString()).toBe('hello qmesh');
  }, 10_000);

  it('carries 8 MiB intact', async () => {
    const payload = crypto.randomBytes(8 * 1024 * 1024);
    const reply = await roundTrip(payload);
    expect(crypto.createHash('sha256').update(reply).digest('hex')).toBe(crypto.createHash('sha256').update(payload).digest('hex'));
  }, 30_000);
});
