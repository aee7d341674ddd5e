// Case 13: capture completeness. A canary sent over TCP towards a peer CIDR from
// a function, from a host process (root, the daemon's user here), and from a
// dedicated uid is tunnelled; from a socket carrying the daemon's own SO_MARK
// (the one thing capture exempts) it is dropped. UDP towards a peer CIDR is
// dropped. The canary never appears on the underlay. And if a capture rule
// cannot be installed, the daemon refuses to start and names the command.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI } from '../../../daemon/demo/mesh.js';
import { destroyMesh, startMesh, type HostInfo, type Mesh } from '../../support/e2e-mesh.js';
import { FnServer, fnClient, plaintextMarker, sleep } from '../../support/fn-net.js';
import { WireCapture } from '../../support/wire-capture.js';
import { figure, HERE } from './profile.js';

const PORT = 7301;
const UDP_PORT = 7302;
const FN_TCP = path.resolve(HERE, '../../support/fn-tcp.mjs');
const MARK = '0x51e5';
let mesh: Mesh;
let h1: HostInfo;
let h2: HostInfo;

beforeAll(async () => {
  mesh = await startMesh({ hosts: 2, functionsPerHost: 1 });
  [h1, h2] = mesh.hosts as [HostInfo, HostInfo];
  await FnServer.start(mesh, h2.functions[0]!.ns, 'rpc', { ip: h2.functions[0]!.ip, port: PORT, replyBytes: 500 });
}, 60_000);

afterAll(async () => {
  await destroyMesh(mesh);
}, 60_000);

async function python(ns: string, args: string[], timeoutMs = 15_000): Promise<any> {
  const r = await mesh.topo.exec(ns, ['/usr/bin/python3', `${HERE}canary.py`, ...args], { timeoutMs });
  const line = r.stdout.trim().split('\n').pop() ?? '';
  if (!line.startsWith('{')) throw new Error(`canary.py ${args[0]}: no result (exit ${r.code}): ${r.stderr}`);
  return JSON.parse(line);
}

