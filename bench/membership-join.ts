// `npm run bench:join [-- --joins 20]`: with etcd membership, how long from a new
// host's registration to the first successful tunnelled connection to it from
// another host. Three hosts in network namespaces, a real three-member etcd cluster
// (one member per host, TLS, client-cert auth, the RBAC of deploy/etcd/), host-1 and
// host-2 running; host-3 joins and leaves `--joins` times. Per join:
//   t_reg     host-3's "registered in etcd" (its lease put has returned);
//   t_reload  host-1's "configuration reloaded" that lists host-3 (rules + data plane);
//   t_first   a prober in host-1's function, opening a connection every 10 ms to
//             host-3's function, gets its first echo back.
// Join time = t_first - t_reg; p50 and p99 over the joins. Every host has
// capture.failClosedCidrs 198.19.0.0/16 and host-3's rules are installed before its
// first start, so a connection that is not tunnelled never gets an echo (a success
// before t_reg fails the run); host-1's capture counter must go up at every join.
// Results go to bench/results/<time>-membership-join.{json,md}.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command } from 'commander';
import { CLI, Mesh, sleep } from '../daemon/demo/mesh.js';
import { makeEtcdPki, startEtcdCluster, type EtcdCluster } from '../daemon/demo/etcd-cluster.js';
import type { HostInfo } from '../daemon/demo/topology.js';

const PREFIX = '/qmesh/qmesh.test/hosts/';
const ECHO_PORT = 7100;
const PROBER = fileURLToPath(new URL('./clients/first-success.js', import.meta.url));

interface Join {
  joinMs: number;
  registrationToReloadMs: number;
  /** host-1's reload itself (its log's durationMs), and the iptables part of it (rulesMs). */
  reloadMs: number;
  reloadRulesMs: number;
  reloadToFirstMs: number;
  attempts: number;
}

const percentile = (sorted: readonly number[], p: number): number => sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;

function logEntries(mesh: Mesh, host: HostInfo): any[] {
  return (mesh.daemons.get(host.name)?.log ?? []).flatMap((l) => {
    try {
      return [JSON.parse(l)];
    } catch {
      return [];
    }
  });
}

