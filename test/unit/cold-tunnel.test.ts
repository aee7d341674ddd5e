// The first request over a tunnel still being dialled: it waits for the handshake,
// then reaches the destination whole. A handshake flight fills its packets like bulk
// data does; when the daemon took that for a full congestion window it held the
// request's last byte back (stream-pipe.ts HOLD_WHILE_CONGESTED_MS), and the server
// saw 31 bytes, then 1 byte 20 ms later.
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { connectCaptured, startLoopbackMesh, type LoopbackHost } from '../support/loopback-mesh.js';

const SERVER_IP = '127.11.0.20';
const CLIENT_IP = '127.10.0.20';
const REQUEST = Buffer.alloc(32, 0x61);

let stop: (() => Promise<void>) | null = null;
afterEach(async () => {
  await stop?.();
  stop = null;
});

describe('first request over a tunnel being dialled', () => {
  it('reaches the server in one piece, on each of 5 fresh tunnels', async () => {
    for (let round = 0; round < 5; round++) {
      const reads: number[] = [];
      const server = net.createServer((s) => {
        s.on('data', (d) => {
          reads.push(d.length);
          s.write(d);
        });
        s.on('error', () => {});
      });
      await new Promise<void>((r) => server.listen(0, SERVER_IP, () => r()));
      const port = (server.address() as net.AddressInfo).port;
      const mesh = await startLoopbackMesh(2);
      stop = async () => {
        server.close();
        await mesh.stop();
      };
      const a = mesh.hosts[0] as LoopbackHost;
      // The daemons have just started: the tunnel is still handshaking when this connects.
      const s = await connectCaptured(a, CLIENT_IP, { host: SERVER_IP, port });
      s.write(REQUEST);
      let echoed = 0;
      await new Promise<void>((resolve, reject) => {
        s.on('data', (d) => {
          echoed += d.length;
          if (echoed >= REQUEST.length) resolve();
        });
        s.on('error', reject);
      });
      s.destroy();
      expect(reads[0], `round ${round}: server reads ${reads.join(' + ')}`).toBe(REQUEST.length);
      await stop();
      stop = null;
    }
  }, 60_000);
});
