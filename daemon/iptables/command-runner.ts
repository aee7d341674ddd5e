// The one place iptables commands leave the process: argv in, exit code and
// output back, no shell. manager.ts and backend.ts run everything through a
// CommandRunner so unit tests can hand in a fake one.
import { execFile } from 'node:child_process';
import { ErrorCodes, QmeshError } from '../errors.js';

export interface CommandResult {
  /** Exit status; 127 when the program could not be started, -1 when it timed out or was killed. */
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

export interface CommandRunner {
  /** Runs argv[0] with argv[1..], `input` on its stdin; resolves with the result even when the exit code is non-zero. */
  run(argv: readonly string[], input?: string): Promise<CommandResult>;
}

/** A bounded command never hangs the daemon's start-up; iptables itself waits at most LOCK_WAIT_SECONDS. */
const DEFAULT_TIMEOUT_MS = 30_000;

/** Runs commands with child_process.execFile, optionally behind a prefix such as ['ip', 'netns', 'exec', 'ns1']. */
export class ExecFileRunner implements CommandRunner {
  constructor(
    private readonly prefix: readonly string[] = [],
    private readonly timeoutMs: number = DEFAULT_TIMEOUT_MS,
  ) {}

  run(argv: readonly string[], input?: string): Promise<CommandResult> {
    const full = [...this.prefix, ...argv];
    const [file, ...args] = full;
    if (file === undefined) return Promise.reject(new Error('ExecFileRunner.run: empty argv'));
    return new Promise((resolve) => {
      const child = execFile(file, args, { timeout: this.timeoutMs, maxBuffer: 64 * 1024 * 1024, env: { ...process.env, LC_ALL: 'C' } }, (err, stdout, stderr) => {
        if (!err) return resolve({ code: 0, stdout, stderr });
        const e = err as NodeJS.ErrnoException & { code?: number | string; killed?: boolean };
        if (e.code === 'ENOENT') return resolve({ code: 127, stdout, stderr: `${file}: command not found` });
        if (typeof e.code === 'number') return resolve({ code: e.code, stdout, stderr });
        const why = e.killed ? `killed after ${this.timeoutMs} ms` : e.message;
        resolve({ code: -1, stdout, stderr: `${stderr}${stderr ? '\n' : ''}${why}` });
      });
      // A program that exits before reading all of its input (a bad line) must not crash the daemon with EPIPE.
      child.stdin?.on('error', () => undefined);
      child.stdin?.end(input ?? '');
    });
  }
}

/** Quotes one argument for sh so printed commands paste exactly; plain words stay bare. */
export function shellQuote(arg: string): string {
  if (/^[A-Za-z0-9_.,:/=+@%-]+$/.test(arg)) return arg;
  return `'${arg.replace(/'/g, `'\\''`)}'`;
}

export const formatCommand = (argv: readonly string[]): string => argv.map(shellQuote).join(' ');

/** The likely fix for a failed iptables command, judged from its stderr. */
export function likelyFix(result: CommandResult): string {
  const err = result.stderr;
  if (result.code === 127 || /command not found|No such file or directory/.test(err)) {
    return 'install iptables (Debian: apt-get install iptables) or choose the backend explicitly';
  }
  if (/Permission denied|must be root|Operation not permitted/i.test(err)) return 'run as root or with CAP_NET_ADMIN';
  if (/xtables lock|Resource temporarily unavailable/i.test(err)) {
    return 'another program holds the xtables lock; retry, or find the process that keeps it';
  }
  if (/Couldn't load|No chain\/target\/match|Extension .* revision|Protocol not supported/i.test(err)) {
    return 'the kernel lacks a netfilter module (nat REDIRECT, conntrack, comment or mark); load it with modprobe or use a kernel that has it';
  }
  if (/Bad rule|does a matching rule exist|Chain '.*' does not exist/i.test(err)) {
    return 'the rules changed while qmesh was writing them (another program edits iptables); apply again';
  }
  if (/incompatible/i.test(err)) return 'the table holds nftables rules iptables cannot read; inspect with `nft list ruleset`';
  if (result.code === -1) return 'the command did not finish; check the xtables lock and system load';
  return 'run as root or with CAP_NET_ADMIN, and check that the iptables backend matches the host';
}

/** Throws QmeshError(QMESH_ERR_IPTABLES) naming the command, its stderr and a likely fix. */
export function commandFailed(argv: readonly string[], result: CommandResult): never {
  // One line, as every qmesh error is: iptables-restore reports over several.
  const stderr = result.stderr.trim().replace(/\s*\n\s*/g, ' | ') || '(no output)';
  throw new QmeshError(
    ErrorCodes.IPTABLES,
    `\`${formatCommand(argv)}\` failed (exit ${result.code}): ${stderr}; likely fix: ${likelyFix(result)}`,
  );
}

/** Runs argv and returns stdout, or throws commandFailed. */
export async function runOrThrow(runner: CommandRunner, argv: readonly string[]): Promise<string> {
  const result = await runner.run(argv);
  if (result.code !== 0) commandFailed(argv, result);
  return result.stdout;
}
