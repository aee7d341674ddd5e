// What a scenario needs from a transport: bring it up for a set of routes
// (function on host A -> port on a function of host B), tell the client which
// address to dial for each route, and take it down again. Exactly one
// transport is up at a time (bench-env.ts switches them).
import type { FunctionInfo, HostInfo } from '../../daemon/demo/topology.js';
import type { Target } from '../clients/servers.js';

export type TransportName = 'plain' | 'stunnel' | 'qmesh';
export const TRANSPORTS: readonly TransportName[] = ['plain', 'stunnel', 'qmesh'];

/** A client in a function of `from` reaches port `port` of function `to` (on host `toHost`). */
export interface Route {
  readonly from: HostInfo;
  readonly toHost: HostInfo;
  readonly to: FunctionInfo;
  readonly port: number;
}

export interface TransportOptions {
  /** qmesh: tunnel.maxDatagramBytes (jumbo-frame underlays). */
  readonly maxDatagramBytes?: number;
}

export interface Transport {
  readonly name: TransportName;
  /** Brings the transport up so every route works; idempotent for the same routes and options. */
  up(routes: readonly Route[], opts?: TransportOptions): Promise<void>;
  /** The address a client on route.from dials. */
  address(route: Route): Target;
  down(): Promise<void>;
}

export const routeKey = (r: Route): string => `${r.from.name}>${r.to.name}:${r.port}`;