describe('case 13: capture completeness', () => {
  it('tunnels or drops every canary towards a peer CIDR; none crosses the underlay in plaintext', async () => {
    const dst = h2.functions[0]!;
    const canary = plaintextMarker('canary13');
    const wire = await WireCapture.start(mesh, { name: 'canary' });
    const rpc = { ip: dst.ip, port: PORT, requestBytes: 8_000, marker: canary, timeoutMs: 10_000 };
    const before = (await mesh.status(h1)).capture.accepted;
    const fromFunction = await fnClient(mesh, h1.functions[0]!.ns, 'rpc', rpc);
    const fromHost = await fnClient(mesh, h1.ns, 'rpc', rpc);
    const asUid = await mesh.topo.exec(
      h1.ns,
      ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, FN_TCP, 'client', 'rpc', JSON.stringify(rpc)],
      { timeoutMs: 15_000 },
    );
    const fromUid = JSON.parse(asUid.stdout.split('\n').find((l) => l.startsWith('{"event":"result"')) ?? '{"error":"no result"}');
    const accepted = (await mesh.status(h1)).capture.accepted - before;
    const marked = await python(h1.ns, ['tcp-marked', dst.ip, String(PORT), MARK, canary]);
    // UDP from a function and from the host towards the peer's function, with a listener there.
    const [listened, udpFn, udpHost] = await Promise.all([
      python(dst.ns, ['udp-listen', dst.ip, String(UDP_PORT), '4']),
      sleep(1000).then(() => python(h1.functions[0]!.ns, ['udp', dst.ip, String(UDP_PORT), canary, '50'])),
      sleep(1000).then(() => python(h1.ns, ['udp', dst.ip, String(UDP_PORT), canary, '50'])),
    ]);
    await wire.stop();
    const seen = wire.contains(canary);
    const summary = await wire.summarize([h1.underlayIp, h2.underlayIp], 4433);
    figure(
      'case-13',
      `canary: function=${fromFunction.error ?? 'tunnelled'} host=${fromHost.error ?? 'tunnelled'} uid65534=${fromUid.error ?? 'tunnelled'} ` +
        `captured=${accepted} markedSocket=${marked.outcome} udpSent=${udpFn.sent + udpHost.sent} (local EPERM ${udpFn.errors + udpHost.errors}) ` +
        `udpReceived=${listened.received} plaintextOnUnderlay=${seen} underlayTcpPackets=${summary.tcp.length} quicPackets=${summary.quicPackets}`,
    );
    for (const r of [fromFunction, fromHost, fromUid]) expect(r).toMatchObject({ error: null, replyBytes: 500 });
    expect(accepted).toBe(3); // all three were captured (the uid is not exempt)
    expect(marked.outcome).not.toBe('connected'); // the mark skips capture, and the filter drops it
    expect(listened.received).toBe(0);
    expect(seen).toBe(false);
    expect(summary.tcp).toEqual([]);
    expect(summary.quicPackets).toBeGreaterThan(0);
  }, 90_000);

  it('refuses to start when a capture rule cannot be installed, naming the command', async () => {
    // Two PATHs: one whose iptables fails the REDIRECT rules, one whose ip6tables is broken.
    const fakeBin = (name: string, scripts: Record<string, string>): string => {
      const dir = path.join(mesh.dir, name);
      fs.mkdirSync(dir, { recursive: true });
      for (const [tool, body] of Object.entries(scripts)) fs.writeFileSync(path.join(dir, tool), `#!/bin/sh\n${body}\n`, { mode: 0o755 });
      return dir;
    };
    const failRedirect = (tool: string): string =>
      `case "$*" in *REDIRECT*) echo "${tool}: simulated failure: No chain/target/match by that name." >&2; exit 1;; esac\nexec /usr/sbin/${tool} "$@"`;
    // Rules are written in one iptables-restore transaction: it fails at the first REDIRECT line.
    const failRedirectRestore = (tool: string): string =>
      `input=$(cat)\nline=$(printf '%s\\n' "$input" | grep -n REDIRECT | head -1 | cut -d: -f1)\n` +
      `if [ -n "$line" ]; then echo "${tool}: simulated failure: No chain/target/match by that name." >&2; echo "Error occurred at line: $line" >&2; exit 1; fi\n` +
      `printf '%s\\n' "$input" | exec /usr/sbin/${tool} "$@"`;
    const noIp6 = (tool: string): string => `echo "${tool}: simulated: not installed" >&2\nexit 127`;
    const v4Bin = fakeBin('fake-v4', {
      iptables: failRedirect('iptables'), 'iptables-nft': failRedirect('iptables-nft'),
      'iptables-restore': failRedirectRestore('iptables-restore'), 'iptables-nft-restore': failRedirectRestore('iptables-nft-restore'),
    });
    const v6Bin = fakeBin('fake-v6', { ip6tables: noIp6('ip6tables'), 'ip6tables-nft': noIp6('ip6tables-nft'), 'ip6tables-legacy': noIp6('ip6tables-legacy') });
    await mesh.stopDaemon(h1);
    const run = (config: string, bin: string): Promise<any> =>
      mesh.topo.exec(h1.ns, [process.execPath, CLI, 'run', '--config', config], { env: { ...process.env, PATH: `${bin}:${process.env.PATH}` }, timeoutMs: 30_000 });
    // The rules the stopped daemon left stay exact; remove them so the start must append them again.
    await mesh.topo.exec(h1.ns, [process.execPath, CLI, 'iptables', 'remove', '--config', mesh.configPath(h1)]);
    const v4 = await run(mesh.configPath(h1), v4Bin);
    // An IPv6 function CIDR needs ip6tables, which is broken here.
    const cfg6 = mesh.baseConfig(h1);
    cfg6.local.cidrs.push('fd00:51:1::/64');
    cfg6.peers[0].cidrs.push('fd00:51:2::/64');
    const path6 = path.join(mesh.dir, 'host-1-v6.json');
    fs.writeFileSync(path6, JSON.stringify(cfg6));
    const v6 = await run(path6, v6Bin);
    const lastLine = (r: any): string => r.stderr.trim().split('\n').pop() ?? '';
    figure('case-13-rules', `iptables failing: exit=${v4.code} "${lastLine(v4).slice(0, 160)}"; ip6tables broken: exit=${v6.code} "${lastLine(v6).slice(0, 160)}"`);
    for (const r of [v4, v6]) {
      expect(r.timedOut).toBe(false);
      expect(r.code).not.toBe(0);
    }
    expect(lastLine(v4)).toMatch(/^qmesh: QMESH_ERR_IPTABLES: `iptables(-nft)?-restore .*simulated failure.*input line: -A QMESH_PREROUTING .*REDIRECT/);
    expect(lastLine(v6)).toMatch(/^qmesh: QMESH_ERR_IPTABLES: .*ip6tables/);
  }, 90_000);
});
