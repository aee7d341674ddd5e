// The built `qmesh` command as an operator meets it: check-config names the
// offending key in one stderr line and exits non-zero, accepts a good config;
// every verb has --help listing its options; `iptables print` shows the rules,
// and what it prints, run in a fresh network namespace, is exactly what
// `iptables check` expects (apply / check / remove round trip as well).
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI } from '../../daemon/demo/mesh.js';
import { cleanupStale, randomPrefix } from '../../daemon/demo/topology.js';
import { initCa, issueHost } from '../../daemon/pki/index.js';

const STEP_MS = 15_000;

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs argv (optionally inside a network namespace) with a hard timeout; never rejects. */
function run(argv: string[], ns?: string): Promise<Run> {
  const [file, ...args] = ns ? ['ip', 'netns', 'exec', ns, ...argv] : argv;
  return new Promise((resolve) => {
    execFile(file!, args, { timeout: STEP_MS, killSignal: 'SIGKILL', encoding: 'utf8' }, (err, stdout, stderr) =>
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : null) : 0, stdout, stderr }),
    );
  });
}
const qmesh = (args: string[], ns?: string): Promise<Run> => run([process.execPath, CLI, ...args], ns);

/** Every verb and the options its --help must mention. */
const VERBS: Record<string, string[]> = {
  run: ['--config'],
  'check-config': ['--config'],
  'iptables apply': ['--config', '--backend'],
  'iptables remove': ['--config', '--backend'],
  'iptables print': ['--config', '--backend'],
  'iptables check': ['--config', '--backend'],
  'pki init': ['--dir', '--trust-domain', '--lifetime-days', '--force'],
  'pki issue': ['--dir', '--name', '--lifetime'],
  demo: ['--requests', '--keep'],
  status: ['--config', '--json'],
};

let dir: string;
let good: Record<string, any>;
const prefix = randomPrefix('qmc');
const NS = `${prefix}-h1`;

/** Writes `config` next to the pki folder and returns its path. */
function writeConfig(name: string, config: unknown): string {
  const file = path.join(dir, `${name}.json`);
  fs.writeFileSync(file, JSON.stringify(config, null, 2));
  return file;
}

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qmesh-cli-'));
  await initCa({ dir: path.join(dir, 'pki'), trustDomain: 'qmesh.test' });
  await issueHost({ dir: path.join(dir, 'pki'), name: 'host-1' });
  good = {
    node: { name: 'host-1' },
    listen: { quic: '198.18.0.1:4433', capture: 15001, admin: '127.0.0.1:15000' },
    tls: { ca: 'pki/ca.crt', cert: 'pki/host-1.crt', key: 'pki/host-1.key', trustDomain: 'qmesh.test' },
    local: { cidrs: ['198.19.1.0/24'] },
    peers: [{ name: 'host-2', endpoint: '198.18.0.2:4433', cidrs: ['198.19.2.0/24'] }],
  };
  writeConfig('good', good);
}, 30_000);

afterAll(async () => {
  await cleanupStale(prefix);
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
}, 30_000);

