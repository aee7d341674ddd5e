// Two in-process daemons on loopback addresses with a fake original-destination
// source (as linkerd2-proxy's tests do), so the data path runs without root,
// namespaces or iptables. The end-to-end suites in test/e2e use the real ones.
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { parseConfig, type Config } from '../../daemon/config/load.js';
import type { SocketOptions } from '../../daemon/capture/socket-options.js';
import { Daemon } from '../../daemon/daemon.js';
import { createLogger } from '../../daemon/log.js';
import { initCa, issueHost } from '../../daemon/pki/index.js';

export interface LoopbackHost {
  name: string;
  quic: string; // 127.0.0.x
  cidr: string; // 127.<10+i>.0.0/16 functions
  capturePort: number;
  adminPort: number;
  daemon: Daemon;
  config: Config;
}

/** Where the next captured connection "was going": set by the test before it connects. */
export const fakeDestinations = new Map<number, { host: string; port: number }>();

export const fakeSockets: SocketOptions = {
  originalDestination(socket) {
    const d = fakeDestinations.get(socket.remotePort ?? 0);
    if (!d) throw Object.assign(new Error('no fake destination'), { code: 'ENOENT' });
    return d;
  },
  connectMarked(host, port) {
    return net.connect({ host, port, allowHalfOpen: true });
  },
};

export async function makePki(names: string[], trustDomain = 'qmesh.test'): Promise<string> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qmesh-pki-'));
  await initCa({ dir, trustDomain });
  for (const n of names) await issueHost({ dir, name: n });
  return dir;
}

export async function startLoopbackMesh(count = 2, basePort = 24000 + Math.floor(Math.random() * 2000) * 4): Promise<{ hosts: LoopbackHost[]; pki: string; stop(): Promise<void> }> {
  const names = Array.from({ length: count }, (_, i) => `lo-${i + 1}`);
  const pki = await makePki(names);
  const specs = names.map((name, i) => ({ name, quic: `127.0.0.${i + 1}`, cidr: `127.${10 + i}.0.0/16`, capturePort: basePort + 2 * i, adminPort: basePort + 2 * i + 1 }));
  const hosts: LoopbackHost[] = [];
  const level = process.env.QMESH_TEST_LOG ?? 'silent';
  for (const s of specs) {
    const raw = {
      node: { name: s.name },
      listen: { quic: `${s.quic}:${basePort + 100}`, capture: s.capturePort, admin: `127.0.0.1:${s.adminPort}` },
      tls: { ca: 'ca.crt', cert: `${s.name}.crt`, key: `${s.name}.key` },
      local: { cidrs: [s.cidr] },
      peers: specs.filter((p) => p !== s).map((p) => ({ name: p.name, endpoint: `${p.quic}:${basePort + 100}`, cidrs: [p.cidr] })),
      log: { level },
      capture: { applyRules: false },
    };
    const config = parseConfig(raw, path.join(pki, `${s.name}.json`));
    const daemon = new Daemon(config, createLogger(level, 2), { sockets: fakeSockets, rules: null });
    hosts.push({ ...s, daemon, config });
  }
  await Promise.all(hosts.map((h) => h.daemon.start()));
  return {
    hosts,
    pki,
    async stop() {
      await Promise.all(hosts.map((h) => h.daemon.stop(0)));
      fs.rmSync(pki, { recursive: true, force: true });
    },
  };
}

let nextLocalPort = 30000 + Math.floor(Math.random() * 20000);

/** Connects "from a function" (source `sourceIp`) to `dst` through the host's capture port. */
export function connectCaptured(host: LoopbackHost, sourceIp: string, dst: { host: string; port: number }): Promise<net.Socket> {
  const localPort = nextLocalPort++;
  if (nextLocalPort > 60000) nextLocalPort = 30000;
  // The fake original-destination source looks the destination up by the client's port.
  fakeDestinations.set(localPort, dst);
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: '127.0.0.1', port: host.capturePort, localAddress: sourceIp, localPort, allowHalfOpen: true });
    s.once('connect', () => resolve(s));
    s.once('error', reject);
  });
}
