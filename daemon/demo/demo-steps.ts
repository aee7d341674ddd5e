// The steps of `qmesh demo` on a built Mesh, in the order a user sees them:
// servers in function namespaces, the plain-TCP baseline (latency and wire),
// qmesh daemons, requests both ways, the wire with qmesh, latency with qmesh,
// the comparison. demo.ts builds the Mesh, owns cleanup and signals.
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { ECHO_PORT, HTTP_PORT, httpGets, latencySamples, startEchoServer, startHttpServer, type HttpResult } from './demo-functions.js';
import { latencyNotes, latencyStats, latencyTable, requestLine, wireLines, type DemoOutput, type LatencyStats } from './demo-report.js';
import { captureUnderlay, findProgram } from './demo-wire.js';
import { ADMIN_PORT, QUIC_PORT, type Mesh } from './mesh.js';
import type { FunctionInfo, HostInfo } from './topology.js';

/** GETs per direction in the request step. */
const REQUESTS_PER_DIRECTION = 3;
/** Untimed connections before the timed ones: JIT, ARP and conntrack settle. */
const warmUpFor = (n: number): number => Math.min(20, Math.max(5, Math.round(n / 10)));

export class DemoSteps {
  readonly h1: HostInfo;
  readonly h2: HostInfo;
  /** fn-1-1 serves HTTP and calls fn-2-1; fn-1-2 is the latency client. */
  readonly f11: FunctionInfo;
  readonly f12: FunctionInfo;
  /** fn-2-1 serves HTTP; fn-2-2 runs the echo server and calls fn-1-1. */
  readonly f21: FunctionInfo;
  readonly f22: FunctionInfo;
  readonly tcpdump = findProgram('tcpdump');
  readonly warm: number;

  constructor(
    readonly mesh: Mesh,
    readonly out: DemoOutput,
    readonly requests: number,
  ) {
    const [h1, h2] = mesh.hosts;
    const [f11, f12] = h1?.functions ?? [];
    const [f21, f22] = h2?.functions ?? [];
    if (!h1 || !h2 || !f11 || !f12 || !f21 || !f22) throw new Error('the demo needs 2 hosts with 2 functions each');
    this.h1 = h1;
    this.h2 = h2;
    this.f11 = f11;
    this.f12 = f12;
    this.f21 = f21;
    this.f22 = f22;
    this.warm = warmUpFor(requests);
  }

  async run(): Promise<void> {
    const { out, mesh, f11, f21, f22 } = this;
    await out.step(`starting HTTP servers in fn-1-1 (${f11.ip}) and fn-2-1 (${f21.ip}), a TCP echo server in fn-2-2 (${f22.ip})`, () =>
      Promise.all([startHttpServer(mesh.topo, this.h1, f11), startHttpServer(mesh.topo, this.h2, f21), startEchoServer(mesh.topo, f22)]),
    );
    out.line();
    out.line('plain TCP first, before any qmesh daemon runs (no capture rules yet):');
    const plain = await this.measure('plain TCP');
    await this.wireCheck('without qmesh');
    out.line();
    await out.step('starting qmesh on host-1 and host-2 (`qmesh run` in each host namespace), waiting for their QUIC tunnels', () =>
      mesh.startAll(),
    );
    out.line();
    await this.requestsBothWays();
    out.line();
    await this.wireCheck('with qmesh');
    out.line();
    const qmesh = await this.measure('through qmesh');
    out.line();
    this.latencySummary(plain, qmesh);
    out.line();
  }

  /** The timed connect+echo loop from fn-1-2 to fn-2-2's echo server. */
  async measure(label: string): Promise<LatencyStats> {
    const what = `measuring ${this.requests} new TCP connections + 1 small request/response each, fn-1-2 -> fn-2-2:${ECHO_PORT}, ${label}`;
    return this.out.step(
      what,
      async () => latencyStats(await latencySamples(this.mesh.topo, this.f12, this.f22.ip, this.requests, this.warm)),
      (s) => `p50 ${s.p50.toFixed(2)} ms`,
    );
  }

