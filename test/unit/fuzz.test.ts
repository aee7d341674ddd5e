// Property-based fuzzing (fast-check) of the config loader (an operator's file): it may
// refuse its input, but only with its own error, never a crash or a hang. The stream
// header, the other parser of outside input, lives in the data plane and is fuzzed with
// cargo fuzz (native/fuzz/).
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../daemon/config/load.js';
import { isQmeshError } from '../../daemon/errors.js';
import { IpAddress } from '../../daemon/policy/cidr.js';

const RUNS = 20_000;

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
