// The raw quiche binding shipped inside @matrixai/quic, and the transport
// settings qmesh uses with it. Everything in tunnel/ drives quiche through this
// file; the library's high-level classes are not used (DESIGN.md: ~15x slower).
import { native } from '@matrixai/quic';
import type { Config } from '../config/load.js';

export const quiche = native.quiche;
export type QuicheConfig = ReturnType<typeof native.quiche.Config.withBoringSslCtx>;
export type QuicheConnection = ReturnType<typeof native.quiche.Connection.connect>;
export interface HostPort {
  host: string;
  port: number;
}

export const ALPN = 'qmesh/1';
/** Our connection IDs are always this long, so short headers parse without state. */
export const CID_BYTES = quiche.MAX_CONN_ID_LEN;

/** Application error codes carried in RESET_STREAM / STOP_SENDING / CONNECTION_CLOSE. */
export const AppError = {
  TCP_RESET: 0x1, // the TCP connection on the other side was reset
  CONNECT_FAILED: 0x2, // the inbound side could not connect to the destination
  DENIED: 0x3, // destination, claimed source or policy does not allow it
  BAD_HEADER: 0x4, // the stream header did not parse
  SHUTDOWN: 0x5, // the daemon is stopping or the tunnel was replaced
  IDENTITY: 0x6, // connection close: the peer's certificate identity was refused
} as const;

export interface TlsMaterial {
  readonly caPem: Uint8Array;
  readonly certPem: Uint8Array;
  readonly keyPem: Uint8Array;
}

/**
 * Both roles verify the peer (mutual TLS): BoringSSL checks the chain to the
 * mesh CA, tunnel/identity checks the SPIFFE id once the handshake completes.
 * No early data and no session tickets are ever used (replay, CVE-2022-21654).
 */
export function makeQuicheConfig(tls: TlsMaterial, tunnel: Config['tunnel']): QuicheConfig {
  const c = quiche.Config.withBoringSslCtx(true, false, tls.caPem, [tls.keyPem], [tls.certPem], null);
  c.setApplicationProtos([ALPN]);
  c.setMaxIdleTimeout(tunnel.idleTimeoutMs);
  c.setMaxRecvUdpPayloadSize(65_527);
  c.setMaxSendUdpPayloadSize(tunnel.maxDatagramBytes);
  // Flow control: large enough windows for bulk on a LAN; quiche auto-tunes up to the max.
  c.setInitialMaxData(16 * 1024 * 1024);
  c.setMaxConnectionWindow(64 * 1024 * 1024);
  c.setInitialMaxStreamDataBidiLocal(1024 * 1024);
  c.setInitialMaxStreamDataBidiRemote(1024 * 1024);
  c.setMaxStreamWindow(16 * 1024 * 1024);
  c.setInitialMaxStreamDataUni(0);
  c.setInitialMaxStreamsBidi(tunnel.maxStreams);
  c.setInitialMaxStreamsUni(0);
  c.setDisableActiveMigration(true);
  c.grease(false);
  c.setCcAlgorithmName(tunnel.congestionControl);
  return c;
}

/**
 * dgram resolves every destination through dns.lookup, which answers even an IP literal
 * on the next tick; our addresses are always literals, so answer at once (one closure and
 * one tick less per datagram).
 */
export const literalLookup = ((address: string, family: unknown, callback: (err: null, address: string, family: number) => void): void => {
  callback(null, address, address.includes(':') ? 6 : 4);
}) as unknown as NonNullable<import('node:dgram').SocketOptions['lookup']>;

/** quiche's errors arrive as Error("StreamReset(7)"); returns ["StreamReset", 7]. */
export function quicheErrorKind(err: unknown): [string, number | null] {
  const m = /^(\w+)(?:\((\d+)\))?/.exec(String((err as Error)?.message ?? err));
  return m ? [m[1]!, m[2] === undefined ? null : Number(m[2])] : ['Unknown', null];
}
