// The demo's wire check: runs tcpdump on the underlay bridge (br0 in the
// underlay namespace, which every packet between hosts crosses) while one
// request carrying a unique marker is made, then reads the capture back with
// `tcpdump -r -nn` (its own filters classify the packets) and searches the raw
// pcap bytes for the marker. demo.ts prints the WireReport.
import fs from 'node:fs';
import path from 'node:path';
import { runCommand } from './netns-command.js';
import type { Topology } from './topology.js';

/** tcpdump prints "listening on br0" once its socket is open; a second is plenty. */
const TCPDUMP_READY_MS = 5_000;
/** Lets the last ACKs and FINs of the marked request reach the capture before it stops. */
const TRAILING_PACKETS_MS = 100;
const TCPDUMP_EXIT_MS = 3_000;
/** Frames that carry no application data: ARP, IGMP and IPv6 neighbour discovery / MLD (link-local multicast). */
const LINK_FILTER = 'arp or igmp or (ip6 and (icmp6 or ip6 multicast))';

export interface WireReport {
  packets: number;
  /** Packets to or from UDP port `quicPort`. */
  quic: number;
  /** Packets to or from TCP port `plainPort` (the application's own port). */
  plainTcp: number;
  /** ARP, IGMP and IPv6 neighbour discovery / MLD: link housekeeping. */
  link: number;
  /** Anything else, as tcpdump prints it (first few lines). */
  other: string[];
  otherCount: number;
  markerSeen: boolean;
}

/** Absolute path of an installed program (e.g. tcpdump), or undefined when it is not installed. */
export function findProgram(name: string): string | undefined {
  const dirs = [...(process.env.PATH ?? '').split(':'), '/usr/sbin', '/usr/bin', '/sbin', '/bin'];
  for (const dir of dirs) {
    if (!dir) continue;
    const candidate = path.join(dir, name);
    try {
      fs.accessSync(candidate, fs.constants.X_OK);
      if (fs.statSync(candidate).isFile()) return candidate;
    } catch {
      // Not here.
    }
  }
  return undefined;
}

/**
 * Captures every frame on br0 in the underlay namespace while `during` runs and
 * reports what crossed. `during` returns its own result alongside.
 */
export async function captureUnderlay<T>(
  topo: Topology,
  tcpdump: string,
  pcap: string,
  ports: { quicPort: number; plainPort: number },
  marker: string,
  during: () => Promise<T>,
): Promise<{ result: T; wire: WireReport }> {
  // --immediate-mode: hand each packet over at once (without it, TPACKET_V3 holds packets for up
  // to a second and those still held when tcpdump stops are lost); -U: write each packet at once;
  // -Z root: stay root so the file lands in our 0700 folder.
  const argv = [tcpdump, '-i', 'br0', '-nn', '--immediate-mode', '-U', '-s', '0', '-Z', 'root', '-w', pcap];
  const child = topo.spawn(topo.underlayNs, argv, {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  let stderr = '';
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`tcpdump did not start within ${TCPDUMP_READY_MS} ms: ${stderr.trim()}`)), TCPDUMP_READY_MS);
    child.stderr?.on('data', (d: Buffer) => {
      stderr += d.toString();
      if (stderr.includes('listening on')) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`tcpdump exited ${code}: ${stderr.trim()}`));
    });
  });
  let result: T;
  try {
    result = await during();
    await new Promise((r) => setTimeout(r, TRAILING_PACKETS_MS));
  } finally {
    child.kill('SIGINT');
    const timer = setTimeout(() => child.kill('SIGKILL'), TCPDUMP_EXIT_MS);
    await exited;
    clearTimeout(timer);
  }
  return { result, wire: await readCapture(tcpdump, pcap, ports, marker) };
}

async function readCapture(tcpdump: string, pcap: string, ports: { quicPort: number; plainPort: number }, marker: string): Promise<WireReport> {
  const read = async (filter: string[]): Promise<string[]> => {
    const r = await runCommand(tcpdump, ['-r', pcap, '-nn', ...filter]);
    if (r.code !== 0) throw new Error(`tcpdump -r ${pcap} failed: ${r.stderr.trim()}`);
    return r.stdout.split('\n').filter((l) => l.trim() !== '');
  };
  const quicFilter = `udp port ${ports.quicPort}`;
  const [all, quic, plainTcp, link, other] = await Promise.all([
    read([]),
    read([quicFilter]),
    read([`tcp port ${ports.plainPort}`]),
    read([LINK_FILTER]),
    read([`not (${quicFilter}) and not (${LINK_FILTER})`]),
  ]);
  return {
    packets: all.length,
    quic: quic.length,
    plainTcp: plainTcp.length,
    link: link.length,
    other: other.slice(0, 3),
    otherCount: other.length,
    markerSeen: fs.readFileSync(pcap).includes(Buffer.from(marker)),
  };
}