describe('qmesh check-config', () => {
  it('accepts a good config and exits 0', async () => {
    const r = await qmesh(['check-config', '--config', path.join(dir, 'good.json')]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^config OK: /);
    expect(r.stdout).toContain('spiffe://qmesh.test/host/host-1');
    expect(r.stdout).not.toContain('fail-closed');
  }, STEP_MS);

  it('lists capture.failClosedCidrs when set', async () => {
    const r = await qmesh(['check-config', '--config', writeConfig('fenced', { ...good, capture: { failClosedCidrs: ['198.19.0.0/16'] } })]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('  fail-closed cidrs (dropped unless local or a peer\'s): 198.19.0.0/16\n');
  }, STEP_MS);

  const clone = (): Record<string, any> => structuredClone(good);
  /** A config that parses but would capture the host's own traffic: refused by check-config and by run. */
  const dangerous = (): Record<string, any> => ({ ...clone(), local: { cidrs: ['198.19.1.0/24', '127.0.0.0/8'] } });
  const bad: Array<[string, () => unknown, string]> = [
    ['a bad CIDR', () => ({ ...clone(), local: { cidrs: ['198.19.1.0/33'] } }), 'local.cidrs'],
    ['a bad peer CIDR', () => Object.assign(clone(), { peers: [{ ...good.peers[0], cidrs: ['not-a-cidr'] }] }), 'peers[0].cidrs'],
    ['no node.name', () => { const c = clone(); delete c.node; return c; }, 'node.name'],
    ['an unknown key', () => { const c = clone(); c.listen.quicc = '198.18.0.1:4433'; return c; }, 'listen.quicc'],
    ['an unknown top-level key', () => ({ ...clone(), peer: [] }), 'peer'],
    ['a bad endpoint', () => Object.assign(clone(), { peers: [{ ...good.peers[0], endpoint: '198.18.0.2' }] }), 'peers[0].endpoint'],
    ['a bad listen address', () => { const c = clone(); c.listen.quic = 'localhost:4433'; return c; }, 'listen.quic'],
    ['a function CIDR covering loopback (dangerous)', () => dangerous(), 'local.cidrs[1]'],
    ['an admin listener off loopback (dangerous)', () => { const c = clone(); c.listen.admin = '0.0.0.0:15000'; return c; }, 'listen.admin'],
    ['listen.quic inside capture.failClosedCidrs (dangerous)', () => ({ ...clone(), capture: { failClosedCidrs: ['198.18.0.0/16'] } }), 'listen.quic'],
  ];
  bad.forEach(([what, make, key], i) => {
    it(`rejects ${what} with one stderr line naming ${key}`, async () => {
      const file = writeConfig(`bad-${i}`, make());
      const r = await qmesh(['check-config', '--config', file]);
      expect(r.code).not.toBe(0);
      expect(r.code).toBe(2); // README: 2 = bad usage or config
      const lines = r.stderr.split('\n').filter(Boolean);
      expect(lines, r.stderr).toHaveLength(1);
      expect(lines[0]).toMatch(/^qmesh: QMESH_ERR_CONFIG: /);
      // "qmesh: QMESH_ERR_CONFIG: <file>: <key>: reason" or "... <file>: <key> must ..."
      const afterFile = lines[0]!.slice(lines[0]!.indexOf(file) + file.length);
      expect(afterFile.startsWith(`: ${key}`), lines[0]).toBe(true);
      expect(r.stdout).toBe('');
    }, STEP_MS);
  });

  it('says why a dangerous config is refused, and `run` refuses it before starting anything', async () => {
    const file = writeConfig('dangerous', dangerous());
    const check = await qmesh(['check-config', '--config', file]);
    expect(check.code).toBe(2);
    expect(check.stderr).toMatch(/^qmesh: QMESH_ERR_CONFIG: .*: local\.cidrs\[1\]: 127\.0\.0\.0\/8 covers loopback 127\.0\.0\.0\/8: traffic to the host itself would be captured\/tunnelled\n$/);
    // In a namespace of its own: were the config not refused, run would install capture rules.
    const ns = `${prefix}-run`;
    expect((await run(['ip', 'netns', 'add', ns])).code).toBe(0);
    try {
      const started = Date.now();
      const r = await qmesh(['run', '--config', file], ns);
      expect(r.code, r.stderr).toBe(2);
      expect(r.stderr.split('\n').filter(Boolean)).toEqual([check.stderr.trim()]);
      expect(r.stdout).toBe(''); // no log line: nothing was started
      expect(Date.now() - started).toBeLessThan(STEP_MS);
      const rules = await run(['iptables-save'], ns);
      expect(rules.stdout).not.toMatch(/QMESH/);
    } finally {
      await run(['ip', 'netns', 'del', ns]);
    }
  }, 2 * STEP_MS);

  it('rejects a missing file with one stderr line', async () => {
    const r = await qmesh(['check-config', '--config', path.join(dir, 'nope.json')]);
    expect(r.code).toBe(2);
    expect(r.stderr.split('\n').filter(Boolean)).toHaveLength(1);
  }, STEP_MS);
});

describe('qmesh --help', () => {
  it('exits 0 and names every verb', async () => {
    const r = await qmesh(['--help']);
    expect(r.code).toBe(0);
    for (const verb of new Set(Object.keys(VERBS).map((v) => v.split(' ')[0]!))) expect(r.stdout).toMatch(new RegExp(`^\\s+${verb}\\b`, 'm'));
  }, STEP_MS);

  for (const [verb, options] of Object.entries(VERBS)) {
    it(`qmesh ${verb} --help exits 0 and mentions ${options.join(', ')}`, async () => {
      const r = await qmesh([...verb.split(' '), '--help']);
      expect(r.code).toBe(0);
      for (const option of options) expect(r.stdout).toContain(option);
    }, STEP_MS);
  }

  it('a verb without its mandatory option exits 2 with one stderr line', async () => {
    const r = await qmesh(['check-config']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('--config');
  }, STEP_MS);
});

describe('qmesh iptables', () => {
  it('print shows the capture and fail-closed rules for the config', async () => {
    const r = await qmesh(['iptables', 'print', '--config', path.join(dir, 'good.json')]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/-t nat -A QMESH_PREROUTING .*-d 198\.19\.2\.0\/24 .*-j REDIRECT --to-ports 15001/);
    expect(r.stdout).toMatch(/-t nat -A QMESH_OUTPUT .*-j REDIRECT --to-ports 15001/);
    expect(r.stdout).toMatch(/-t filter -A QMESH_FORWARD -s 198\.19\.1\.0\/24 -d 198\.19\.2\.0\/24 .*-j DROP/);
    // Every appended rule says why it exists.
    const appended = r.stdout.split('\n').filter((l) => / -A QMESH_/.test(l));
    expect(appended.length).toBeGreaterThan(5);
    for (const line of appended) expect(line).toMatch(/--comment 'qmesh: /);
  }, STEP_MS);

  it('what print shows, run in a fresh namespace, is exactly what check expects; apply and remove round-trip', async () => {
    const config = path.join(dir, 'good.json');
    const made = await run(['ip', 'netns', 'add', NS]);
    expect(made.code, made.stderr).toBe(0);
    const script = (await qmesh(['iptables', 'print', '--config', config])).stdout;
    const pasted = await run(['sh', '-e', '-c', script], NS);
    expect(pasted.code, pasted.stderr).toBe(0);
    expect((await qmesh(['iptables', 'check', '--config', config], NS)).code).toBe(0);

    expect((await qmesh(['iptables', 'remove', '--config', config], NS)).code).toBe(0);
    const missing = await qmesh(['iptables', 'check', '--config', config], NS);
    expect(missing.code).toBe(1);
    expect(missing.stderr.split('\n').filter(Boolean)).toHaveLength(1);
    expect(missing.stderr).toMatch(/^qmesh: QMESH_ERR_IPTABLES: /);

    const applied = await qmesh(['iptables', 'apply', '--config', config], NS);
    expect(applied.code, applied.stderr).toBe(0);
    expect((await qmesh(['iptables', 'apply', '--config', config], NS)).code).toBe(0); // idempotent
    expect((await qmesh(['iptables', 'check', '--config', config], NS)).code).toBe(0);
  }, 60_000);
});
