// Stateless Retry tokens (RFC 9000 8.1.2): the QUIC listener answers an Initial
// without a token with a Retry carrying one, and allocates connection state only
// for an Initial that brings a valid token back, which proves the sender can
// receive at the address it claims. The token binds address, port, the client's
// original destination CID and a time; an HMAC keeps it unforgeable.
import crypto from 'node:crypto';

const VERSION = 1;
const MAC_BYTES = 16;
/** A token is good for this long: one round trip is all it needs. */
export const RETRY_TOKEN_LIFETIME_MS = 10_000;

function mac(key: Buffer, host: string, port: number, issuedAt: bigint, odcid: Uint8Array): Buffer {
  return crypto
    .createHmac('sha256', key)
    .update(`${host}|${port}|${issuedAt}|`)
    .update(odcid)
    .digest()
    .subarray(0, MAC_BYTES);
}

export function mintRetryToken(key: Buffer, host: string, port: number, odcid: Uint8Array, now = Date.now()): Buffer {
  const issuedAt = BigInt(now);
  const head = Buffer.alloc(10);
  head[0] = VERSION;
  head.writeBigUInt64BE(issuedAt, 1);
  head[9] = odcid.length;
  return Buffer.concat([head, Buffer.from(odcid), mac(key, host, port, issuedAt, odcid)]);
}

/** The original destination CID the token was minted for, or null if it is not a valid, fresh token for this address. */
export function verifyRetryToken(key: Buffer, host: string, port: number, token: Uint8Array, now = Date.now()): Buffer | null {
  const t = Buffer.from(token);
  if (t.length < 10 || t[0] !== VERSION) return null;
  const issuedAt = t.readBigUInt64BE(1);
  const len = t[9]!;
  if (len > 20 || t.length !== 10 + len + MAC_BYTES) return null;
  const odcid = t.subarray(10, 10 + len);
  const age = now - Number(issuedAt);
  if (age < 0 || age > RETRY_TOKEN_LIFETIME_MS) return null;
  const expected = mac(key, host, port, issuedAt, odcid);
  return crypto.timingSafeEqual(expected, t.subarray(10 + len)) ? Buffer.from(odcid) : null;
}
