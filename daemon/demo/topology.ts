// Builds the network that `qmesh demo`, test/e2e and bench/ run on: one underlay
// namespace whose bridge br0 joins N host namespaces (198.18.0.<i>/24), each host
// with a bridge fbr0 (198.19.<i>.1/24) and M function namespaces behind it.
// Hosts forward and route to each other's function CIDRs, so plain TCP between
// functions on different hosts works before any qmesh daemon starts.
//
//   function ns  eth0 198.19.i.(10+j) ──veth── f<j> ┐
//                                                    fbr0 198.19.i.1   host ns <prefix>-h<i>
//                                     eth0 198.18.0.i ──veth── h<i> ── br0   underlay ns <prefix>-ul
//
// Every namespace name starts with the run's prefix; interfaces live only inside
// the namespaces, so deleting the namespaces removes everything.
import { spawn as spawnChild, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { once } from 'node:events';
import { COMMAND_TIMEOUT_MS, runCommand, runOrThrow, runSyncQuiet, type ExecOptions, type ExecResult } from './netns-command.js';
import {
  assertMtu,
  assertPrefix,
  functionScript,
  HOST_SYSCTLS,
  hostScript,
  namespacesOf,
  planTopology,
  TopologyError,
  underlayMtuScript,
  underlayScript,
  type HostInfo,
  type TopologyOptions,
  type TopologyPlan,
} from './topology-plan.js';

export { randomPrefix, TopologyError, type FunctionInfo, type HostInfo, type TopologyOptions } from './topology-plan.js';
export type { ExecOptions, ExecResult } from './netns-command.js';

/** How long destroy() waits for each spawned child to die after SIGKILL. */
const CHILD_EXIT_WAIT_MS = 2_000;
const TERMINATING_SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;

export class Topology {
  /** Topologies not yet destroyed; the exit and signal handlers remove them. */
  static readonly #live = new Set<Topology>();
  static #handlersInstalled = false;

  readonly prefix: string;
  /** Namespace holding the underlay bridge br0. */
  readonly underlayNs: string;
  readonly hosts: readonly HostInfo[];
  /** Current underlay MTU (see setMtu). */
  get mtu(): number {
    return this.#plan.mtu;
  }

  #plan: TopologyPlan;
  readonly #namespaces: ReadonlySet<string>;
  readonly #children = new Set<ChildProcess>();
  #destroyed: Promise<void> | undefined;

  private constructor(plan: TopologyPlan) {
    this.#plan = plan;
    this.prefix = plan.prefix;
    this.underlayNs = plan.underlayNs;
    this.hosts = plan.hosts;
    this.#namespaces = new Set(namespacesOf(plan));
  }

  /**
   * Creates every namespace, link, address, route and sysctl. Needs root. On any
   * failure removes what it made and throws TopologyError (code QMESH_ERR_TOPOLOGY).
   */
  static async create(opts: TopologyOptions): Promise<Topology> {
    const topo = new Topology(planTopology(opts));
    Topology.#installExitHandlers();
    Topology.#live.add(topo);
    try {
      await topo.#build();
    } catch (err) {
      await topo.destroy();
      throw err instanceof TopologyError ? err : new TopologyError(`topology ${topo.prefix}: ${String(err)}`, { cause: err });
    }
    return topo;
  }

  /** All namespace names of this topology: underlay, hosts, functions. */
  get namespaces(): string[] {
    return [...this.#namespaces];
  }

  async #build(): Promise<void> {
    const plan = this.#plan;
    const all = namespacesOf(plan);
    await runOrThrow('ip', ['-batch', '-'], 'creating namespaces', { input: lines(all.map((ns) => `netns add ${ns}`)) });
    // Sysctls first: interfaces created afterwards copy net.ipv4.conf.default.
    await Promise.all(
      plan.hosts.map((h) =>
        runOrThrow('ip', ['netns', 'exec', h.ns, 'sysctl', '-q', '-w', ...HOST_SYSCTLS], `sysctls in ${h.ns}`),
      ),
    );
    await runOrThrow('ip', ['-n', plan.underlayNs, '-batch', '-'], 'building the underlay', { input: underlayScript(plan) });
    await Promise.all(
      plan.hosts.map((h) =>
        runOrThrow('ip', ['-n', h.ns, '-batch', '-'], `building ${h.name}`, { input: hostScript(plan, h) }),
      ),
    );
    await Promise.all(
      plan.hosts.flatMap((h) =>
        h.functions.map((f) =>
          runOrThrow('ip', ['-n', f.ns, '-batch', '-'], `building ${f.name}`, { input: functionScript(h, f) }),
        ),
      ),
    );
  }

  /**
   * Runs argv inside namespace ns (`ip netns exec ns ...`) and resolves with its
   * output and exit status; never rejects on a non-zero exit. Killed after
   * opts.timeoutMs (default 10 s). Rejects if ns is not part of this topology.
   */
  async exec(ns: string, argv: readonly string[], opts: ExecOptions = {}): Promise<ExecResult> {
    this.#checkUsable(ns, argv);
    return runCommand('ip', ['netns', 'exec', ns, ...argv], opts);
  }

  /**
   * Starts argv inside namespace ns and returns the child (no timeout: the caller
   * owns it). destroy() and process exit SIGKILL every child still running.
   */
  spawn(ns: string, argv: readonly string[], opts: SpawnOptions = {}): ChildProcess {
    this.#checkUsable(ns, argv);
    const child = spawnChild('ip', ['netns', 'exec', ns, ...argv], opts);
    this.#children.add(child);
    child.once('exit', () => this.#children.delete(child));
    child.once('error', () => this.#children.delete(child));
    return child;
  }

  /** Sets the MTU of every underlay link (underlay veths, br0, each host's eth0). Function links stay at 1500. */
  async setMtu(mtu: number): Promise<void> {
    assertMtu(mtu);
    this.#checkUsable(this.underlayNs, ['setMtu']);
    await runOrThrow('ip', ['-n', this.underlayNs, '-batch', '-'], 'setting the underlay MTU', {
      input: underlayMtuScript(this.#plan, mtu),
    });
    await Promise.all(
      this.hosts.map((h) => runOrThrow('ip', ['-n', h.ns, 'link', 'set', 'eth0', 'mtu', String(mtu)], `MTU of ${h.name}`)),
    );
    this.#plan = { ...this.#plan, mtu };
  }

  /**
   * Kills every process still inside the topology's namespaces and deletes the
   * namespaces (their links go with them). Idempotent: later calls return the
   * same promise. Never rejects.
   */
  destroy(): Promise<void> {
    this.#destroyed ??= this.#teardown().catch(() => undefined);
    return this.#destroyed;
  }

  get destroyed(): boolean {
    return this.#destroyed !== undefined;
  }

  async #teardown(): Promise<void> {
    await Promise.all(
      [...this.#children].map(async (child) => {
        if (child.exitCode !== null || child.signalCode !== null) return;
        const exited = once(child, 'exit').catch(() => undefined);
        child.kill('SIGKILL');
        await Promise.race([exited, delay(CHILD_EXIT_WAIT_MS)]);
      }),
    );
    const all = this.namespaces;
    await Promise.all(all.map((ns) => killNamespacePids(ns)));
    await runCommand('ip', ['-force', '-batch', '-'], { input: lines(all.map((ns) => `netns del ${ns}`)) });
    // Only now: an exit during teardown still finishes the job synchronously.
    Topology.#live.delete(this);
  }

  /** For the exit and signal handlers: the same as destroy(), synchronously. */
  #destroySync(): void {
    Topology.#live.delete(this);
    this.#destroyed ??= Promise.resolve();
    for (const child of this.#children) child.kill('SIGKILL');
    for (const ns of this.#namespaces) killPids(runSyncQuiet('ip', ['netns', 'pids', ns]));
    runSyncQuiet('ip', ['-force', '-batch', '-'], lines([...this.#namespaces].map((ns) => `netns del ${ns}`)));
  }

  #checkUsable(ns: string, argv: readonly string[]): void {
    if (this.#destroyed) throw new TopologyError(`topology ${this.prefix} is destroyed; cannot run ${argv[0] ?? ''} in ${ns}`);
    if (!this.#namespaces.has(ns)) {
      throw new TopologyError(`namespace ${JSON.stringify(ns)} is not part of topology ${this.prefix} (see topology.namespaces)`);
    }
    if (argv.length === 0) throw new TopologyError('argv must name a program to run');
  }

  /** Installed once per process: Ctrl-C, SIGTERM or a plain exit leaves no namespace behind. */
  static #installExitHandlers(): void {
    if (Topology.#handlersInstalled) return;
    Topology.#handlersInstalled = true;
    const destroyAll = (): void => {
      for (const topo of [...Topology.#live]) topo.#destroySync();
    };
    process.on('exit', destroyAll);
    for (const signal of TERMINATING_SIGNALS) {
      const onSignal = (): void => {
        destroyAll();
        // A listener replaces Node's default "terminate". If nobody else handles
        // the signal, restore the default and re-raise it so the exit status is right.
        if (process.listenerCount(signal) === 1) {
          process.removeListener(signal, onSignal);
          process.kill(process.pid, signal);
        }
      };
      process.on(signal, onSignal);
    }
  }
}

/**
 * Deletes every namespace whose name starts with prefix (and any root-namespace
 * link whose name does), killing processes still inside them: the leftovers of
 * a crashed run. Pass the run's own prefix; a base such as 'qmt' also removes
 * other runs' live topologies. Resolves with the names removed; never rejects.
 */
export async function cleanupStale(prefix: string): Promise<string[]> {
  assertPrefix(prefix);
  const removed: string[] = [];
  const listed = await runCommand('ip', ['netns', 'list']);
  // Lines look like "qmt3fa9-h1 (id: 4)" or just "qmt3fa9-h1".
  const namespaces = listed.stdout
    .split('\n')
    .map((line) => line.trim().split(/\s+/)[0] ?? '')
    .filter((name) => name.startsWith(prefix));
  await Promise.all(namespaces.map((ns) => killNamespacePids(ns)));
  if (namespaces.length > 0) {
    await runCommand('ip', ['-force', '-batch', '-'], { input: lines(namespaces.map((ns) => `netns del ${ns}`)) });
    removed.push(...namespaces);
  }
  const links = await runCommand('ip', ['-o', 'link', 'show']);
  // Lines look like "7: qmt3fa9x@if6: <BROADCAST,...".
  const linkNames = links.stdout
    .split('\n')
    .map((line) => /^\d+:\s+([^:@\s]+)/.exec(line)?.[1] ?? '')
    .filter((name) => name.startsWith(prefix));
  for (const name of linkNames) {
    const res = await runCommand('ip', ['link', 'del', name]);
    if (res.code === 0) removed.push(name);
  }
  return removed;
}

async function killNamespacePids(ns: string): Promise<void> {
  const res = await runCommand('ip', ['netns', 'pids', ns], { timeoutMs: COMMAND_TIMEOUT_MS });
  killPids(res.stdout);
}

function killPids(pidList: string): void {
  for (const word of pidList.split(/\s+/)) {
    const pid = Number(word);
    if (!Number.isInteger(pid) || pid <= 1 || pid === process.pid) continue;
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // Already gone.
    }
  }
}

function lines(commands: readonly string[]): string {
  return commands.join('\n') + '\n';
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}
