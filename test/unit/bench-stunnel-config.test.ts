// bench/transports/stunnel-config.ts: the TCP+TLS baseline must really be TLS 1.3
// with client certificates verified both ways, on the right addresses.
import { describe, expect, it } from 'vitest';
import { planTopology } from '../../daemon/demo/topology-plan.js';
import { portsFor, stunnelConfig, type StunnelPki } from '../../bench/transports/stunnel-config.js';
import type { Route } from '../../bench/transports/transport.js';

const plan = planTopology({ prefix: 'qmt1', hosts: 2, functionsPerHost: 1 });
const [h1, h2] = plan.hosts as [typeof plan.hosts[0], typeof plan.hosts[0]];
const pki: StunnelPki = { caFile: '/p/ca.crt', certFile: (h) => `/p/${h}.crt`, keyFile: (h) => `/p/${h}.key` };
const routes: Route[] = [
  { from: h1, toHost: h2, to: h2.functions[0]!, port: 7001 },
  { from: h2, toHost: h1, to: h1.functions[0]!, port: 7052 },
];

function sections(conf: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  let cur = 'global';
  for (const line of conf.split('\n')) {
    const m = /^\[(.+)\]$/.exec(line);
    if (m) out.set((cur = m[1]!), []);
    else if (line && !line.startsWith(';')) (out.get(cur) ?? out.set(cur, []).get(cur)!).push(line);
  }
  return out;
}

describe('stunnelConfig', () => {
  const c1 = sections(stunnelConfig('host-1', routes, pki, '/tmp/log'));

  it('gives host-1 a client service for the route it starts and a server service for the route it ends', () => {
    expect([...c1.keys()].sort()).toEqual(['global', 'route0-out', 'route1-in']);
  });

  it('client side: plaintext on the bridge address, TLS 1.3 to the peer host with its name checked', () => {
    const s = c1.get('route0-out')!;
    expect(s).toContain('client = yes');
    expect(s).toContain(`accept = ${h1.gatewayIp}:${portsFor(0).clientPort}`);
    expect(s).toContain(`connect = ${h2.underlayIp}:${portsFor(0).serverPort}`);
    expect(s).toContain('checkHost = host-2');
    expect(s).toContain('cert = /p/host-1.crt');
    expect(s).toContain('verifyChain = yes');
    expect(s).toContain('sslVersionMin = TLSv1.3');
  });

  it('server side: TLS on the underlay address, client certificate required, plaintext to the function', () => {
    const s = c1.get('route1-in')!;
    expect(s).not.toContain('client = yes');
    expect(s).toContain(`accept = ${h1.underlayIp}:${portsFor(1).serverPort}`);
    expect(s).toContain(`connect = ${h1.functions[0]!.ip}:7052`);
    expect(s).toContain('verifyChain = yes');
    expect(s).toContain('CAfile = /p/ca.crt');
    expect(s).toContain('sslVersionMin = TLSv1.3');
  });

  it('runs in the foreground without a pid file, Nagle off on both sides', () => {
    const g = c1.get('global')!;
    expect(g).toEqual(expect.arrayContaining(['foreground = yes', 'pid =', 'socket = l:TCP_NODELAY=1', 'socket = r:TCP_NODELAY=1', 'output = /tmp/log']));
  });

  it('ports never collide with qmesh (4433, 15000, 15001) or the ephemeral range', () => {
    for (let i = 0; i < 20; i++) {
      const { clientPort, serverPort } = portsFor(i);
      for (const p of [clientPort, serverPort]) {
        expect([4433, 15000, 15001]).not.toContain(p);
        expect(p).toBeLessThan(32768);
      }
    }
  });
});
