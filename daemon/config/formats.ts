// Value formats shared by the config schema: CIDR, port, host:port.
// Each parser throws an Error whose message says what was expected.
import { Cidr, IpAddress } from '../policy/cidr.js';

export interface HostPort {
  host: string;
  port: number;
  family: 4 | 6;
}

export function parsePort(value: unknown): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1 || value > 65535) {
    throw new Error(`must be a port number from 1 to 65535 (got ${JSON.stringify(value)})`);
  }
  return value;
}

/** "198.18.0.1:4433" or "[fd00::1]:4433"; the host must be a literal IP (no DNS on the data path). */
export function parseHostPort(value: unknown): HostPort {
  const expected = 'must be "address:port" with a literal IP, e.g. "198.18.0.1:4433" or "[fd00::1]:4433"';
  if (typeof value !== 'string') throw new Error(`${expected} (got ${JSON.stringify(value)})`);
  if (value.includes('%')) {
    throw new Error(`has an IPv6 zone (got ${JSON.stringify(value)}): zones (%<interface>) are not supported; use an address that is not link-local, e.g. "[fd00::1]:4433"`);
  }
  const m = /^\[([0-9a-fA-F:.]+)\]:(\d+)$/.exec(value) ?? /^([0-9.]+):(\d+)$/.exec(value);
  if (!m) throw new Error(`${expected} (got ${JSON.stringify(value)})`);
  let ip: IpAddress;
  try {
    ip = IpAddress.parse(m[1]!);
  } catch {
    throw new Error(`${expected} (got ${JSON.stringify(value)})`);
  }
  const port = Number(m[2]);
  if (port < 1 || port > 65535) throw new Error(`${expected}: port out of range (got ${JSON.stringify(value)})`);
  return { host: ip.text, port, family: ip.family };
}

export function parseCidr(value: unknown): Cidr {
  return Cidr.parse(value);
}

export function formatHostPort(hp: { host: string; port: number }): string {
  return hp.host.includes(':') ? `[${hp.host}]:${hp.port}` : `${hp.host}:${hp.port}`;
}
