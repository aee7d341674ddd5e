// The first bytes of every tunnel stream: which TCP connection it carries.
// The outbound side (capture/) encodes it; the inbound side (inbound/) decodes
// it before connecting anywhere. Layout (network byte order), version 1:
//
//   0      1      2          4          6                 6+n          6+2n
//   | ver  | fam  | dst port | src port | dst addr (n)    | src addr (n) |
//
//   ver = 1; fam = 4 (n = 4) or 6 (n = 16). 14 bytes for IPv4, 38 for IPv6.
import { ErrorCodes, QmeshError } from '../errors.js';
import { IpAddress } from '../policy/cidr.js';

export const STREAM_HEADER_VERSION = 1;
export const MAX_STREAM_HEADER_BYTES = 38;

export interface StreamHeader {
  readonly destination: { readonly ip: IpAddress; readonly port: number };
  readonly source: { readonly ip: IpAddress; readonly port: number };
}

export function encodeStreamHeader(h: StreamHeader): Buffer {
  if (h.destination.ip.family !== h.source.ip.family) {
    throw new QmeshError(ErrorCodes.STREAM_HEADER, 'source and destination must be of one address family');
  }
  const n = h.destination.ip.family === 4 ? 4 : 16;
  const out = Buffer.allocUnsafe(6 + 2 * n);
  out[0] = STREAM_HEADER_VERSION;
  out[1] = h.destination.ip.family;
  out.writeUInt16BE(h.destination.port, 2);
  out.writeUInt16BE(h.source.port, 4);
  h.destination.ip.toBytes().copy(out, 6);
  h.source.ip.toBytes().copy(out, 6 + n);
  return out;
}

export type DecodeResult =
  | { readonly kind: 'complete'; readonly header: StreamHeader; readonly length: number }
  | { readonly kind: 'incomplete' };

/** Decodes a header at the start of `buf`; throws QMESH_ERR_STREAM_HEADER if it is not one. */
export function decodeStreamHeader(buf: Uint8Array): DecodeResult {
  if (buf.length < 2) return { kind: 'incomplete' };
  if (buf[0] !== STREAM_HEADER_VERSION) {
    throw new QmeshError(ErrorCodes.STREAM_HEADER, `unsupported stream header version ${buf[0]} (this daemon speaks ${STREAM_HEADER_VERSION}); upgrade the older peer`);
  }
  const family = buf[1];
  if (family !== 4 && family !== 6) {
    throw new QmeshError(ErrorCodes.STREAM_HEADER, `bad address family ${family} in stream header`);
  }
  const n = family === 4 ? 4 : 16;
  const length = 6 + 2 * n;
  if (buf.length < length) return { kind: 'incomplete' };
  const view = Buffer.from(buf.buffer, buf.byteOffset, length);
  const dstPort = view.readUInt16BE(2);
  const srcPort = view.readUInt16BE(4);
  if (dstPort === 0) throw new QmeshError(ErrorCodes.STREAM_HEADER, 'destination port 0 in stream header');
  return {
    kind: 'complete',
    length,
    header: {
      destination: { ip: IpAddress.fromBytes(view.subarray(6, 6 + n)), port: dstPort },
      source: { ip: IpAddress.fromBytes(view.subarray(6 + n, 6 + 2 * n)), port: srcPort },
    },
  };
}
