// The stream header: round trips, exact layout, refusals.
import { describe, expect, it } from 'vitest';
import { IpAddress } from '../../daemon/policy/cidr.js';
import { decodeStreamHeader, encodeStreamHeader } from '../../daemon/tunnel/stream-header.js';

const h = (dst: string, dport: number, src: string, sport: number) => ({
  destination: { ip: IpAddress.parse(dst), port: dport },
  source: { ip: IpAddress.parse(src), port: sport },
});

describe('stream header', () => {
  it('encodes IPv4 in 14 bytes with the documented layout', () => {
    const b = encodeStreamHeader(h('198.19.2.11', 8080, '198.19.1.11', 40000));
    expect(b.toString('hex')).toBe('01041f909c40c613020bc613010b');
  });

  it('round-trips IPv4 and IPv6 and reports the length', () => {
    for (const x of [h('198.19.2.11', 80, '198.19.1.5', 1), h('fd00:2::b', 443, 'fd00:1::5', 65535)]) {
      const enc = Buffer.concat([encodeStreamHeader(x), Buffer.from('payload')]);
      const d = decodeStreamHeader(enc);
      expect(d.kind).toBe('complete');
      if (d.kind !== 'complete') return;
      expect(d.length).toBe(x.destination.ip.family === 4 ? 14 : 38);
      expect(String(d.header.destination.ip)).toBe(String(x.destination.ip));
      expect(d.header.destination.port).toBe(x.destination.port);
      expect(String(d.header.source.ip)).toBe(String(x.source.ip));
      expect(d.header.source.port).toBe(x.source.port);
    }
  });

  it('waits for more bytes when truncated', () => {
    const b = encodeStreamHeader(h('198.19.2.11', 80, '198.19.1.5', 1));
    for (let n = 0; n < b.length; n++) expect(decodeStreamHeader(b.subarray(0, n)).kind).toBe('incomplete');
  });

  it('refuses unknown versions, families and port 0', () => {
    expect(() => decodeStreamHeader(Buffer.from([2, 4]))).toThrow(/version 2/);
    expect(() => decodeStreamHeader(Buffer.from([1, 5]))).toThrow(/family 5/);
    const b = encodeStreamHeader(h('198.19.2.11', 80, '198.19.1.5', 1));
    b.writeUInt16BE(0, 2);
    expect(() => decodeStreamHeader(b)).toThrow(/port 0/);
  });
});
