// Runs one command (argv, never a shell string) with a hard timeout and returns
// its output and exit status; topology.ts builds and removes namespaces with it.
import { execFile, execFileSync, type ExecFileException } from 'node:child_process';
import { TopologyError } from './topology-plan.js';

/** `ip` finishes in milliseconds; 10 s only trips when netlink or a child is wedged. */
export const COMMAND_TIMEOUT_MS = 10_000;
/** Echo tests print a few hundred KB; anything past this is a runaway command. */
const MAX_OUTPUT_BYTES = 64 * 1024 * 1024;

export interface ExecOptions {
  /** Killed with SIGKILL after this long. Default COMMAND_TIMEOUT_MS. */
  timeoutMs?: number;
  /** Written to stdin, which is then closed (stdin is always closed). */
  input?: string | Buffer;
  env?: NodeJS.ProcessEnv;
}

export interface ExecResult {
  stdout: string;
  stderr: string;
  /** Exit status; null when the process was killed by a signal or never started. */
  code: number | null;
  /** True when the timeout killed it. */
  timedOut: boolean;
}

export function runCommand(file: string, args: readonly string[], opts: ExecOptions = {}): Promise<ExecResult> {
  const timeoutMs = opts.timeoutMs ?? COMMAND_TIMEOUT_MS;
  return new Promise((resolve) => {
    const child = execFile(
      file,
      args,
      { timeout: timeoutMs, killSignal: 'SIGKILL', maxBuffer: MAX_OUTPUT_BYTES, encoding: 'utf8', env: opts.env },
      (err: ExecFileException | null, stdout: string, stderr: string) => {
        if (!err) return resolve({ stdout, stderr, code: 0, timedOut: false });
        resolve({
          stdout,
          stderr: stderr || err.message,
          code: typeof err.code === 'number' ? err.code : null,
          timedOut: err.killed === true && err.signal === 'SIGKILL',
        });
      },
    );
    // A child that exits before reading stdin makes the write fail with EPIPE; its exit status tells the story.
    child.stdin?.on('error', () => undefined);
    child.stdin?.end(opts.input);
  });
}

/** runCommand, but a non-zero exit or timeout becomes a TopologyError naming the command and its stderr. */
export async function runOrThrow(
  file: string,
  args: readonly string[],
  what: string,
  opts: ExecOptions = {},
): Promise<ExecResult> {
  const res = await runCommand(file, args, opts);
  if (res.code !== 0) {
    const why = res.timedOut ? `timed out after ${opts.timeoutMs ?? COMMAND_TIMEOUT_MS} ms` : `exit ${res.code}`;
    throw new TopologyError(`${what} failed (${why}): ${file} ${args.join(' ')}: ${res.stderr.trim()}${hint(res.stderr)}`);
  }
  return res;
}

function hint(stderr: string): string {
  if (/Operation not permitted|Permission denied/i.test(stderr)) return ' (run as root: namespaces need CAP_SYS_ADMIN and CAP_NET_ADMIN)';
  if (/ENOENT/.test(stderr)) return ' (install iproute2: the `ip` command is missing)';
  if (/File exists/.test(stderr)) return ' (a namespace with this prefix is left over: call cleanupStale(prefix) or pick a new prefix)';
  return '';
}

/** Synchronous best-effort variant for process 'exit' and signal handlers; never throws. */
export function runSyncQuiet(file: string, args: readonly string[], input?: string): string {
  try {
    return execFileSync(file, args, {
      input,
      timeout: COMMAND_TIMEOUT_MS,
      killSignal: 'SIGKILL',
      encoding: 'utf8',
      stdio: ['pipe', 'pipe', 'ignore'],
    });
  } catch {
    return '';
  }
}
