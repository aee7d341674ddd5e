// One PeerTunnel per configured peer, opened at start-up and kept warm. capture/
// calls openStream() for each captured TCP connection: it waits (bounded) for
// the peer's tunnel, opens the next stream, sends the stream header and starts
// piping (stream-pipe.ts). /status reads tunnel health from here.
import type net from 'node:net';
import type { PeerConfig } from '../config/load.js';
import { ErrorCodes, QmeshError } from '../errors.js';
import type { Logger } from '../log.js';
import { PeerTunnel, type PeerTunnelOptions } from './peer-tunnel.js';
import { encodeStreamHeader, type StreamHeader } from './stream-header.js';
import { StreamPipe, type PipeSummary } from './stream-pipe.js';
import type { TunnelConnection } from './tunnel-connection.js';

export type PoolOptions = Omit<PeerTunnelOptions, 'peer'>;

export class TunnelPool {
  readonly tunnels = new Map<string, PeerTunnel>();

  constructor(private readonly opts: PoolOptions) {}

  /** Opens tunnels to every peer in `peers` and closes tunnels to peers no longer listed. */
  sync(peers: readonly PeerConfig[]): void {
    const wanted = new Set(peers.map((p) => p.name));
    for (const [name, t] of this.tunnels) {
      if (!wanted.has(name)) {
        t.stop('peer removed from config');
        this.tunnels.delete(name);
      }
    }
    for (const peer of peers) {
      const existing = this.tunnels.get(peer.name);
      if (existing && existing.peer.endpoint.host === peer.endpoint.host && existing.peer.endpoint.port === peer.endpoint.port) continue;
      existing?.stop('peer endpoint changed');
      const t = new PeerTunnel({ ...this.opts, peer });
      this.tunnels.set(peer.name, t);
      t.start();
    }
  }

  /** Closes every connection whose peer certificate `untrusted` rejects. */
  closeUntrusted(untrusted: (c: TunnelConnection) => boolean, reason: string): void {
    for (const t of this.tunnels.values()) t.closeUntrusted(untrusted, reason);
  }

  /** Re-establishes every tunnel make-before-break (new credentials were loaded). */
  renewAll(reason: string): void {
    for (const t of this.tunnels.values()) t.renew(reason);
  }

  /** Resolves with the stream's pipe, or null if the client left while the tunnel came up. */
  async openStream(peerName: string, socket: net.Socket, header: StreamHeader, onDone: (s: PipeSummary) => void, idleTimeoutMs = 0): Promise<StreamPipe | null> {
    const tunnel = this.tunnels.get(peerName);
    if (!tunnel) throw new QmeshError(ErrorCodes.NO_ROUTE, `no tunnel for peer ${peerName}`);
    const conn = await tunnel.ready();
    if (socket.destroyed) {
      onDone({ bytesToPeer: 0, bytesFromPeer: 0, outcome: 'client left before the tunnel was ready', durationMs: 0 });
      return null;
    }
    if (conn.streamsLeft() <= 0) {
      throw new QmeshError(ErrorCodes.TUNNEL_DOWN, `peer ${peerName} allows no more concurrent streams (tunnel.maxStreams on the peer)`);
    }
    const id = conn.openStreamId();
    const pipe = new StreamPipe(conn, id, onDone);
    conn.addStream(pipe);
    // The header and the request's first bytes leave in one packet when the client has already sent them.
    pipe.attach(socket, encodeStreamHeader(header), null, true, idleTimeoutMs);
    return pipe;
  }

  stop(): void {
    for (const t of this.tunnels.values()) t.stop();
    this.tunnels.clear();
  }
}
