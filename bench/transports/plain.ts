// Plain TCP: nothing in the path. The qmesh daemons are stopped and their
// iptables rules removed before this transport is used (bench-env.ts).
import type { Target } from '../clients/servers.js';
import type { Route, Transport } from './transport.js';

export class PlainTransport implements Transport {
  readonly name = 'plain' as const;
  async up(): Promise<void> {}
  address(route: Route): Target {
    return { host: route.to.ip, port: route.port };
  }
  async down(): Promise<void> {}
}
