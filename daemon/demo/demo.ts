// `qmesh demo`: the first thing a new user runs. Builds 2 hosts with 2 function
// namespaces each (mesh.ts), measures plain TCP between them, starts a qmesh
// daemon per host, sends real HTTP requests across in both directions, watches
// the wire between hosts with tcpdump, measures the same latency through qmesh,
// prints the comparison and removes everything — also on Ctrl-C or SIGTERM.
// The steps live in demo-steps.ts; this file owns the lifetime.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { QmeshError } from '../errors.js';
import { DemoOutput, seconds } from './demo-report.js';
import { DemoSteps } from './demo-steps.js';
import { oneLine } from './demo-functions.js';
import { Mesh } from './mesh.js';
import { cleanupStale, randomPrefix, TopologyError } from './topology.js';

export interface DemoOptions {
  /** Timed connections per latency sample (plain TCP and through qmesh). */
  requests: number;
  /** Leave everything up until Ctrl-C. */
  keep: boolean;
}

const MAX_REQUESTS = 100_000;
/** Exit statuses a shell reports for a process ended by SIGINT and SIGTERM (128 + signal number). */
const SIGNAL_EXIT: Record<'SIGINT' | 'SIGTERM', number> = { SIGINT: 130, SIGTERM: 143 };
/** How long cleanup waits for a Mesh.create that a signal interrupted. */
const CREATE_SETTLE_MS = 10_000;
/** How many lines of each daemon's log a failure report shows. */
const LOG_TAIL_LINES = 5;

export async function runDemo(opts: DemoOptions): Promise<void> {
  if (!Number.isInteger(opts.requests) || opts.requests < 1 || opts.requests > MAX_REQUESTS) {
    throw new QmeshError('QMESH_ERR_USAGE', `--requests must be a whole number from 1 to ${MAX_REQUESTS} (got ${opts.requests})`);
  }
  if (process.getuid?.() !== 0) {
    throw new QmeshError('QMESH_ERR_USAGE', 'qmesh demo needs root (network namespaces and iptables): run it with sudo');
  }
  await new DemoRun(opts).run();
}

class DemoRun {
  readonly out = new DemoOutput();
  /** Every namespace and temporary folder of this run starts with it (qmesh-<prefix>- for folders). */
  readonly prefix = randomPrefix('qmd');
  readonly startedAt = performance.now();
  mesh: Mesh | undefined;
  #creating: Promise<Mesh> | undefined;
  #cleanup: Promise<void> | undefined;
  #interrupted = false;
  readonly #onSignal = (signal: NodeJS.Signals): void => void this.#interrupt(signal as 'SIGINT' | 'SIGTERM');

  constructor(readonly opts: DemoOptions) {}

  async run(): Promise<void> {
    process.on('SIGINT', this.#onSignal);
    process.on('SIGTERM', this.#onSignal);
    try {
      this.out.line(`qmesh demo: 2 hosts with 2 functions each, built in network namespaces ${this.prefix}-* on this machine`);
      this.mesh = await this.#build();
      const steps = new DemoSteps(this.mesh, this.out, this.opts.requests);
      await steps.run();
      if (this.opts.keep) return await this.#keep(steps);
    } catch (err) {
      if (this.#interrupted) return new Promise<void>(() => undefined); // #interrupt exits
      const tails = this.#logTails();
      await this.#cleanupStep();
      this.#detach();
      for (const line of tails) process.stderr.write(`${line}\n`);
      process.stderr.write(`${failureLine(err)}\n`);
      process.exitCode = 1;
      return;
    }
    await this.#cleanupStep();
    this.#detach();
    this.out.line(`done in ${seconds(performance.now() - this.startedAt)}`);
  }

  async #build(): Promise<Mesh> {
    return this.out.step('building host-1 and host-2, their function namespaces, a CA and one certificate per host', async () => {
      this.#creating = Mesh.create({ hosts: 2, functionsPerHost: 2, prefix: this.prefix });
      try {
        return await this.#creating;
      } catch (err) {
        if (err instanceof TopologyError) throw new NamespaceError(err);
        throw err;
      }
    });
  }

  /** --keep: print where things are, then wait; Ctrl-C or SIGTERM goes through #interrupt. */
  async #keep(steps: DemoSteps): Promise<void> {
    const mesh = this.mesh!;
    for (const d of mesh.daemons.values()) {
      const file = fs.createWriteStream(path.join(mesh.dir, `${d.host.name}.log`), { flags: 'a' });
      file.write(d.log.map((l) => `${l}\n`).join(''));
      d.child.stdout?.on('data', (b: Buffer) => file.write(b));
      d.child.stderr?.on('data', (b: Buffer) => file.write(b));
    }
    this.out.line();
    for (const line of steps.keepHints()) this.out.line(line);
    this.out.line();
    this.out.line('everything stays up until you press Ctrl-C (or send SIGTERM); then it is all removed.');
    // The children keep the process alive too, but not if they all die.
    setInterval(() => undefined, 1 << 30);
    return new Promise<void>(() => undefined);
  }

  async #cleanupStep(): Promise<void> {
    await this.out.step('removing namespaces, daemons and files', () => this.#cleanupOnce());
  }

  /** Idempotent: the normal end, a failure and a signal may all ask for it. */
  #cleanupOnce(): Promise<void> {
    this.#cleanup ??= (async () => {
      const mesh = this.mesh ?? (await settled(this.#creating, CREATE_SETTLE_MS));
      if (mesh) await killDaemons(mesh);
      await mesh?.destroy();
      // A Mesh.create cut short by a signal may leave what it made so far; the prefix finds it.
      await cleanupStale(this.prefix);
      for (const name of fs.readdirSync(os.tmpdir())) {
        if (name.startsWith(`qmesh-${this.prefix}-`)) fs.rmSync(path.join(os.tmpdir(), name), { recursive: true, force: true });
      }
    })();
    return this.#cleanup;
  }

