// Turns the /status document (status.ts) into the table `qmesh status` prints:
// one line per peer with both tunnels' health and the traffic both ways, under
// a header with the node, readiness, uptime and the capture/inbound counters.

/** The fields of /status the table reads (status.ts writes them). */
export interface StatusDocument {
  node: string;
  ready: boolean;
  uptimeSeconds: number;
  certificateNotAfter: string | null;
  certificate?: { expiresInSeconds: number; expiringSoon: boolean } | null;
  peers: Array<{
    name: string;
    endpoint: string;
    outbound: { state: string; rttMs: number | null; streamsActive: number; streamsTotal: number; bytesSent: number; bytesReceived: number; lastError: string | null; reconnects: number };
    inbound: { state: string; streamsActive: number; streamsTotal: number; bytesSent: number; bytesReceived: number };
  }>;
  capture: { accepted: number; refused: number; deniedByPolicy?: number; active: number } | null;
  inbound: { accepted: number; denied: number; deniedByPolicy?: number; connectFailed: number; active: number } | null;
  rules?: { ok: boolean; missing: string[]; error: string | null } | null;
  membership?: { source: 'file'; peers: number } | { source: 'etcd'; ageSeconds: number; confirmedAt: string | null; fromCache: boolean; watching: boolean; registered: boolean; revision: string; prefix: string; admitted: string[]; refused: Array<{ key: string; reason: string }> };
}

function membershipLine(m: NonNullable<StatusDocument['membership']>): string[] {
  if (m.source === 'file') return [`membership: file, ${m.peers} peer(s)`];
  const age = m.confirmedAt === null ? `never read from etcd (up ${formatDuration(m.ageSeconds)})` : m.ageSeconds === 0 ? 'current' : `${formatDuration(m.ageSeconds)} old`;
  const state = [m.fromCache ? 'from the cache' : `revision ${m.revision}`, m.watching ? 'watching' : 'NOT WATCHING', m.registered ? 'registered' : 'NOT REGISTERED'].join(', ');
  const lines = [`membership: etcd ${m.prefix}, ${m.admitted.length} peer(s), ${age} (${state})`];
  if (m.ageSeconds !== 0) lines.push('WARNING: etcd is not confirming the membership; the last one stays in force (README "Membership", runbook)');
  for (const r of m.refused) lines.push(`WARNING: etcd entry ${r.key} refused: ${r.reason}`);
  return lines;
}

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];

export function formatBytes(n: number): string {
  let v = n;
  let u = 0;
  while (v >= 1024 && u < UNITS.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${v} B` : `${v.toFixed(1)} ${UNITS[u]}`;
}

export function formatDuration(seconds: number): string {
  const d = Math.floor(seconds / 86400);
  const h = Math.floor((seconds % 86400) / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  const s = seconds % 60;
  return d > 0 ? `${d}d${h}h` : h > 0 ? `${h}h${m}m` : m > 0 ? `${m}m${s}s` : `${s}s`;
}

function table(rows: string[][]): string[] {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => r.map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i]!))).join('  ').trimEnd());
}

export function renderStatus(s: StatusDocument): string {
  const lines = [`node ${s.node}: ${s.ready ? 'ready' : 'NOT READY'}, up ${formatDuration(s.uptimeSeconds)}${s.certificateNotAfter ? `, certificate valid until ${s.certificateNotAfter}` : ''}`];
  const byPolicy = (n: number | undefined): string => (n === undefined ? '' : `, ${n} denied by policy`);
  if (s.capture) lines.push(`capture: ${s.capture.accepted} accepted, ${s.capture.refused} refused${byPolicy(s.capture.deniedByPolicy)}, ${s.capture.active} open`);
  if (s.inbound) lines.push(`inbound: ${s.inbound.accepted} delivered, ${s.inbound.denied} denied${byPolicy(s.inbound.deniedByPolicy)}, ${s.inbound.connectFailed} connect failed, ${s.inbound.active} open`);
  if (s.membership) lines.push(...membershipLine(s.membership));
  if (s.rules && !s.rules.ok) {
    lines.push(`WARNING: iptables rules ${s.rules.error ? `cannot be read: ${s.rules.error}` : `drifted: ${s.rules.missing.join('; ')}`}`);
  }
  if (s.certificate?.expiringSoon) {
    const left = s.certificate.expiresInSeconds;
    lines.push(left > 0 ? `WARNING: own certificate expires in ${formatDuration(left)}: issue and deploy a new one` : 'WARNING: own certificate has EXPIRED');
  }
  lines.push('');
  if (s.peers.length === 0) return [...lines, '(no peers configured)'].join('\n') + '\n';
  const rows = [['PEER', 'ENDPOINT', 'OUTBOUND', 'RTT', 'STREAMS', 'BYTES IN', 'BYTES OUT', 'INBOUND']];
  for (const p of s.peers) {
    const o = p.outbound;
    const i = p.inbound;
    rows.push([
      p.name,
      p.endpoint,
      o.state,
      o.rttMs === null ? '-' : `${Number(o.rttMs.toFixed(2))} ms`,
      `${o.streamsActive + i.streamsActive}/${o.streamsTotal + i.streamsTotal}`,
      formatBytes(o.bytesReceived + i.bytesReceived),
      formatBytes(o.bytesSent + i.bytesSent),
      i.state,
    ]);
  }
  lines.push(...table(rows));
  const errors = s.peers.filter((p) => p.outbound.state !== 'up' && p.outbound.lastError);
  if (errors.length > 0) lines.push('', ...errors.map((p) => `${p.name}: last error: ${p.outbound.lastError} (${p.outbound.reconnects} re-dials)`));
  lines.push('', 'STREAMS: open/total, both tunnels; BYTES: stream payload to (out) and from (in) the peer.');
  return lines.join('\n') + '\n';
}
