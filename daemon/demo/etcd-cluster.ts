// A real etcd v3 cluster for e2e tests and bench/membership-join.ts: openssl-made PKI, members started as real
// `etcd` processes (each inside a network namespace if given, e.g. a mesh host's),
// TLS everywhere with client and peer certificate authentication, and helpers that run
// etcdctl, the operator's RBAC script (deploy/etcd/qmesh-etcd-rbac.sh) and the npm
// `etcd3` client as a given etcd user. With --client-cert-auth, etcd 3.4 takes a client
// certificate's CN as the etcd user, so client certificate `<name>` IS user `<name>`.
//
//   const pki = await makeEtcdPki(dir, { memberIps: ['198.18.0.1', ...], clients: ['host-1', ...] });
//   const etcd = await startEtcdCluster({ members: [{ name: 'etcd-1', ns, ip }, ...], dir, pki });
//   await etcd.enableAuth('/qmesh/qmesh.test/hosts/', ['host-1', 'host-2']);
//   ...
//   await etcd.destroy(); // in afterAll, before the namespaces go
//
// Every wait is bounded; failures carry the members' last stderr lines.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { createWriteStream, type WriteStream } from 'node:fs';
import { chmod, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { runCommand, type ExecResult } from './netns-command.js';
import { packageRoot } from './package-root.js';

export type { ExecResult };

/** The operator script the cluster's enableAuth() runs. */
export const RBAC_SCRIPT = join(packageRoot(), 'deploy/etcd/qmesh-etcd-rbac.sh');
const CLIENT_SCRIPT = join(packageRoot(), 'test/support/etcd-client.mjs');

/** Bound of startEtcdCluster()'s and start()'s wait for health (3.4 is healthy in ~1-2 s here). */
export const ETCD_START_MS = 20_000;
/** How long stop() waits after SIGTERM before SIGKILL. */
const STOP_MS = 10_000;
const KILL_WAIT_MS = 3_000;
/** One etcdctl or client run; auth commands of etcdctl 3.4 have no deadline of their own. */
const COMMAND_MS = 20_000;
const STDERR_TAIL_LINES = 25;
const OPENSSL_MS = 10_000;

// ------------------------------------------------------------------------- PKI

export interface CertFiles {
  /** The CA that signed everything (etcd-ca.crt). */
  ca: string;
  cert: string;
  key: string;
}

export interface EtcdPki {
  dir: string;
  caCert: string;
  /** Server+peer certificate of the member on `ip` (IP SANs ip and 127.0.0.1). Throws if unknown. */
  member(ip: string): CertFiles;
  /** Client certificate with CN=`name`, i.e. etcd user `name`. Throws if unknown. */
  client(name: string): CertFiles;
  /** What client() knows (always includes 'root'). */
  clientNames: readonly string[];
}

/**
 * Makes, with openssl, an ECDSA P-256 CA (`<dir>/etcd-ca.crt`), one certificate per member IP
 * (`member-<ip>.crt/.key`, serverAuth+clientAuth, used both for clients and peers) and one
 * client certificate per name (`<name>.crt/.key`, CN=<name>, clientAuth). 'root' is always
 * made: the cluster's helpers act as etcd's root user. Keys are mode 0600.
 */
export async function makeEtcdPki(dir: string, opts: { memberIps: readonly string[]; clients: readonly string[] }): Promise<EtcdPki> {
  await mkdir(dir, { recursive: true });
  const caCert = join(dir, 'etcd-ca.crt');
  const caKey = join(dir, 'etcd-ca.key');
  await openssl([
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', caKey, '-out', caCert, '-days', '2', '-subj', '/CN=qmesh test etcd CA',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
  ]);
  await chmod(caKey, 0o600);

  const issue = async (base: string, cn: string, ext: string[]): Promise<CertFiles> => {
    const cert = join(dir, `${base}.crt`);
    const key = join(dir, `${base}.key`);
    const csr = join(dir, `${base}.csr`);
    const extFile = join(dir, `${base}.ext`);
    await writeFile(extFile, ['basicConstraints=critical,CA:FALSE', ...ext].join('\n') + '\n');
    await openssl(['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', key, '-out', csr, '-subj', `/CN=${cn}`]);
    await chmod(key, 0o600);
    await openssl([
      'x509', '-req', '-in', csr, '-CA', caCert, '-CAkey', caKey, '-set_serial', `0x${randomBytes(8).toString('hex')}`,
      '-days', '2', '-out', cert, '-extfile', extFile,
    ]);
    return { ca: caCert, cert, key };
  };

  const members = new Map<string, CertFiles>();
  for (const ip of new Set(opts.memberIps)) {
    const sans = ip === '127.0.0.1' ? 'IP:127.0.0.1' : `IP:${ip},IP:127.0.0.1`;
    members.set(
      ip,
      await issue(`member-${ip}`, `etcd-member-${ip}`, [
        'keyUsage=critical,digitalSignature,keyEncipherment',
        'extendedKeyUsage=serverAuth,clientAuth',
        `subjectAltName=${sans}`,
      ]),
    );
  }
  const clients = new Map<string, CertFiles>();
  for (const name of new Set(['root', ...opts.clients])) {
    if (!/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(name)) throw new Error(`etcd client name ${JSON.stringify(name)} is not a plain CN`);
    clients.set(name, await issue(name, name, ['keyUsage=critical,digitalSignature', 'extendedKeyUsage=clientAuth']));
  }
  return {
    dir,
    caCert,
    member(ip) {
      const files = members.get(ip);
      if (!files) throw new Error(`no etcd member certificate for ${ip} (made for ${[...members.keys()].join(', ')})`);
      return files;
    },
    client(name) {
      const files = clients.get(name);
      if (!files) throw new Error(`no etcd client certificate for ${name} (made for ${[...clients.keys()].join(', ')})`);
      return files;
    },
    clientNames: [...clients.keys()],
  };
}

async function openssl(args: string[]): Promise<void> {
  const res = await runCommand('openssl', args, { timeoutMs: OPENSSL_MS });
  if (res.code !== 0) throw new Error(`openssl ${args.slice(0, 2).join(' ')} failed (exit ${res.code}): ${res.stderr.trim()}`);
}

// ------------------------------------------------------------------------- cluster

export interface EtcdMemberSpec {
  /** etcd member name, e.g. 'etcd-1'. */
  name: string;
  /** Network namespace to run the member in, or null for the test's own. */
  ns: string | null;
  /** Address the member listens on (client :2379, peer :2380); must have a certificate in the PKI. */
  ip: string;
}

export interface EtcdClusterOptions {
  members: readonly EtcdMemberSpec[];
  /** Data dirs (`<name>.etcd`) and logs (`<name>.log`, stderr of every run appended) go here. */
  dir: string;
  pki: EtcdPki;
  /** Bound of the wait for every member to be healthy; default ETCD_START_MS. */
  startTimeoutMs?: number;
}

/** Result of one etcd3-client operation run by EtcdCluster.client() (see etcd-client.mjs). */
export type EtcdClientResult = { ok: true; value?: any } | { ok: false; error: string; message: string };

export type EtcdClientOp =
  | { op: 'put'; key: string; value: string }
  | { op: 'get'; key: string }
  | { op: 'delete'; key: string }
  | { op: 'getPrefix'; prefix: string }
  | { op: 'lease'; key: string; value: string; ttl: number }
  | { op: 'leaseGrant'; ttl: number }
  | { op: 'leasePut'; id: string; key: string; value: string }
  | { op: 'leaseRevoke'; id: string }
  | { op: 'watchPrefix'; prefix: string }
  | { op: 'watchEvents'; count: number; ms: number };

interface Member extends EtcdMemberSpec {
  endpoint: string;
  dataDir: string;
  logFile: string;
  child: ChildProcess | null;
  exited: Promise<void> | null;
  /** stderr of the current (or last) run, trimmed to the last lines. */
  tail: string[];
}

/** Every etcd child of this process; killed on exit so a crashed test run leaves none behind. */
const liveChildren = new Set<ChildProcess>();
let exitHandlerInstalled = false;

/** Starts every member (fresh data dirs) and waits until all are healthy; on failure kills them and throws with their stderr. */
export async function startEtcdCluster(opts: EtcdClusterOptions): Promise<EtcdCluster> {
  const cluster = new EtcdCluster(opts);
  try {
    await cluster.startAll(opts.startTimeoutMs ?? ETCD_START_MS);
  } catch (err) {
    await cluster.destroy();
    throw err;
  }
  return cluster;
}

export class EtcdCluster {
  readonly members: readonly EtcdMemberSpec[];
  /** https://<ip>:2379 of each member, in members' order. */
  readonly endpoints: readonly string[];
  readonly pki: EtcdPki;
  readonly dir: string;
  readonly #members: Member[];
  readonly #token = `qmesh-test-${randomBytes(4).toString('hex')}`;
  #destroyed = false;

  constructor(opts: EtcdClusterOptions) {
    if (opts.members.length === 0) throw new Error('an etcd cluster needs at least one member');
    this.pki = opts.pki;
    this.dir = opts.dir;
    this.members = opts.members.map((m) => ({ ...m }));
    this.#members = opts.members.map((m) => {
      opts.pki.member(m.ip); // fail now, not in etcd's log, when the PKI lacks the member
      return {
        ...m,
        endpoint: `https://${m.ip}:2379`,
        dataDir: join(opts.dir, `${m.name}.etcd`),
        logFile: join(opts.dir, `${m.name}.log`),
        child: null,
        exited: null,
        tail: [],
      };
    });
    this.endpoints = this.#members.map((m) => m.endpoint);
  }

  /** Used by startEtcdCluster(): spawns every member with --initial-cluster-state new. */
  async startAll(timeoutMs: number): Promise<void> {
    await mkdir(this.dir, { recursive: true });
    for (let i = 0; i < this.#members.length; i++) this.#spawn(i, 'new');
    await this.waitHealthy(timeoutMs);
  }

  /** True while member i's etcd process runs. */
  running(i: number): boolean {
    const m = this.#member(i);
    return m.child !== null;
  }

  /** Gracefully stops member i (SIGTERM; SIGKILL after 10 s) and waits for the process to exit. */
  async stop(i: number): Promise<void> {
    await this.#signal(i, 'SIGTERM', STOP_MS);
  }

  /** Kills member i (SIGKILL) and waits for the process to exit. */
  async kill(i: number): Promise<void> {
    await this.#signal(i, 'SIGKILL', KILL_WAIT_MS);
  }

  /**
   * Restarts member i on its existing data dir (--initial-cluster-state existing). Unless
   * opts.wait is false, waits (bounded) until that member answers healthy, which needs a
   * quorum: restarting one member while a majority is still down would never be healthy.
   */
  async start(i: number, opts: { wait?: boolean; timeoutMs?: number } = {}): Promise<void> {
    if (this.#destroyed) throw new Error('etcd cluster is destroyed');
    if (this.running(i)) throw new Error(`etcd member ${this.#member(i).name} is already running`);
    this.#spawn(i, 'existing');
    if (opts.wait !== false) await this.waitHealthy(opts.timeoutMs ?? ETCD_START_MS, [i]);
  }

  /**
   * Waits until `etcdctl endpoint health` reports every member in `which` (default: all)
   * healthy; throws after ms with the last health output and the members' stderr tails.
   * Fails at once if one of them is not running or exits meanwhile.
   */
  async waitHealthy(ms = ETCD_START_MS, which: readonly number[] = this.#members.map((_, i) => i)): Promise<void> {
    const deadline = Date.now() + ms;
    const endpoints = which.map((i) => this.#member(i).endpoint);
    let last = '';
    for (;;) {
      for (const i of which) {
        if (!this.running(i)) throw new Error(`etcd member ${this.#member(i).name} is not running (its stderr is below)\n${this.stderrTails()}`);
      }
      const res = await this.#etcdctlRaw(['endpoint', 'health', '-w', 'json', '--command-timeout=2s', '--dial-timeout=1s'], 'root', endpoints, 5_000);
      last = `${res.stdout.trim()} ${res.stderr.trim()}`.trim();
      if (res.code === 0 && healthyCount(res.stdout) === endpoints.length) return;
      if (Date.now() > deadline) {
        throw new Error(`etcd members ${endpoints.join(', ')} not healthy within ${ms} ms; last etcdctl endpoint health: ${last}\n${this.stderrTails()}`);
      }
      await delay(200);
    }
  }

  /**
   * Runs `etcdctl <args>` against every endpoint as etcd user `user` (its client certificate),
   * inside the first member's namespace (or opts.ns). Resolves with stdout; throws with stderr
   * on a non-zero exit.
   */
  async etcdctl(args: readonly string[], opts: { user?: string; endpoints?: readonly string[]; ns?: string | null } = {}): Promise<string> {
    const res = await this.#etcdctlRaw(args, opts.user ?? 'root', opts.endpoints ?? this.endpoints, COMMAND_MS, opts.ns);
    if (res.code !== 0) {
      throw new Error(`etcdctl ${args.join(' ')} as ${opts.user ?? 'root'} failed (${res.timedOut ? 'timed out' : `exit ${res.code}`}): ${tidyEtcdctl(res.stderr)}`);
    }
    return res.stdout;
  }

  /**
   * Runs deploy/etcd/qmesh-etcd-rbac.sh with `args`, connected through etcdctl's environment
   * (ETCDCTL_ENDPOINTS/CACERT/CERT/KEY) as `user` (default root), inside the first member's
   * namespace. Never rejects on a non-zero exit: the result says how it ended.
   */
  rbacScript(args: readonly string[], opts: { user?: string } = {}): Promise<ExecResult> {
    const creds = this.pki.client(opts.user ?? 'root');
    const env = {
      ...withoutEnv('ETCDCTL'),
      ETCDCTL_API: '3',
      ETCDCTL_ENDPOINTS: this.endpoints.join(','),
      ETCDCTL_CACERT: creds.ca,
      ETCDCTL_CERT: creds.cert,
      ETCDCTL_KEY: creds.key,
    };
    return this.#run(['sh', RBAC_SCRIPT, ...args], { env, timeoutMs: 60_000 });
  }

  /** The operator's setup: runs the RBAC script with --enable-auth for `hosts`; throws with its output if it fails. */
  async enableAuth(prefix: string, hosts: readonly string[]): Promise<ExecResult> {
    const res = await this.rbacScript(['--enable-auth', prefix, ...hosts]);
    if (res.code !== 0) {
      throw new Error(`qmesh-etcd-rbac.sh --enable-auth ${prefix} ${hosts.join(' ')} failed (exit ${res.code}):\n${res.stdout}${res.stderr}`);
    }
    return res;
  }

  /**
   * Runs `ops` with the npm etcd3 client as etcd user `user` (its client certificate, no
   * password), in a node child inside the first member's namespace (or opts.ns); resolves
   * with one result per op. Throws only if the child itself fails.
   */
  async client(user: string, ops: readonly EtcdClientOp[], opts: { ns?: string | null; endpoints?: readonly string[] } = {}): Promise<EtcdClientResult[]> {
    const creds = this.pki.client(user);
    const spec = { hosts: opts.endpoints ?? this.endpoints, ...creds, ops };
    const res = await this.#run([process.execPath, CLIENT_SCRIPT, JSON.stringify(spec)], { timeoutMs: COMMAND_MS }, opts.ns);
    const line = res.stdout.trim().split('\n').pop() ?? '';
    if (res.code !== 0 || !line.startsWith('[')) {
      throw new Error(`etcd3 client as ${user} failed (${res.timedOut ? 'timed out' : `exit ${res.code}`}): ${res.stderr.trim() || res.stdout.trim()}`);
    }
    return JSON.parse(line) as EtcdClientResult[];
  }

  /** CA, certificate and key files of client `user` (e.g. for a daemon's etcd config). */
  certFiles(user: string): CertFiles {
    return this.pki.client(user);
  }

  /** The last stderr lines of member i (its current or last run). */
  stderrTail(i: number): string {
    return this.#member(i).tail.join('\n');
  }

  /** Every member's stderr tail, headed by its name, for error messages. */
  stderrTails(): string {
    return this.#members.map((m, i) => `--- etcd ${m.name} (${m.child ? 'running' : 'not running'}; log ${m.logFile})\n${this.stderrTail(i)}`).join('\n');
  }

  /** For afterAll: SIGKILLs every member and waits (bounded) for them to exit. Idempotent; never throws. */
  async destroy(): Promise<void> {
    this.#destroyed = true;
    await Promise.all(this.#members.map((_, i) => this.kill(i).catch(() => undefined)));
  }

  #member(i: number): Member {
    const m = this.#members[i];
    if (!m) throw new Error(`no etcd member ${i} (members 0..${this.#members.length - 1})`);
    return m;
  }

  #spawn(i: number, state: 'new' | 'existing'): void {
    installExitHandler();
    const m = this.#member(i);
    const tls = this.pki.member(m.ip);
    const argv = [
      'etcd',
      `--name=${m.name}`,
      `--data-dir=${m.dataDir}`,
      `--listen-client-urls=https://${m.ip}:2379`,
      `--advertise-client-urls=https://${m.ip}:2379`,
      `--listen-peer-urls=https://${m.ip}:2380`,
      `--initial-advertise-peer-urls=https://${m.ip}:2380`,
      `--initial-cluster=${this.#members.map((x) => `${x.name}=https://${x.ip}:2380`).join(',')}`,
      `--initial-cluster-state=${state}`,
      `--initial-cluster-token=${this.#token}`,
      `--cert-file=${tls.cert}`,
      `--key-file=${tls.key}`,
      '--client-cert-auth',
      `--trusted-ca-file=${tls.ca}`,
      `--peer-cert-file=${tls.cert}`,
      `--peer-key-file=${tls.key}`,
      '--peer-client-cert-auth',
      `--peer-trusted-ca-file=${tls.ca}`,
      '--heartbeat-interval=100',
      '--election-timeout=1000',
      '--logger=zap',
      '--log-outputs=stderr',
    ];
    const full = m.ns === null ? argv : ['ip', 'netns', 'exec', m.ns, ...argv];
    // etcd reads ETCD_* variables as flags: keep the test's environment from leaking in.
    const env = withoutEnv('ETCD');
    const child = spawn(full[0]!, full.slice(1), { stdio: ['ignore', 'ignore', 'pipe'], env });
    const log: WriteStream = createWriteStream(m.logFile, { flags: 'a' });
    log.on('error', () => undefined);
    log.write(`=== ${new Date().toISOString()} ${full.join(' ')}\n`);
    m.tail = [];
    let partial = '';
    child.stderr!.setEncoding('utf8').on('data', (chunk: string) => {
      log.write(chunk);
      const lines = (partial + chunk).split('\n');
      partial = lines.pop() ?? '';
      m.tail.push(...lines);
      if (m.tail.length > STDERR_TAIL_LINES) m.tail.splice(0, m.tail.length - STDERR_TAIL_LINES);
    });
    m.child = child;
    liveChildren.add(child);
    m.exited = new Promise<void>((resolve) => {
      const done = (why: string): void => {
        liveChildren.delete(child);
        if (m.child === child) m.child = null;
        if (partial) m.tail.push(partial);
        m.tail.push(`[etcd ${m.name} ${why}]`);
        log.end();
        resolve();
      };
      child.once('exit', (code, signal) => done(signal ? `killed by ${signal}` : `exited with status ${code}`));
      child.once('error', (err) => done(`could not start: ${err.message}`));
    });
  }

  async #signal(i: number, signal: NodeJS.Signals, waitMs: number): Promise<void> {
    const m = this.#member(i);
    const child = m.child;
    if (!child || !m.exited) return;
    child.kill(signal);
    if (await settlesWithin(m.exited, waitMs)) return;
    child.kill('SIGKILL');
    if (!(await settlesWithin(m.exited, KILL_WAIT_MS))) {
      throw new Error(`etcd member ${m.name} (pid ${child.pid}) did not exit after ${signal} and SIGKILL`);
    }
  }

  /** Runs argv in namespace ns (default: the first member's), or in the test's own when that is null. */
  #run(argv: readonly string[], opts: { env?: NodeJS.ProcessEnv; timeoutMs: number }, ns?: string | null): Promise<ExecResult> {
    const where = ns === undefined ? this.#member(0).ns : ns;
    const full = where === null ? argv : ['ip', 'netns', 'exec', where, ...argv];
    return runCommand(full[0]!, full.slice(1), opts);
  }

  #etcdctlRaw(args: readonly string[], user: string, endpoints: readonly string[], timeoutMs: number, ns?: string | null): Promise<ExecResult> {
    const creds = this.pki.client(user);
    const env = withoutEnv('ETCDCTL');
    return this.#run(
      ['etcdctl', `--endpoints=${endpoints.join(',')}`, `--cacert=${creds.ca}`, `--cert=${creds.cert}`, `--key=${creds.key}`, ...args],
      { env: { ...env, ETCDCTL_API: '3' }, timeoutMs },
      ns,
    );
  }
}

/** Members that `etcdctl endpoint health -w json` reports healthy. */
function healthyCount(stdout: string): number {
  try {
    const list = JSON.parse(stdout) as { health?: boolean }[];
    return Array.isArray(list) ? list.filter((e) => e.health === true).length : 0;
  } catch {
    return 0;
  }
}

/** etcdctl's stderr without its JSON "retrying of unary invoker failed" lines. */
export function tidyEtcdctl(stderr: string): string {
  return stderr
    .split('\n')
    .filter((l) => l.trim() !== '' && !l.startsWith('{"level":"warn"'))
    .join('\n');
}

/** process.env without the variables whose names start with `prefix` (etcd and etcdctl read theirs as flags). */
function withoutEnv(prefix: string): NodeJS.ProcessEnv {
  return Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith(prefix)));
}

function installExitHandler(): void {
  if (exitHandlerInstalled) return;
  exitHandlerInstalled = true;
  process.on('exit', () => {
    for (const child of liveChildren) child.kill('SIGKILL');
  });
}

async function settlesWithin(p: Promise<void>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<false>((resolve) => {
    timer = setTimeout(() => resolve(false), ms);
  });
  const settled = p.then(() => true as const);
  try {
    return await Promise.race([settled, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