async function waitFor<T>(what: string, ms: number, check: () => Promise<T | null> | T | null): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v !== null) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms: ${what}`);
    await sleep(20);
  }
}

async function oneJoin(mesh: Mesh, h1: HostInfo, h3: HostInfo): Promise<Join> {
  const captureBefore = (await mesh.status(h1)).capture.accepted as number;
  const prober = mesh.topo.spawn(h1.functions[0]!.ns, [process.execPath, PROBER, 'probe', JSON.stringify({ ip: h3.functions[0]!.ip, port: ECHO_PORT, intervalMs: 10, attemptTimeoutMs: 1000, deadlineMs: 30_000 })], { stdio: ['ignore', 'pipe', 'inherit'] });
  const lines: any[] = [];
  prober.stdout!.on('data', (b: Buffer) => b.toString().split('\n').filter(Boolean).forEach((l) => lines.push(JSON.parse(l))));
  await waitFor('prober ready', 5_000, () => (lines.some((l) => l.event === 'ready') ? true : null));
  const startedAt = Date.now();
  await mesh.startDaemon(h3, 20_000);
  const first = await waitFor('first tunnelled connection', 30_000, () => lines.find((l) => l.event === 'first-success' || l.event === 'deadline') ?? null);
  if (first.event !== 'first-success') throw new Error('no connection to host-3 succeeded within 30 s');
  const reg = await waitFor('host-3 registration logged', 2_000, () => logEntries(mesh, h3).find((e) => e.msg === 'registered in etcd') ?? null);
  const tReg = Date.parse(reg.time);
  const reload = await waitFor('host-1 reload logged', 2_000, () =>
    logEntries(mesh, h1).find((e) => e.msg === 'configuration reloaded' && Date.parse(e.time) >= startedAt && (e.peers as string[]).includes('host-3')) ?? null,
  );
  const tReload = Date.parse(reload.time);
  if (first.atMs < tReg) throw new Error(`a connection succeeded ${tReg - first.atMs} ms before host-3 registered: not tunnelled?`);
  const captureAfter = (await mesh.status(h1)).capture.accepted as number;
  if (captureAfter <= captureBefore) throw new Error('host-1 captured nothing: the successful connection was not tunnelled');
  // Leave: SIGTERM drains, then revokes the lease; wait until host-1 has dropped host-3.
  await mesh.stopDaemon(h3, 'SIGTERM', 15_000);
  await waitFor('host-1 drops host-3', 15_000, async () => (((await mesh.status(h1)).peers as any[]).some((p) => p.name === 'host-3') ? null : true));
  return {
    joinMs: first.atMs - tReg,
    registrationToReloadMs: tReload - tReg,
    reloadMs: Number(reload.durationMs),
    reloadRulesMs: Number(reload.rulesMs),
    reloadToFirstMs: first.atMs - tReload,
    attempts: first.attempts,
  };
}

async function main(): Promise<void> {
  const opts = new Command('bench:join')
    .description('etcd membership: registration -> first tunnelled connection, over repeated joins (needs root).')
    .option('--joins <n>', 'how many joins', '20')
    .option('--out <dir>', 'results folder', path.join(path.dirname(path.dirname(CLI)), '../../bench/results'))
    .parse(process.argv)
    .opts<{ joins: string; out: string }>();
  const joins = Number(opts.joins);
  if (process.getuid?.() !== 0) throw new Error('the bench needs root: network namespaces and iptables');
  const mesh = await Mesh.create({ hosts: 3, functionsPerHost: 1 });
  let etcd: EtcdCluster | undefined;
  try {
    const hosts = [...mesh.hosts];
    const [h1, , h3] = hosts as [HostInfo, HostInfo, HostInfo];
    const pki = await makeEtcdPki(path.join(mesh.dir, 'etcd-pki'), { memberIps: hosts.map((h) => h.underlayIp), clients: hosts.map((h) => h.name) });
    etcd = await startEtcdCluster({ members: hosts.map((h, i) => ({ name: `etcd-${i + 1}`, ns: h.ns, ip: h.underlayIp })), dir: path.join(mesh.dir, 'etcd'), pki });
    await etcd.enableAuth(PREFIX, hosts.map((h) => h.name));
    for (const h of hosts) {
      mesh.writeConfig(h, {
        configFor: () => ({
          peers: [],
          drain: { graceMs: 0 },
          // As README "Membership" recommends: a host that is not yet a peer is never reached in plaintext.
          capture: { failClosedCidrs: ['198.19.0.0/16'] },
          membership: { source: 'etcd', etcd: { endpoints: etcd!.endpoints, ...pki.client(h.name), cacheFile: path.join(mesh.dir, `${h.name}-membership.json`) } },
        }),
      });
    }
    mesh.topo.spawn(h3.functions[0]!.ns, [process.execPath, PROBER, 'serve', JSON.stringify({ port: ECHO_PORT })], { stdio: 'ignore' });
    // host-3's fail-closed rules before its first start: plaintext towards it is dropped, never echoed.
    const applied = await mesh.topo.exec(h3.ns, [process.execPath, CLI, 'iptables', 'apply', '--config', mesh.configPath(h3)]);
    if (applied.code !== 0) throw new Error(`iptables apply on host-3: ${applied.stderr}`);
    await Promise.all(hosts.slice(0, 2).map((h) => mesh.startDaemon(h)));
    await mesh.waitTunnelsUp();
    const results: Join[] = [];
    for (let i = 0; i < joins; i++) {
      const r = await oneJoin(mesh, h1, h3);
      results.push(r);
      process.stderr.write(
        `join ${i + 1}/${joins}: ${r.joinMs} ms (registration -> host-1 reload done ${r.registrationToReloadMs} ms, of which the reload ${r.reloadMs} ms and its iptables ${r.reloadRulesMs} ms; reload -> first echo ${r.reloadToFirstMs} ms)\n`,
      );
    }
    const sorted = results.map((r) => r.joinMs).sort((a, b) => a - b);
    const summary = {
      kind: 'membership-join',
      at: new Date().toISOString(),
      machine: { cores: os.cpus().length, load: os.loadavg()[0] ?? 0 },
      joins,
      joinMs: { p50: percentile(sorted, 50), p99: percentile(sorted, 99), min: sorted[0], max: sorted.at(-1) },
      registrationToReloadMs: { p50: percentile(results.map((r) => r.registrationToReloadMs).sort((a, b) => a - b), 50) },
      reloadMs: { p50: percentile(results.map((r) => r.reloadMs).sort((a, b) => a - b), 50) },
      reloadRulesMs: { p50: percentile(results.map((r) => r.reloadRulesMs).sort((a, b) => a - b), 50) },
      reloadToFirstMs: { p50: percentile(results.map((r) => r.reloadToFirstMs).sort((a, b) => a - b), 50) },
      results,
    };
    const text = [
      `# etcd membership: registration -> first tunnelled connection (${joins} joins, ${summary.at})`,
      '',
      `| | p50 | p99 | min | max |`,
      `|---|---|---|---|---|`,
      `| join (registration -> first echo from host-1) | ${summary.joinMs.p50} ms | ${summary.joinMs.p99} ms | ${summary.joinMs.min} ms | ${summary.joinMs.max} ms |`,
      '',
      `Of which, p50: registration -> host-1's reload done ${summary.registrationToReloadMs.p50} ms (the watch event, a 50 ms debounce, then the reload: ${summary.reloadMs.p50} ms, iptables ${summary.reloadRulesMs.p50} ms of it); reload -> first echo ${summary.reloadToFirstMs.p50} ms (tunnel handshake + the prober's 10 ms interval).`,
      `With ${joins} samples p99 is the largest sample; ${os.cpus().length} cores shared by three daemons, three etcd members and the prober, load ${summary.machine.load.toFixed(2)}.`,
      '',
    ].join('\n');
    process.stdout.write(`${text}\n`);
    fs.mkdirSync(opts.out, { recursive: true });
    const stem = path.join(opts.out, `${summary.at.replace(/[:.]/g, '-').slice(0, 19)}-membership-join`);
    fs.writeFileSync(`${stem}.json`, `${JSON.stringify(summary, null, 2)}\n`);
    fs.writeFileSync(`${stem}.md`, text);
  } finally {
    await etcd?.destroy();
    await mesh.destroy();
  }
}

main().catch((err) => {
  process.stderr.write(`${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