  async #interrupt(signal: 'SIGINT' | 'SIGTERM'): Promise<void> {
    if (this.#interrupted) return; // A second Ctrl-C: the first one's cleanup is already running.
    this.#interrupted = true;
    this.out.mute();
    const out = new DemoOutput();
    out.line(`${signal}: stopping`);
    try {
      await out.step('removing namespaces, daemons and files', () => this.#cleanupOnce());
    } finally {
      process.exit(SIGNAL_EXIT[signal]);
    }
  }

  #detach(): void {
    process.removeListener('SIGINT', this.#onSignal);
    process.removeListener('SIGTERM', this.#onSignal);
  }

  /** What each daemon said that may explain a failure: its warnings, errors and CLI failure lines, else its last lines. */
  #logTails(): string[] {
    const lines: string[] = [];
    for (const d of this.mesh?.daemons.values() ?? []) {
      const telling = d.log.filter((l) => /^qmesh: |"level":"(warn|error|fatal)"/.test(l));
      const shown = (telling.length > 0 ? telling : d.log).slice(-LOG_TAIL_LINES);
      if (shown.length === 0) continue;
      lines.push(`qmesh's log on ${d.host.name}${telling.length > 0 ? ' (warnings and errors)' : ''}:`);
      for (const l of shown) lines.push(`  ${l}`);
    }
    return lines;
  }
}

/** Mesh.create failed to make namespaces: the reason the user needs is "can't create namespaces". */
class NamespaceError extends Error {
  constructor(readonly topology: TopologyError) {
    super(topology.message, { cause: topology });
  }
}

/** The one line that ends a failed demo, in the CLI's "qmesh: <CODE>: <reason>" form. */
function failureLine(err: unknown): string {
  if (err instanceof NamespaceError) {
    return `qmesh: ${err.topology.code}: cannot create network namespaces (${oneLine(err.message)})`;
  }
  const code = (err as { code?: unknown })?.code;
  const label = typeof code === 'string' && code.startsWith('QMESH_ERR_') ? code : 'demo failed';
  // Only the first line: Mesh appends daemon log lines to its messages, and #logTails printed those.
  const message = ((err as Error)?.message ?? String(err)).split('\n')[0] ?? '';
  return `qmesh: ${label}: ${message.trim()}`;
}

/**
 * SIGKILLs the daemons and forgets them, so mesh.destroy() has none left to stop:
 * Mesh.stopDaemon races each exit against a 3 s timer it never clears, which
 * would hold the process open for 3 s after the demo is done.
 */
async function killDaemons(mesh: Mesh): Promise<void> {
  await Promise.all(
    [...mesh.daemons.values()].map(async (d) => {
      mesh.daemons.delete(d.host.name);
      d.child.kill('SIGKILL');
      await d.exited;
    }),
  );
}

async function settled<T>(p: Promise<T> | undefined, ms: number): Promise<T | undefined> {
  if (!p) return undefined;
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<undefined>((r) => (timer = setTimeout(() => r(undefined), ms)));
  try {
    return await Promise.race([p.catch(() => undefined), timeout]);
  } finally {
    clearTimeout(timer);
  }
}
