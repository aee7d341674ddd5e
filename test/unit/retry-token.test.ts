// Retry tokens: valid only for the address, port and CID they were minted for, and only briefly.
import crypto from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { mintRetryToken, RETRY_TOKEN_LIFETIME_MS, verifyRetryToken } from '../../daemon/tunnel/retry-token.js';

const key = crypto.randomBytes(32);
const odcid = crypto.randomBytes(16);

describe('retry tokens', () => {
  it('give back the original CID for the same address and port', () => {
    const t = mintRetryToken(key, '198.18.0.1', 40000, odcid, 1_000_000);
    expect(verifyRetryToken(key, '198.18.0.1', 40000, t, 1_000_500)?.equals(odcid)).toBe(true);
  });
  it('are refused from another address or port, with another key, or when stale', () => {
    const t = mintRetryToken(key, '198.18.0.1', 40000, odcid, 1_000_000);
    expect(verifyRetryToken(key, '198.18.0.9', 40000, t, 1_000_500)).toBeNull();
    expect(verifyRetryToken(key, '198.18.0.1', 40001, t, 1_000_500)).toBeNull();
    expect(verifyRetryToken(crypto.randomBytes(32), '198.18.0.1', 40000, t, 1_000_500)).toBeNull();
    expect(verifyRetryToken(key, '198.18.0.1', 40000, t, 1_000_000 + RETRY_TOKEN_LIFETIME_MS + 1)).toBeNull();
  });
  it('are refused when tampered with or truncated', () => {
    const t = mintRetryToken(key, '198.18.0.1', 40000, odcid, 1_000_000);
    for (let i = 0; i < t.length; i++) {
      const bad = Buffer.from(t);
      bad[i] ^= 0x01;
      expect(verifyRetryToken(key, '198.18.0.1', 40000, bad, 1_000_500)).toBeNull();
    }
    expect(verifyRetryToken(key, '198.18.0.1', 40000, t.subarray(0, t.length - 1), 1_000_500)).toBeNull();
    expect(verifyRetryToken(key, '198.18.0.1', 40000, Buffer.alloc(0), 1_000_500)).toBeNull();
  });
});
