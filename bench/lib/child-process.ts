// Parent side of the line protocol (line-protocol.ts): starts a bench process
// inside a namespace through Topology.spawn (so topology teardown kills it),
// waits for its ready line and sends commands with a time limit each.
import type { ChildProcess } from 'node:child_process';
import readline from 'node:readline';
import type { Topology } from '../../daemon/demo/topology.js';
import { parseReply, type Reply } from './line-protocol.js';

/** Node starts, loads the script and prints ready in well under this, even on a busy machine. */
const READY_TIMEOUT_MS = 15_000;
const STDERR_TAIL_LINES = 20;

export class CommandChild {
  readonly stderrTail: string[] = [];
  #nextId = 1;
  readonly #pending = new Map<number, { resolve(r: Reply): void; reject(e: Error): void; timer: NodeJS.Timeout }>();
  #exited = false;

  private constructor(
    readonly label: string,
    readonly child: ChildProcess,
  ) {}

  /** Spawns argv in namespace ns and resolves once the child printed {"ready":true}. */
  static async start(topo: Topology, ns: string, argv: string[], label: string): Promise<CommandChild> {
    const child = topo.spawn(ns, argv, { stdio: ['pipe', 'pipe', 'pipe'] });
    const c = new CommandChild(label, child);
    child.stderr?.on('data', (b: Buffer) => {
      for (const line of b.toString().split('\n')) if (line) c.stderrTail.push(line);
      if (c.stderrTail.length > STDERR_TAIL_LINES) c.stderrTail.splice(0, c.stderrTail.length - STDERR_TAIL_LINES);
    });
    const ready = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${label}: not ready within ${READY_TIMEOUT_MS} ms; stderr: ${c.stderrTail.join(' | ')}`)), READY_TIMEOUT_MS);
      const rl = readline.createInterface({ input: child.stdout! });
      rl.on('line', (line) => {
        if (line === '{"ready":true}') {
          clearTimeout(timer);
          resolve();
          return;
        }
        const reply = parseReply(line);
        const p = reply ? c.#pending.get(reply.id) : undefined;
        if (reply && p) {
          c.#pending.delete(reply.id);
          clearTimeout(p.timer);
          p.resolve(reply);
        }
      });
      child.once('exit', (code, signal) => {
        c.#exited = true;
        clearTimeout(timer);
        const err = new Error(`${label} exited (${code ?? signal}); stderr: ${c.stderrTail.join(' | ')}`);
        reject(err);
        for (const p of c.#pending.values()) {
          clearTimeout(p.timer);
          p.reject(err);
        }
        c.#pending.clear();
      });
    });
    child.stdin?.on('error', () => undefined);
    await ready;
    return c;
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  /** Sends one command; rejects with the child's error text, or after timeoutMs. */
  async call<T = any>(cmd: string, args: Record<string, unknown> = {}, timeoutMs = 60_000): Promise<T> {
    if (this.#exited) throw new Error(`${this.label} has exited; stderr: ${this.stderrTail.join(' | ')}`);
    const id = this.#nextId++;
    const reply = await new Promise<Reply>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(new Error(`${this.label}: ${cmd} got no answer within ${timeoutMs} ms`));
      }, timeoutMs);
      this.#pending.set(id, { resolve, reject, timer });
      this.child.stdin!.write(JSON.stringify({ ...args, id, cmd }) + '\n');
    });
    if (!reply.ok) throw new Error(`${this.label}: ${cmd}: ${reply.error}`);
    return reply.result as T;
  }

  /** Closes stdin (the child exits by itself) and kills it if it is still there after graceMs. */
  async stop(graceMs = 2000): Promise<void> {
    if (this.#exited || this.child.exitCode !== null) return;
    const exited = new Promise<void>((r) => this.child.once('exit', () => r()));
    this.child.stdin?.end();
    const t = setTimeout(() => this.child.kill('SIGKILL'), graceMs);
    await exited;
    clearTimeout(t);
  }
}
