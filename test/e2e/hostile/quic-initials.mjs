// A hostile QUIC client: `count` real, well-formed QUIC v1 client Initials (each
// from a fresh quiche connection, so each would start a handshake), sent from one
// UDP socket and never followed up; then it listens `listenMs` and classifies
// every datagram that came back. Prints one JSON line.
// Options: `version` rewrites the version field (e.g. one nobody supports), `truncateTo`
// cuts each datagram short (under the 1200 bytes a client Initial must fill).
//   node quic-initials.mjs '{"ip":..,"port":..,"count":..,"bindIp":..,"listenMs":..,"version":..,"truncateTo":..}'
import crypto from 'node:crypto';
import dgram from 'node:dgram';
import { native } from '@matrixai/quic';

const spec = JSON.parse(process.argv[2]);
const { quiche } = native;
const config = quiche.Config.withBoringSslCtx(false, false, null, null, null, null);
config.setApplicationProtos(['qmesh/1']);
config.setMaxIdleTimeout(30_000);

const sock = dgram.createSocket('udp4');
await new Promise((r) => sock.bind({ address: spec.bindIp ?? '0.0.0.0', port: 0 }, r));
const local = { host: sock.address().address, port: sock.address().port };
const remote = { host: spec.ip, port: spec.port };

const responses = { retry: 0, initial: 0, handshake: 0, versionNegotiation: 0, short: 0, other: 0 };
let responseBytes = 0;
sock.on('message', (m) => {
  responseBytes += m.length;
  const b = m[0];
  if ((b & 0x80) === 0) responses.short++;
  else if (m.readUInt32BE(1) === 0) responses.versionNegotiation++;
  else responses[['initial', 'other', 'handshake', 'retry'][(b >> 4) & 3]]++;
});

const out = Buffer.alloc(1500);
let sent = 0;
for (let i = 0; i < spec.count; i++) {
  const conn = quiche.Connection.connect('host', crypto.randomBytes(20), local, remote, config);
  const r = conn.send(out);
  if (!r) continue;
  if (spec.version !== undefined) out.writeUInt32BE(spec.version, 1);
  const n = Math.min(r[0], spec.truncateTo ?? r[0]);
  await new Promise((res) => sock.send(out.subarray(0, n), remote.port, remote.host, () => res()));
  sent++;
}
await new Promise((r) => setTimeout(r, spec.listenMs ?? 1000));
sock.close();
console.log(JSON.stringify({ sent, responses, responseBytes, from: `${local.host}:${local.port}` }));
