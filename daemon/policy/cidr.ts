// CIDR blocks and addresses as numbers, parsed once by ip-address so route and
// policy checks on the hot path are integer comparisons. Used by config/ (to
// validate), policy/route.ts (longest-prefix match) and inbound/ (own-CIDR check).
import { Address4, Address6 } from 'ip-address';

export type Family = 4 | 6;

export class Cidr {
  private readonly mask: bigint;
  private constructor(
    readonly family: Family,
    readonly network: bigint,
    readonly prefixLength: number,
    readonly text: string,
  ) {
    const bits = family === 4 ? 32 : 128;
    this.mask = prefixLength === 0 ? 0n : ((1n << BigInt(prefixLength)) - 1n) << BigInt(bits - prefixLength);
  }

  /** Parses "198.19.1.0/24" or "fd00::/64"; host bits must be zero so typos are caught. */
  static parse(text: unknown): Cidr {
    if (typeof text !== 'string' || !text.includes('/')) {
      throw new Error(`must be a CIDR such as "198.19.1.0/24" (got ${JSON.stringify(text)})`);
    }
    // ip-address accepts "fe80::%eth0/64" and drops the zone; a zone in a config would then be ignored silently.
    if (text.includes('%')) {
      throw new Error(`has an IPv6 zone (${JSON.stringify(text)}): zones (%<interface>) are not supported; write the CIDR without one`);
    }
    const family: Family = text.includes(':') ? 6 : 4;
    let addr: Address4 | Address6;
    try {
      addr = family === 4 ? new Address4(text) : new Address6(text);
    } catch {
      throw new Error(`must be a CIDR such as "198.19.1.0/24" (got ${JSON.stringify(text)})`);
    }
    const prefix = addr.subnetMask;
    const value = addr.bigInt();
    const start = addr.startAddress().bigInt();
    if (value !== start) {
      throw new Error(`has host bits set: ${text} (did you mean ${addr.startAddress().correctForm()}/${prefix}?)`);
    }
    return new Cidr(family, start, prefix, `${addr.startAddress().correctForm()}/${prefix}`);
  }

  contains(ip: IpAddress): boolean {
    return ip.family === this.family && (ip.value & this.mask) === this.network;
  }

  overlaps(other: Cidr): boolean {
    if (other.family !== this.family) return false;
    const shorter = this.prefixLength <= other.prefixLength ? this : other;
    const longer = shorter === this ? other : this;
    return (longer.network & shorter.mask) === shorter.network;
  }

  toString(): string {
    return this.text;
  }
}

/**
 * Parsed addresses by text. Every captured connection parses its source and destination,
 * and ip-address's parser is a measurable part of a short connection's cost; the same few
 * function addresses recur, and an IpAddress never changes, so each text is parsed once.
 * Bounded: emptied when full (a scan over many addresses just parses again).
 */
const parsed = new Map<string, IpAddress>();
const PARSED_MAX = 4096;

/** One IP address (no port), kept as text and as a number. */
export class IpAddress {
  private constructor(
    readonly family: Family,
    readonly value: bigint,
    readonly text: string,
  ) {}

  static parse(text: string): IpAddress {
    let ip = parsed.get(text);
    if (ip) return ip;
    ip = IpAddress.parseUncached(text);
    if (parsed.size >= PARSED_MAX) parsed.clear();
    parsed.set(text, ip);
    return ip;
  }

  private static parseUncached(text: string): IpAddress {
    // Node reports IPv4 peers on dual-stack sockets as ::ffff:a.b.c.d.
    const plain = text.startsWith('::ffff:') && text.includes('.') ? text.slice(7) : text;
    if (Address4.isValid(plain) && !plain.includes('/')) {
      const a = new Address4(plain);
      return new IpAddress(4, a.bigInt(), a.correctForm());
    }
    if (Address6.isValid(plain) && !plain.includes('/')) {
      const a = new Address6(plain);
      return new IpAddress(6, a.bigInt(), a.correctForm());
    }
    throw new Error(`not an IP address: ${JSON.stringify(text)}`);
  }

  static fromBytes(bytes: Uint8Array): IpAddress {
    if (bytes.length === 4) return IpAddress.parse(Array.from(bytes).join('.'));
    if (bytes.length === 16) {
      const groups: string[] = [];
      for (let i = 0; i < 16; i += 2) groups.push(((bytes[i]! << 8) | bytes[i + 1]!).toString(16));
      return IpAddress.parse(groups.join(':'));
    }
    throw new Error(`address must be 4 or 16 bytes, got ${bytes.length}`);
  }

  toBytes(): Buffer {
    const len = this.family === 4 ? 4 : 16;
    const out = Buffer.alloc(len);
    let v = this.value;
    for (let i = len - 1; i >= 0; i--) {
      out[i] = Number(v & 0xffn);
      v >>= 8n;
    }
    return out;
  }

  toString(): string {
    return this.text;
  }
}
