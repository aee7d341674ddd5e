// The shipped systemd unit (systemd/qmesh.service), read the way the tests check it:
// the values of one directive, in order (a directive may appear several times).
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';

export const UNIT_FILE = fileURLToPath(new URL('../../systemd/qmesh.service', import.meta.url));

/** Every `Key=value` line of the unit for `key`, its values in order. */
export function unitDirective(key: string): string[] {
  return [...fs.readFileSync(UNIT_FILE, 'utf8').matchAll(new RegExp(`^${key}=(.*)$`, 'gm'))].map((m) => m[1]!);
}
