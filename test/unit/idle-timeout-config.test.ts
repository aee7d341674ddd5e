// capture.idleTimeoutMs: one hour by default, 0 turns it off, negative or fractional
// values are refused with the key's name; its environment variable works.
import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../daemon/config/load.js';

const base = () => ({
  node: { name: 'host-1' },
  listen: { quic: '198.18.0.1:4433' },
  tls: { cert: 'pki/host-1.crt', key: 'pki/host-1.key' },
  local: { cidrs: ['198.19.1.0/24'] },
  peers: [{ name: 'host-2', endpoint: '198.18.0.2:4433', cidrs: ['198.19.2.0/24'] }],
});
const load = (raw: object, env: NodeJS.ProcessEnv = {}) => parseConfig(raw, '/etc/qmesh/config.json', env);

describe('capture.idleTimeoutMs', () => {
  it('defaults to one hour and accepts 0 (never)', () => {
    expect(load(base()).capture.idleTimeoutMs).toBe(3_600_000);
    expect(load({ ...base(), capture: { idleTimeoutMs: 0 } }).capture.idleTimeoutMs).toBe(0);
    expect(load(base(), { QMESH_CAPTURE_IDLE_TIMEOUT_MS: '5000' }).capture.idleTimeoutMs).toBe(5000);
  });

  it('refuses a negative or fractional value, naming the key', () => {
    for (const bad of [-1, 1.5]) {
      expect(() => load({ ...base(), capture: { idleTimeoutMs: bad } })).toThrow(/capture\.idleTimeoutMs/);
    }
  });
});
