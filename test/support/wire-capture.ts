// A tcpdump on the mesh's underlay (br0 in the underlay namespace by default):
// what an observer between the hosts sees. The suites check that it saw only
// QUIC datagrams between underlay addresses and no plaintext marker.
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import type { Mesh } from '../../daemon/demo/mesh.js';
import { withTimeout } from './fn-net.js';

const START_MS = 10_000;
const STOP_MS = 15_000;
const READ_MS = 60_000;

export interface WireSummary {
  /** IPv4 UDP packets with port `quicPort` on one side, between two underlay addresses. */
  quicPackets: number;
  /** Sum of their UDP payload lengths. */
  quicBytes: number;
  /** Address:port pairs seen on QUIC packets, e.g. "198.18.0.1.39871 > 198.18.0.2.4433". */
  quicFlows: Set<string>;
  /** Link-layer housekeeping that carries no application data: ARP and IPv6 neighbour/router discovery. */
  housekeeping: number;
  /** Every other line (the first 50): TCP, UDP elsewhere, anything unexpected. */
  other: string[];
  otherCount: number;
  /** Lines mentioning TCP at all. */
  tcp: string[];
}

const QUIC_LINE = /^\S+ IP (\d+\.\d+\.\d+\.\d+)\.(\d+) > (\d+\.\d+\.\d+\.\d+)\.(\d+): UDP, length (\d+)$/;
const HOUSEKEEPING = /^\S+ (ARP, |IP6 \S+ > \S+: (HBH )?ICMP6, (neighbor|router|multicast listener))/;

export class WireCapture {
  /** tcpdump's own end-of-run counters ("N packets dropped by kernel"). */
  dropped = 0;
  captured = 0;
  private stderr = '';

  private constructor(
    private readonly child: ChildProcess,
    readonly file: string,
  ) {
    child.stderr?.setEncoding('utf8').on('data', (d: string) => (this.stderr += d));
  }

  /** Starts tcpdump -i iface inside ns writing to a file in the mesh's folder; resolves once it listens. */
  static async start(mesh: Mesh, opts: { ns?: string; iface?: string; name?: string } = {}): Promise<WireCapture> {
    const ns = opts.ns ?? mesh.topo.underlayNs;
    const iface = opts.iface ?? 'br0';
    const file = path.join(mesh.dir, `${opts.name ?? 'wire'}-${Date.now()}.pcap`);
    // -Z root: write the file as root (the mesh folder is 0700); -B: 64 MiB kernel buffer so bulk
    // runs drop nothing; --immediate-mode: without it libpcap hands packets over a ring block at a
    // time, and a capture stopped within the block timeout (short tests) records nothing at all.
    const child = mesh.topo.spawn(ns, ['tcpdump', '-Z', 'root', '-B', '65536', '--immediate-mode', '-U', '-nn', '-i', iface, '-w', file], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    const cap = new WireCapture(child, file);
    await withTimeout(
      new Promise<void>((resolve, reject) => {
        const check = (): void => {
          if (/listening on/.test(cap.stderr)) resolve();
        };
        child.stderr?.on('data', check);
        child.once('exit', (code) => reject(new Error(`tcpdump exited ${code}: ${cap.stderr}`)));
        check();
      }),
      START_MS,
      `tcpdump on ${iface} in ${ns}`,
    );
    return cap;
  }

  /** SIGINT (tcpdump flushes the file and prints its counters), bounded. */
  async stop(): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) {
      const exited = once(this.child, 'exit');
      this.child.kill('SIGINT');
      await withTimeout(exited, STOP_MS, 'tcpdump exit').catch(() => this.child.kill('SIGKILL'));
    }
    this.captured = Number(/(\d+) packets? captured/.exec(this.stderr)?.[1] ?? 0);
    this.dropped = Number(/(\d+) packets? dropped by kernel/.exec(this.stderr)?.[1] ?? 0);
  }

  /** Does `text` occur anywhere in the raw capture file (headers and payloads alike)? */
  contains(text: string): boolean {
    return fs.readFileSync(this.file).includes(Buffer.from(text, 'latin1'));
  }

  /** Classifies every packet `tcpdump -r -nn` prints. */
  async summarize(underlayIps: readonly string[], quicPort: number): Promise<WireSummary> {
    const s: WireSummary = { quicPackets: 0, quicBytes: 0, quicFlows: new Set(), housekeeping: 0, other: [], otherCount: 0, tcp: [] };
    const ips = new Set(underlayIps);
    const port = String(quicPort);
    const reader = spawn('tcpdump', ['-r', this.file, '-nn'], { stdio: ['ignore', 'pipe', 'ignore'] });
    const done = once(reader, 'exit');
    const lines = readline.createInterface({ input: reader.stdout! });
    lines.on('line', (line) => {
      const m = QUIC_LINE.exec(line);
      if (m && ips.has(m[1]!) && ips.has(m[3]!) && (m[2] === port || m[4] === port)) {
        s.quicPackets++;
        s.quicBytes += Number(m[5]);
        s.quicFlows.add(`${m[1]}.${m[2]} > ${m[3]}.${m[4]}`);
      } else if (HOUSEKEEPING.test(line)) {
        s.housekeeping++;
      } else {
        s.otherCount++;
        if (s.other.length < 50) s.other.push(line);
        if (/\btcp\b|Flags \[/i.test(line) && s.tcp.length < 50) s.tcp.push(line);
      }
    });
    await withTimeout(done, READ_MS, 'tcpdump -r');
    return s;
  }
}
