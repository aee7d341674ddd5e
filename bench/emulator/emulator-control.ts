// Orchestrator side of the link emulator: one link-emulator.js per host
// namespace, and the NFQUEUE rule that feeds it every packet leaving the host's
// underlay interface eth0. setLink(d, loss) gives each host's egress a hold of
// d/2, so the round-trip time between two hosts grows by exactly d (see README).
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { HostInfo } from '../../daemon/demo/topology.js';
import type { Mesh } from '../../daemon/demo/mesh.js';
import { CommandChild } from '../lib/child-process.js';
import type { Summary } from '../lib/stats.js';

/** Queue numbers are per network namespace; one fixed number per host is enough. */
export const QUEUE_NUM = 7;
const COMMENT = 'qmesh-bench: link emulator (delay and loss on the underlay)';
const EMULATOR_JS = path.join(path.dirname(fileURLToPath(import.meta.url)), 'link-emulator.js');

/**
 * The rule, as argv after `iptables -t mangle`. --queue-bypass: if the emulator
 * is not running the packets pass instead of being dropped, so a crashed
 * emulator shows up as missing delay (stats() then counts nothing), not as a hang.
 * ICMP is not queued: an ICMP error about a packet the host just rejected (a
 * refused QUIC dial) never left the host once it had been through the userspace
 * queue (seen here with REJECT in INPUT), which would hide qmesh's fast failure
 * detection. No measured path depends on ICMP timing.
 */
export function nfqueueRule(op: '-A' | '-D', iface = 'eth0'): string[] {
  return [op, 'POSTROUTING', '-o', iface, '!', '-p', 'icmp', '-m', 'comment', '--comment', COMMENT, '-j', 'NFQUEUE', '--queue-num', String(QUEUE_NUM), '--queue-bypass'];
}

/**
 * Loss without delay, done by the kernel (`-m statistic --mode random`): exact
 * and free. The nfqueue binding hands JS one packet per event-loop turn, about
 * 20,000 packets/s here, which would cap every transport near 20 MB/s in a bulk
 * test; delays only matter at low packet rates, where that is no limit.
 * The rule sits on the RECEIVING host's PREROUTING: locally generated TCP is
 * always built as GSO super-packets and only cut into wire packets when it leaves
 * eth0, so on the sending side one "packet" could be 45 of them. With TSO/GSO
 * off on eth0 (lib/offloads.ts) what arrives is one wire packet per skb.
 */
export function kernelLossRule(op: '-A' | '-D', lossRate: number, iface = 'eth0'): string[] {
  return [op, 'PREROUTING', '-i', iface, '-m', 'statistic', '--mode', 'random', '--probability', String(lossRate), '-m', 'comment', '--comment', `${COMMENT}: ${lossRate} loss`, '-j', 'DROP'];
}

export interface EmulatorStats {
  packets: number;
  dropped: number;
  passed: number;
  held: number;
  queued: number;
  leadMs: number;
  settings: { holdMs: number; lossRate: number };
  /** Actual hold minus the configured hold, per released packet. */
  holdErrorMs: Summary;
}

export class LinkEmulator {
  #procs = new Map<string, { host: HostInfo; proc: CommandChild }>();
  #ruleInstalled = false;
  #kernelLoss: number | null = null;
  /** Round-trip time added between two hosts, ms. */
  rttAddedMs = 0;
  lossRate = 0;

  constructor(private readonly mesh: Mesh) {}

  /** Starts one emulator per host (no rule yet: traffic is untouched until enable()). */
  async start(): Promise<void> {
    await Promise.all(
      this.mesh.hosts.map(async (host) => {
        const proc = await CommandChild.start(this.mesh.topo, host.ns, [process.execPath, EMULATOR_JS, String(QUEUE_NUM)], `emulator ${host.name}`);
        this.#procs.set(host.name, { host, proc });
      }),
    );
  }

  get enabled(): boolean {
    return this.#ruleInstalled;
  }

  /** Puts the emulator on the path (installs the NFQUEUE rule in every host). */
  async enable(): Promise<void> {
    if (this.#ruleInstalled) return;
    await this.#iptables('-A');
    this.#ruleInstalled = true;
  }

  /** Takes the emulator off the path: packets go straight out again. */
  async disable(): Promise<void> {
    if (this.#kernelLoss !== null) {
      await this.#run(kernelLossRule('-D', this.#kernelLoss));
      this.#kernelLoss = null;
    }
    if (!this.#ruleInstalled) return;
    await this.#iptables('-D');
    this.#ruleInstalled = false;
  }

  /** Drops lossRate of every host's egress packets in the kernel, with no added delay (see kernelLossRule). */
  async enableKernelLoss(lossRate: number): Promise<void> {
    await this.disable();
    await this.#run(kernelLossRule('-A', lossRate));
    this.#kernelLoss = lossRate;
  }

  /** Packets each host's kernel-loss rule has dropped so far (iptables counters). */
  async kernelLossCounters(): Promise<Record<string, number>> {
    const out: Record<string, number> = {};
    for (const h of this.mesh.hosts) {
      const r = await this.mesh.topo.exec(h.ns, ['iptables', '-w', '-t', 'mangle', '-L', 'PREROUTING', '-v', '-x', '-n']);
      const line = r.stdout.split('\n').find((l) => l.includes('statistic'));
      out[h.name] = Number(line?.trim().split(/\s+/)[0] ?? NaN);
    }
    return out;
  }

  /** d = added round-trip time in ms; each host holds its egress packets d/2. */
  async setLink(rttAddedMs: number, lossRate = 0): Promise<void> {
    await Promise.all([...this.#procs.values()].map(({ proc }) => proc.call('set', { holdMs: rttAddedMs / 2, lossRate })));
    this.rttAddedMs = rttAddedMs;
    this.lossRate = lossRate;
  }

  /** Per-host counters since the last reset. */
  async stats(reset = true): Promise<Record<string, EmulatorStats>> {
    const out: Record<string, EmulatorStats> = {};
    for (const [name, { proc }] of this.#procs) out[name] = await proc.call<EmulatorStats>('stats', { reset });
    return out;
  }

  async stop(): Promise<void> {
    await this.disable().catch(() => undefined);
    await Promise.all([...this.#procs.values()].map(({ proc }) => proc.stop()));
    this.#procs.clear();
  }

  async #iptables(op: '-A' | '-D'): Promise<void> {
    await this.#run(nfqueueRule(op));
  }

  async #run(rule: string[]): Promise<void> {
    await Promise.all(
      this.mesh.hosts.map(async (h) => {
        const r = await this.mesh.topo.exec(h.ns, ['iptables', '-w', '-t', 'mangle', ...rule]);
        if (r.code !== 0) throw new Error(`iptables -t mangle ${rule.join(' ')} in ${h.name}: ${r.stderr.trim()}`);
      }),
    );
  }
}
