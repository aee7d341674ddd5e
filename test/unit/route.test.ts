// Longest-prefix routing over the peers' CIDRs; local CIDRs never tunnel.
import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../daemon/config/load.js';
import { IpAddress } from '../../daemon/policy/cidr.js';
import { RouteTable } from '../../daemon/policy/route.js';

const config = parseConfig(
  {
    node: { name: 'a' },
    listen: { quic: '198.18.0.1:4433' },
    tls: { cert: 'a.crt', key: 'a.key' },
    local: { cidrs: ['198.19.1.0/24', 'fd00:1::/64'] },
    peers: [
      { name: 'b', endpoint: '198.18.0.2:4433', cidrs: ['10.0.0.0/8'] },
      { name: 'c', endpoint: '198.18.0.3:4433', cidrs: ['10.1.0.0/16', 'fd00:3::/64'] },
    ],
  },
  '/x/c.json',
);
const routes = new RouteTable(config);
const where = (ip: string): string => {
  const r = routes.lookup(IpAddress.parse(ip));
  return r.kind === 'peer' ? r.peer.name : r.kind;
};

describe('route table', () => {
  it('chooses the longest matching prefix', () => {
    expect(where('10.1.2.3')).toBe('c');
    expect(where('10.2.0.1')).toBe('b');
    expect(where('fd00:3::7')).toBe('c');
  });
  it('keeps local destinations local and unknown ones nowhere', () => {
    expect(where('198.19.1.7')).toBe('local');
    expect(where('fd00:1::1')).toBe('local');
    expect(where('192.0.2.1')).toBe('none');
    expect(where('::ffff:198.19.1.7')).toBe('local');
  });
  it('gives each address to exactly one peer', () => {
    const [b, c] = config.peers;
    expect(routes.ownedBy(b!, IpAddress.parse('10.2.0.1'))).toBe(true);
    expect(routes.ownedBy(b!, IpAddress.parse('10.1.0.1'))).toBe(false);
    expect(routes.ownedBy(c!, IpAddress.parse('10.1.0.1'))).toBe(true);
  });
  it('lets a peer claim its own underlay address (host processes), and no other', () => {
    const [b, c] = config.peers;
    expect(routes.ownedBy(b!, IpAddress.parse('198.18.0.2'))).toBe(true);
    expect(routes.ownedBy(c!, IpAddress.parse('198.18.0.2'))).toBe(false);
  });
});
