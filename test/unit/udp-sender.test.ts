// UdpSender is called from TunnelConnection.flush: a socket the tunnel closed in the middle
// of that flush (its error handler tears the tunnel down) must not throw out of the flush
// and crash the daemon, and a refused send is reported as an 'error' event, later.
import dgram from 'node:dgram';
import { expect, it } from 'vitest';
import { UdpSender } from '../../daemon/tunnel/udp-sender.js';

it('drops packets for a socket that was closed instead of throwing', async () => {
  const socket = dgram.createSocket('udp4');
  await new Promise<void>((r) => socket.bind(0, '127.0.0.1', r));
  const sender = new UdpSender(socket, { host: '127.0.0.1', port: 9 }, false);
  await new Promise<void>((r) => socket.close(() => r()));
  expect(() => sender.send(Buffer.alloc(3000), 0, 3000, 1200)).not.toThrow();
});

it('reports ECONNREFUSED from a GSO send on a later tick, not inside the send', async () => {
  const socket = dgram.createSocket('udp4');
  await new Promise<void>((r) => socket.bind(0, '127.0.0.1', r));
  // A connected socket towards a port nobody listens on: the kernel answers with ICMP port unreachable.
  const closed = dgram.createSocket('udp4');
  await new Promise<void>((r) => closed.bind(0, '127.0.0.1', r));
  const port = closed.address().port;
  await new Promise<void>((r) => closed.close(() => r()));
  await new Promise<void>((r) => socket.connect(port, '127.0.0.1', r));
  const errors: string[] = [];
  let inSend = false;
  socket.on('error', (err: NodeJS.ErrnoException) => errors.push(`${err.code}${inSend ? ' (inside send)' : ''}`));
  const sender = new UdpSender(socket, null);
  for (let i = 0; i < 20 && errors.length === 0; i++) {
    inSend = true;
    sender.send(Buffer.alloc(2400), 0, 2400, 1200);
    inSend = false;
    await new Promise((r) => setTimeout(r, 20));
  }
  socket.close();
  expect(errors.length).toBeGreaterThan(0);
  expect(errors[0]).toBe('ECONNREFUSED');
});