  async requestsBothWays(): Promise<void> {
    const { out, mesh, f11, f21, f22 } = this;
    out.line('requests between functions on different hosts, each on a new TCP connection:');
    const urls = (ip: string): string[] =>
      Array.from({ length: REQUESTS_PER_DIRECTION }, (_, i) => `http://${ip}:${HTTP_PORT}/hello/${i + 1}`);
    const results: HttpResult[] = [];
    for (const [from, host, to] of [
      [f11, this.h1, f21],
      [f22, this.h2, f11],
    ] as const) {
      for (const r of await httpGets(mesh.topo, from, urls(to.ip))) {
        out.line(requestLine(`${from.name} (${host.name})`, r));
        results.push(r);
      }
    }
    const [s1, s2] = await Promise.all([mesh.status(this.h1), mesh.status(this.h2)]);
    const streams = (status: any, peer: string): string => String(status?.peers?.find((p: any) => p.name === peer)?.outbound?.streamsTotal ?? '?');
    out.line(
      `  carried by qmesh (each daemon's /status): host-1 -> host-2 ${streams(s1, 'host-2')} streams, host-2 -> host-1 ${streams(s2, 'host-1')} streams`,
    );
    const failed = results.filter((r) => r.status !== 200);
    if (failed.length > 0) throw new Error(`${failed.length} of ${results.length} requests through qmesh failed (first: ${failed[0]?.error ?? `HTTP ${failed[0]?.status}`})`);
  }

  /** tcpdump on the underlay bridge while fn-1-1 sends one marked request to fn-2-1. */
  async wireCheck(label: 'without qmesh' | 'with qmesh'): Promise<void> {
    const { out, mesh, f11, f21, tcpdump } = this;
    if (!tcpdump) {
      out.line(`  ${label}: tcpdump is not installed, so the wire check is skipped (install tcpdump to see what crosses the wire)`);
      return;
    }
    const marker = `qmesh-demo-marker-${randomBytes(6).toString('hex')}`;
    const pcap = path.join(mesh.dir, `underlay-${label.replace(/ /g, '-')}.pcap`);
    const { result, wire } = await out.step(`watching the wire between hosts (tcpdump on br0 in ${mesh.topo.underlayNs}) while fn-1-1 sends ${marker} to fn-2-1`, () =>
      captureUnderlay(mesh.topo, tcpdump, pcap, { quicPort: QUIC_PORT, plainPort: HTTP_PORT }, marker, () =>
        httpGets(mesh.topo, f11, [`http://${f21.ip}:${HTTP_PORT}/echo/${marker}`]),
      ),
    );
    const answer = result[0];
    if (answer?.status !== 200 || !answer.body?.includes(marker)) {
      throw new Error(`the marked request ${label} failed: ${answer?.error ?? `HTTP ${answer?.status} ${answer?.body ?? ''}`}`);
    }
    for (const line of wireLines(label, wire, label === 'with qmesh' ? 'quic' : 'plain', QUIC_PORT, HTTP_PORT)) out.line(line);
    out.line(
      label === 'with qmesh'
        ? '  (the answer came back carrying the marker, so it did cross the wire: inside QUIC, encrypted)'
        : '  (the request and its answer in plaintext: anyone who can see the network between hosts reads them)',
    );
  }

  latencySummary(plain: LatencyStats, qmesh: LatencyStats): void {
    const { out } = this;
    out.line(
      `latency of a new TCP connection + 1 small request/response, fn-1-2 (host-1) -> fn-2-2 (host-2), ` +
        `${this.requests} sequential connections after ${this.warm} untimed warm-up ones:`,
    );
    for (const line of latencyTable(plain, qmesh)) out.line(line);
    for (const line of latencyNotes(plain, qmesh)) out.line(line);
  }

  /** --keep: commands that reach what the demo left running. */
  keepHints(): string[] {
    const { mesh, h1, f11, f21, f22 } = this;
    const get = (ns: string, url: string): string =>
      findProgram('curl') ? `ip netns exec ${ns} curl -s ${url}` : `ip netns exec ${ns} node -e "fetch('${url}').then(r=>r.text()).then(console.log)"`;
    const hint = (cmd: string, why: string): string => `  ${cmd}\n      ${why}`;
    return [
      'try, as root:',
      hint(get(f11.ns, `http://${f21.ip}:${HTTP_PORT}/hello`), 'fn-1-1 (host-1) -> fn-2-1 (host-2), through qmesh'),
      hint(get(f22.ns, `http://${f11.ip}:${HTTP_PORT}/hello`), 'fn-2-2 (host-2) -> fn-1-1 (host-1), through qmesh'),
      hint(get(h1.ns, `http://127.0.0.1:${ADMIN_PORT}/status`), "host-1's daemon: tunnels, streams, bytes"),
      hint(`ip netns exec ${mesh.topo.underlayNs} tcpdump -i br0 -nn`, `the wire between hosts: only UDP ${QUIC_PORT}`),
      hint(`ip netns exec ${h1.ns} iptables -t nat -S QMESH_PREROUTING`, "host-1's capture rules"),
      hint(`tail -f ${path.join(mesh.dir, `${h1.name}.log`)}`, "host-1's daemon log (JSON lines)"),
      `  configs, certificates and captures: ${mesh.dir}`,
      `  namespaces: ${mesh.topo.namespaces.join(' ')}`,
    ];
  }
}
