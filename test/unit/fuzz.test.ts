// Property-based fuzzing (fast-check) of the two parsers that take outside input:
// the stream header (bytes from a peer) and the config loader (an operator's file).
// Either may refuse its input, but only with its own error, never a crash or a hang.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../daemon/config/load.js';
import { isQmeshError } from '../../daemon/errors.js';
import { IpAddress } from '../../daemon/policy/cidr.js';
import { decodeStreamHeader, encodeStreamHeader } from '../../daemon/tunnel/stream-header.js';

const RUNS = 20_000;

describe('stream header fuzzing', () => {
  it('decodes any bytes to complete, incomplete or a QMESH_ERR_STREAM_HEADER refusal', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 64 }), (bytes) => {
        try {
          const r = decodeStreamHeader(bytes);
          if (r.kind === 'complete') expect(r.length).toBeLessThanOrEqual(bytes.length);
        } catch (err) {
          expect(isQmeshError(err) && err.code === 'QMESH_ERR_STREAM_HEADER').toBe(true);
        }
      }),
      { numRuns: RUNS },
    );
  });

  it('round-trips every IPv4 and IPv6 header', () => {
    const v4 = fc.tuple(fc.ipV4(), fc.ipV4());
    const v6 = fc.tuple(fc.ipV6(), fc.ipV6());
    fc.assert(
      fc.property(fc.oneof(v4, v6), fc.integer({ min: 1, max: 65535 }), fc.integer({ min: 0, max: 65535 }), ([d, s], dport, sport) => {
        const h = { destination: { ip: IpAddress.parse(d), port: dport }, source: { ip: IpAddress.parse(s), port: sport } };
        const r = decodeStreamHeader(encodeStreamHeader(h));
        expect(r.kind).toBe('complete');
        if (r.kind !== 'complete') return;
        expect(r.header.destination.ip.value).toBe(h.destination.ip.value);
        expect(r.header.source.ip.value).toBe(h.source.ip.value);
        expect([r.header.destination.port, r.header.source.port]).toEqual([dport, sport]);
      }),
      { numRuns: 5_000 },
    );
  });
});

describe('config loader fuzzing', () => {
  const base = {
    node: { name: 'host-1' },
    listen: { quic: '198.18.0.1:4433' },
    tls: { cert: 'a.crt', key: 'a.key' },
    local: { cidrs: ['198.19.1.0/24'] },
    peers: [{ name: 'host-2', endpoint: '198.18.0.2:4433', cidrs: ['198.19.2.0/24'] }],
  };
  const keys = ['node', 'listen', 'tls', 'local', 'peers', 'log', 'tunnel', 'capture', 'drain', 'policy'];

  it('accepts or refuses mutated configs with QMESH_ERR_CONFIG, never anything else', () => {
    fc.assert(
      fc.property(fc.constantFrom(...keys), fc.anything({ maxDepth: 3 }), (key, value) => {
        try {
          parseConfig({ ...base, [key]: value }, '/etc/qmesh/config.json');
        } catch (err) {
          expect(isQmeshError(err) && err.code === 'QMESH_ERR_CONFIG', String(err)).toBe(true);
        }
      }),
      { numRuns: 3_000 },
    );
  });

  it('refuses arbitrary JSON objects with QMESH_ERR_CONFIG, never anything else', () => {
    fc.assert(
      fc.property(fc.object({ maxDepth: 3 }), (raw) => {
        try {
          parseConfig(raw, '/etc/qmesh/config.json');
        } catch (err) {
          expect(isQmeshError(err) && err.code === 'QMESH_ERR_CONFIG', String(err)).toBe(true);
        }
      }),
      { numRuns: 3_000 },
    );
  });
});
