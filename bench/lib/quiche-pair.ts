// A client and a server quiche connection in one process, packets handed across by
// hand: no sockets, no kernel, no other process. Used by bench/quiche-cost.ts (the
// binding's cost per call) and test/unit/quiche-fin-loss.test.ts (what quiche does
// with a FIN). Needs no root.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { schema } from '../../daemon/config/schema.js';
import { initCa, issueHost } from '../../daemon/pki/index.js';
import { CID_BYTES, makeQuicheConfig, quiche, type HostPort, type QuicheConfig, type QuicheConnection } from '../../daemon/tunnel/quiche.js';

export const CLIENT: HostPort = { host: '127.0.0.1', port: 40001 };
export const SERVER: HostPort = { host: '127.0.0.2', port: 40002 };

/** Both ends' quiche configs for one datagram size. */
export interface Configs {
  client: QuicheConfig;
  server: QuicheConfig;
}
/** A handshaken client/server pair and the buffer packets cross in. */
export interface Pair {
  client: QuicheConnection;
  server: QuicheConnection;
  out: Buffer;
}
/** Microseconds spent in send() and recv(), summed. */
export interface Timing {
  send: number;
  recv: number;
}

export async function credentials(dir: string): Promise<(datagramBytes: number) => Configs> {
  await initCa({ dir, trustDomain: 'bench.qmesh' });
  await issueHost({ dir, name: 'a' });
  await issueHost({ dir, name: 'b' });
  const read = (f: string): Uint8Array => new Uint8Array(fs.readFileSync(path.join(dir, f)));
  const configFor = (datagramBytes: number): Configs => {
    // The daemon's defaults (config/schema.ts), at the datagram size measured.
    const t = schema.tunnel;
    const tunnel = { idleTimeoutMs: t.idleTimeoutMs.default, maxStreams: t.maxStreams.default, congestionControl: t.congestionControl.default, maxDatagramBytes: datagramBytes } as Parameters<typeof makeQuicheConfig>[1];
    return {
      client: makeQuicheConfig({ caPem: read('ca.crt'), certPem: read('a.crt'), keyPem: read('a.key') }, tunnel),
      server: makeQuicheConfig({ caPem: read('ca.crt'), certPem: read('b.crt'), keyPem: read('b.key') }, tunnel),
    };
  };
  return configFor;
}

/** Moves every packet `from` has ready into `to`; returns how many, timing send and recv when asked. */
export function pump(from: QuicheConnection, to: QuicheConnection, fromAddr: HostPort, toAddr: HostPort, out: Buffer, timing: Timing | null): number {
  let n = 0;
  for (;;) {
    const t0 = performance.now();
    const r = from.send(out);
    const t1 = performance.now();
    if (r === null) break;
    try {
      to.recv(out.subarray(0, r[0]), { from: fromAddr, to: toAddr });
    } catch {
      // a packet quiche refuses is not timed differently
    }
    if (timing) {
      timing.send += t1 - t0;
      timing.recv += performance.now() - t1;
    }
    n++;
  }
  return n;
}

export function connectedPair(configs: Configs): Pair {
  const client = quiche.Connection.connect('b', crypto.randomBytes(CID_BYTES), CLIENT, SERVER, configs.client);
  const out = Buffer.alloc(65_535);
  // The server is created from the client's first packet, as the listener does.
  const first = client.send(out);
  if (first === null) throw new Error('client produced no Initial');
  const server = quiche.Connection.accept(crypto.randomBytes(CID_BYTES), null, SERVER, CLIENT, configs.server);
  server.recv(out.subarray(0, first[0]), { from: CLIENT, to: SERVER });
  for (let i = 0; i < 20 && !(client.isEstablished() && server.isEstablished()); i++) {
    pump(server, client, SERVER, CLIENT, out, null);
    pump(client, server, CLIENT, SERVER, out, null);
  }
  if (!client.isEstablished() || !server.isEstablished()) throw new Error('handshake did not complete');
  return { client, server, out };
}
