// The file watcher behind live reload (config/watch.ts) and the certificate
// schedule (identity/validity.ts): a burst of writes, including a replace by
// rename, becomes one call; other files in the folder are ignored; the hash
// follows content only; renewal margins and "expiring soon" as documented.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { contentHash, FileWatcher } from '../../daemon/config/watch.js';
import { createLogger } from '../../daemon/log.js';
import { expiringSoon, renewMarginMs } from '../../daemon/identity/validity.js';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const log = createLogger('silent');
const dirs: string[] = [];
const tmp = (): string => {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'qmesh-watch-'));
  dirs.push(d);
  return d;
};
afterEach(() => {
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

async function waitCalls(calls: () => number, n: number, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while (calls() < n && Date.now() < deadline) await sleep(20);
}

describe('FileWatcher', () => {
  it('turns a burst of writes (one a replace by rename) into one call after the quiet period', async () => {
    const dir = tmp();
    const file = path.join(dir, 'config.json');
    fs.writeFileSync(file, '{}');
    let calls = 0;
    const w = new FileWatcher(() => 400, () => calls++, log);
    w.watch([file]);
    try {
      fs.writeFileSync(file, '{"a":1}');
      await sleep(50);
      fs.writeFileSync(`${file}.tmp`, '{"a":2}');
      fs.renameSync(`${file}.tmp`, file);
      await waitCalls(() => calls, 1, 5_000);
      await sleep(400);
      expect(calls).toBe(1);
      // The watch survives the rename: a later write is seen too.
      fs.writeFileSync(file, '{"a":3}');
      await waitCalls(() => calls, 2, 5_000);
      expect(calls).toBe(2);
    } finally {
      w.close();
    }
  });

  it('ignores other files in the watched folder', async () => {
    const dir = tmp();
    const file = path.join(dir, 'host.crt');
    fs.writeFileSync(file, 'x');
    let calls = 0;
    const w = new FileWatcher(() => 50, () => calls++, log);
    w.watch([file]);
    try {
      fs.writeFileSync(path.join(dir, 'other.crt'), 'y');
      await sleep(400);
      expect(calls).toBe(0);
    } finally {
      w.close();
    }
  });
});

describe('contentHash', () => {
  it('changes with content, not with a rewrite of the same bytes, and tells a missing file from an empty one', () => {
    const dir = tmp();
    const a = path.join(dir, 'a');
    fs.writeFileSync(a, 'one');
    const h1 = contentHash([a]);
    fs.writeFileSync(a, 'one');
    expect(contentHash([a])).toBe(h1);
    fs.writeFileSync(a, 'two');
    expect(contentHash([a])).not.toBe(h1);
    fs.writeFileSync(a, '');
    const empty = contentHash([a]);
    fs.rmSync(a);
    expect(contentHash([a])).not.toBe(empty);
  });
});

describe('certificate schedule', () => {
  const at = (ms: number): Date => new Date(Date.UTC(2030, 0, 1) + ms);
  it('renews 10% of the lifetime before the end, at most 5 minutes', () => {
    expect(renewMarginMs({ notBefore: at(0), notAfter: at(100_000) })).toBe(10_000);
    expect(renewMarginMs({ notBefore: at(0), notAfter: at(24 * 3_600_000) })).toBe(5 * 60_000);
  });
  it('calls a certificate expiring soon under a third of its lifetime or under an hour left', () => {
    const day = { notBefore: at(0), notAfter: at(24 * 3_600_000) };
    expect(expiringSoon(day, at(1_000).getTime())).toBe(false);
    expect(expiringSoon(day, at(17 * 3_600_000).getTime())).toBe(true); // 7 h of 24 left
    const month = { notBefore: at(0), notAfter: at(30 * 24 * 3_600_000) };
    expect(expiringSoon(month, at(15 * 24 * 3_600_000).getTime())).toBe(false); // half left
    expect(expiringSoon(month, at(30 * 24 * 3_600_000 - 30 * 60_000).getTime())).toBe(true); // 30 min left
    expect(expiringSoon({ notBefore: at(0), notAfter: at(120_000) }, at(1_000).getTime())).toBe(true); // a 2-minute certificate
  });
});
