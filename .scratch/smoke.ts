import { spawn } from 'node:child_process';
import fs from 'node:fs';
import { startMesh, destroyMesh, logOf } from '../test/support/e2e-mesh.js';
import { FnServer, fnClient, sleep } from '../test/support/fn-net.js';
const P = '/tmp/etcdpki';
const mesh = await startMesh({ hosts: 3, configFor: (h) => ({ peers: [], membership: { source: 'etcd', etcd: { endpoints: ['https://198.18.0.1:2379'], ca: `${P}/ca.crt`, cert: `${P}/${h.name}.crt`, key: `${P}/${h.name}.key`, leaseTtlMs: 3000, cacheFile: `/tmp/etcdpki/cache-${h.name}.json` } } }) }, false);
const [h1, h2, h3] = mesh.hosts;
fs.rmSync('/tmp/etcdpki/data', { recursive: true, force: true });
const etcd = spawn('ip', ['netns', 'exec', h1!.ns, 'etcd', '--name', 'e1', '--data-dir', '/tmp/etcdpki/data', '--listen-client-urls', 'https://198.18.0.1:2379', '--advertise-client-urls', 'https://198.18.0.1:2379', '--listen-peer-urls', 'http://127.0.0.1:2380', '--initial-advertise-peer-urls', 'http://127.0.0.1:2380', '--initial-cluster', 'e1=http://127.0.0.1:2380', '--cert-file', `${P}/server.crt`, '--key-file', `${P}/server.key`, '--client-cert-auth', '--trusted-ca-file', `${P}/ca.crt`], { stdio: ['ignore', 'ignore', 'pipe'] });
let elog = ''; etcd.stderr.on('data', (b) => (elog += b));
try {
  await sleep(2500);
  for (const h of [h1, h2]) await mesh.startDaemon(h!);
  for (const h of mesh.hosts) await FnServer.start(mesh, h.functions[0]!.ns, 'echo', { ip: h.functions[0]!.ip, port: 7007 });
  await sleep(1500);
  console.log('h1 status membership', JSON.stringify((await mesh.status(h1!)).membership));
  console.log('h1->h2', JSON.stringify(await fnClient(mesh, h1!.functions[0]!.ns, 'rpc', { ip: h2!.functions[0]!.ip, port: 7007, requestBytes: 100, timeoutMs: 3000 })));
  const t0 = Date.now();
  await mesh.startDaemon(h3!);
  console.log('h3 started in', Date.now() - t0);
  for (let i = 0; i < 50; i++) {
    const r = await fnClient(mesh, h1!.functions[0]!.ns, 'rpc', { ip: h3!.functions[0]!.ip, port: 7007, requestBytes: 100, timeoutMs: 500 });
    if (!r.error) { console.log('h1->h3 ok after', Date.now() - t0); break; }
  }
  await mesh.stopDaemon(h3!, 'SIGKILL');
  const tk = Date.now();
  for (let i = 0; i < 100; i++) { const s = await mesh.status(h1!); if (!s.peers.some((p: any) => p.name === 'host-3')) { console.log('h3 gone from h1 after', Date.now() - tk); break; } await sleep(100); }
  etcd.kill('SIGSTOP');
  await sleep(5000);
  console.log('outage status', JSON.stringify((await mesh.status(h1!)).membership));
  console.log('h1->h2 in outage', JSON.stringify(await fnClient(mesh, h1!.functions[0]!.ns, 'rpc', { ip: h2!.functions[0]!.ip, port: 7007, requestBytes: 100, timeoutMs: 3000 })).slice(0, 200));
  await mesh.stopDaemon(h2!);
  await mesh.startDaemon(h2!, 15000);
  console.log('h2 restarted; status', JSON.stringify((await mesh.status(h2!)).membership));
  console.log('h2->h1 restarted', JSON.stringify(await fnClient(mesh, h2!.functions[0]!.ns, 'rpc', { ip: h1!.functions[0]!.ip, port: 7007, requestBytes: 100, timeoutMs: 3000 })).slice(0, 200));
  etcd.kill('SIGCONT');
  await sleep(4000);
  console.log('after', JSON.stringify((await mesh.status(h2!)).membership));
} finally {
  for (const d of mesh.daemons.values()) console.log(d.host.name, logOf(d).filter((e) => e.component === 'membership' || /reload|etcd|membership/.test(e.msg)).map((e) => `${e.time} ${e.level} ${e.msg} ${e.err ?? e.reason ?? ''}`).join('\n'));
  etcd.kill('SIGKILL');
  await destroyMesh(mesh);
  console.log(elog.split('\n').filter((l) => /error|warn/i.test(l)).slice(-5).join('\n'));
}
