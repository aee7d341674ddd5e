// The qmesh package's root folder, found from a module's own location, so the
// same code works from the sources (daemon/demo/) and once built (dist/daemon/demo/).
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export function packageRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  while (!fs.existsSync(path.join(dir, 'package.json'))) {
    const up = path.dirname(dir);
    if (up === dir) throw new Error('qmesh package root not found');
    dir = up;
  }
  return dir;
}
