// A hostile QUIC client: `count` real, well-formed QUIC v1 client Initials (each
// from a fresh client connection, so each would start a handshake), sent from one
// UDP socket and never followed up; then it listens `listenMs` and classifies
// every datagram that came back. Prints one JSON line.
// Options: `version` rewrites the version field (e.g. one nobody supports), `truncateTo`
// cuts each datagram short (under the 1200 bytes a client Initial must fill).
//   node quic-initials.mjs '{"ip":..,"port":..,"count":..,"bindIp":..,"listenMs":..,"version":..,"truncateTo":..}'
// Output: {"sent":..,"responses":{"retry":..,"initial":..,"handshake":..,"versionNegotiation":..,"short":..,"other":..},"responseBytes":..,"from":"ip:port"}
//
// The work is done by the crate's example native/examples/quic_initials.rs (quinn-proto
// builds the Initials, a std UDP socket sends them), built by `npm run build:native`;
// this wrapper runs it with the same argument and passes its output and exit status on.
// QMESH_QUIC_INITIALS_BIN overrides the binary's path.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const bin =
  process.env.QMESH_QUIC_INITIALS_BIN ??
  fileURLToPath(new URL('../../../native/target/release/examples/quic_initials', import.meta.url));
if (!existsSync(bin)) {
  console.error(`quic-initials: ${bin} is missing; build it with \`npm run build:native\``);
  process.exit(127);
}

const child = spawn(bin, process.argv.slice(2), { stdio: 'inherit' });
for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP']) process.on(sig, () => child.kill(sig));
child.on('error', (e) => {
  console.error(`quic-initials: ${bin}: ${e.message}`);
  process.exit(127);
});
child.on('exit', (code, signal) => {
  if (signal) {
    process.removeAllListeners(signal);
    process.kill(process.pid, signal);
  }
  process.exit(code ?? 1);
});
