// Sizes of the hostile-input cases (issue #6): short by default (CI on a shared
// 2-core machine), the full sizes with QMESH_FAULTS=full. Also the
// probes every case reports: a daemon's RSS and open file descriptors, read
// from /proc, and the one FIGURE line each case prints.
import fs from 'node:fs';
import type { Mesh, RunningDaemon } from '../../support/e2e-mesh.js';

export const FULL = process.env.QMESH_FAULTS === 'full';

export const PROFILE = FULL
  ? { garbageDatagrams: 1_000_000, floodConnections: 20_000, halfOpen: 2_000, streamResets: 50_000, initialFlood: 200_000, legitRequests: 200 }
  : { garbageDatagrams: 100_000, floodConnections: 3_000, halfOpen: 300, streamResets: 5_000, initialFlood: 20_000, legitRequests: 40 };

/** A time bound that grows with the profile: full runs are long on purpose. */
export const bound = (shortMs: number, fullMs: number): number => (FULL ? fullMs : shortMs);

/** Resident memory of a daemon in KiB (VmRSS from /proc/<pid>/status). */
export function rssKiB(d: RunningDaemon): number {
  const status = fs.readFileSync(`/proc/${d.child.pid}/status`, 'utf8');
  return Number(/^VmRSS:\s+(\d+) kB/m.exec(status)?.[1] ?? NaN);
}

/** Open file descriptors of a daemon. */
export function fdCount(d: RunningDaemon): number {
  return fs.readdirSync(`/proc/${d.child.pid}/fd`).length;
}

export const mib = (kib: number): string => `${(kib / 1024).toFixed(1)}MiB`;

/** Prints the case's one result line (vitest shows console.log output). */
export function figure(caseId: string, text: string): void {
  console.log(`FIGURE ${caseId} ${text}${FULL ? ' profile=full' : ' profile=short'}`);
}

export const HERE = new URL('.', import.meta.url).pathname;

export interface LegitResult {
  ok: number;
  failed: number;
  errors: Record<string, number>;
  p50Ms: number | null;
  maxMs: number | null;
}

/** Runs legit-client.mjs in `ns` (sequential request/responses) and returns its tally. */
export async function legitTraffic(
  mesh: Mesh,
  ns: string,
  spec: { ip: string; port: number; count: number; durationMs?: number; replyBytes: number; pauseMs?: number },
): Promise<LegitResult> {
  const bound = (spec.durationMs ?? 0) + spec.count * 16_000 + 10_000;
  const r = await mesh.topo.exec(ns, [process.execPath, `${HERE}legit-client.mjs`, JSON.stringify(spec)], { timeoutMs: bound });
  const line = r.stdout.trim().split('\n').pop() ?? '';
  if (!line.startsWith('{')) throw new Error(`legit client in ${ns}: no result (exit ${r.code}): ${r.stderr}`);
  return JSON.parse(line);
}

/** Runs udp-garbage.py in `ns` and returns its JSON line. */
export async function sendGarbage(
  mesh: Mesh,
  ns: string,
  to: { ip: string; port: number },
  count: number,
  opts: { seed?: number; pcap?: string; mode?: 'mixed' | 'initials'; timeoutMs?: number } = {},
): Promise<{ sent: number; byKind: Record<string, number>; errors: number; captured: number }> {
  const argv = ['python3', `${HERE}udp-garbage.py`, to.ip, String(to.port), String(count), String(opts.seed ?? 1), opts.pcap ?? '-', opts.mode ?? 'mixed'];
  const r = await mesh.topo.exec(ns, argv, { timeoutMs: opts.timeoutMs ?? 300_000 });
  const line = r.stdout.trim().split('\n').pop() ?? '';
  if (!line.startsWith('{')) throw new Error(`udp-garbage in ${ns}: no result (exit ${r.code}${r.timedOut ? ', timed out' : ''}): ${r.stderr}`);
  return JSON.parse(line);
}

/** Runs quic-initials.mjs in `ns`: real QUIC v1 Initials never followed up, and what came back. */
export async function sendInitials(
  mesh: Mesh,
  ns: string,
  spec: { ip: string; port: number; count: number; bindIp?: string; listenMs?: number; version?: number; truncateTo?: number },
): Promise<{ sent: number; responses: Record<string, number>; responseBytes: number; from: string }> {
  const r = await mesh.topo.exec(ns, [process.execPath, `${HERE}quic-initials.mjs`, JSON.stringify(spec)], { timeoutMs: 30_000 + spec.count * 20 });
  const line = r.stdout.trim().split('\n').pop() ?? '';
  if (!line.startsWith('{')) throw new Error(`quic-initials in ${ns}: no result (exit ${r.code}): ${r.stderr}`);
  return JSON.parse(line);
}

/** UDP counters of a namespace's kernel (/proc/net/snmp "Udp:"): InDatagrams, RcvbufErrors, ... */
export async function udpCounters(mesh: Mesh, ns: string): Promise<Record<string, number>> {
  const r = await mesh.topo.exec(ns, ['cat', '/proc/net/snmp']);
  const [names, values] = r.stdout.split('\n').filter((l) => l.startsWith('Udp:'));
  const keys = names!.split(/\s+/).slice(1);
  const nums = values!.split(/\s+/).slice(1).map(Number);
  return Object.fromEntries(keys.map((k, i) => [k, nums[i]!]));
}
