// Parses certificate lifetimes given on the command line: "24h", "90m", "30d", "3600s".
import { ErrorCodes, QmeshError } from '../errors.js';

const UNIT_MS: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

export function parseLifetime(text: string): number {
  const m = /^(\d+(?:\.\d+)?)([smhd])$/.exec(text.trim());
  if (!m || Number(m[1]) <= 0) {
    throw new QmeshError(ErrorCodes.USAGE, `--lifetime ${JSON.stringify(text)}: expected a positive duration such as 24h, 90m, 30d or 3600s`);
  }
  return Math.round(Number(m[1]) * UNIT_MS[m[2]!]!);
}
