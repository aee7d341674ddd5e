// The last membership read from etcd, kept on disk (membership.etcd.cacheFile)
// so that a daemon restarted while etcd is unreachable comes back with the
// peers it had, not with none: fail static. The raw entries are kept, not the
// admitted peers, so a restart admits them against the config it starts with.
import fs from 'node:fs';
import path from 'node:path';
import type { EtcdEntry } from './entry.js';

export interface CachedMembership {
  /** When etcd last confirmed this membership (ms since the epoch). */
  readonly syncedAtMs: number;
  readonly prefix: string;
  readonly revision: string;
  readonly entries: readonly EtcdEntry[];
}

const isEntry = (e: unknown): e is EtcdEntry => {
  const x = e as Record<string, unknown>;
  return (
    typeof x === 'object' &&
    x !== null &&
    ['key', 'value'].every((k) => typeof x[k] === 'string') &&
    ['createRevision', 'modRevision'].every((k) => typeof x[k] === 'string' && /^\d{1,19}$/.test(x[k] as string))
  );
};

/** Writes by rename, so a crash leaves the old file or the new one, never half of one. */
export function writeCache(file: string, cache: CachedMembership): void {
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  const tmp = `${file}.${process.pid}.tmp`;
  const fd = fs.openSync(tmp, 'w', 0o600);
  try {
    fs.writeSync(fd, `${JSON.stringify(cache)}\n`);
    fs.fsyncSync(fd); // the data before the rename, so a power cut leaves the old file or the whole new one
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(tmp, file);
}

/** The cache, or why it cannot be used (missing, unreadable, for another prefix). */
export function readCache(file: string, prefix: string): CachedMembership | { problem: string } {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    return { problem: `cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? 'error'})` };
  }
  let v: Partial<CachedMembership>;
  try {
    v = JSON.parse(text);
  } catch {
    return { problem: `${file} is not JSON` };
  }
  if (typeof v.syncedAtMs !== 'number' || typeof v.revision !== 'string' || !/^\d{1,19}$/.test(v.revision) || !Array.isArray(v.entries) || !v.entries.every(isEntry)) {
    return { problem: `${file} is not a qmesh membership cache` };
  }
  if (v.prefix !== prefix) return { problem: `${file} holds the membership of prefix ${String(v.prefix)}, not ${prefix}` };
  return v as CachedMembership;
}
