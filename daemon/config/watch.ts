// Watches the config file and its TLS files for changes so a deploy needs no
// SIGHUP. The folders are watched, not the files: ansible, cert-manager style
// tools and editors replace a file by rename, which a watch on the old inode
// would never see. A burst of events becomes one call after `debounceMs`.
// What changed is decided by content (contentHash), not by the events.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { Logger } from '../log.js';

export class FileWatcher {
  private watchers = new Map<string, fs.FSWatcher>();
  private names = new Set<string>();
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly debounceMs: () => number,
    private readonly onChange: () => void,
    private readonly log: Logger,
  ) {}

  /** Watches exactly these files (absolute paths) from now on. */
  watch(files: readonly string[]): void {
    this.names = new Set(files);
    const dirs = new Set(files.map((f) => path.dirname(f)));
    for (const [dir, w] of this.watchers) {
      if (!dirs.has(dir)) {
        w.close();
        this.watchers.delete(dir);
      }
    }
    for (const dir of dirs) {
      if (this.watchers.has(dir)) continue;
      try {
        const w = fs.watch(dir, { persistent: false }, (_event, name) => {
          // Some platforms give no name: treat it as a change to be safe.
          if (name === null || this.names.has(path.join(dir, name.toString()))) this.poke();
        });
        w.on('error', (err) => this.log.warn({ dir, err: String(err) }, 'cannot watch folder; use SIGHUP to reload'));
        this.watchers.set(dir, w);
      } catch (err) {
        this.log.warn({ dir, err: String(err) }, 'cannot watch folder; use SIGHUP to reload');
      }
    }
  }

  /** A change was seen: (re)start the quiet period. */
  poke(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = null;
      this.onChange();
    }, this.debounceMs());
    this.timer.unref();
  }

  close(): void {
    if (this.timer) clearTimeout(this.timer);
    for (const w of this.watchers.values()) w.close();
    this.watchers.clear();
  }
}

/** One hash over the contents of `files` (a missing file hashes as missing, not as empty). */
export function contentHash(files: readonly string[]): string {
  const h = crypto.createHash('sha256');
  for (const f of files) {
    h.update(f).update('\0');
    try {
      h.update(fs.readFileSync(f));
    } catch (err) {
      h.update(`<${(err as NodeJS.ErrnoException).code ?? 'unreadable'}>`);
    }
    h.update('\0');
  }
  return h.digest('hex');
}
