// The bench's processes inside namespaces (clients/agent.ts, emulator/link-emulator.ts)
// take one JSON command per stdin line and answer one JSON line on stdout:
//   -> {"id":3,"cmd":"connect-echo","target":{...},"count":100}
//   <- {"id":3,"ok":true,"result":{...}}    or    {"id":3,"ok":false,"error":"..."}
// serveCommands() is the child's half; CommandChild (child-process.ts) the parent's.
import readline from 'node:readline';

export type Handler = (args: Record<string, any>) => Promise<unknown> | unknown;

export interface Request {
  id: number;
  cmd: string;
  [key: string]: unknown;
}

export interface Reply {
  id: number;
  ok: boolean;
  result?: unknown;
  error?: string;
}

/** Parses one reply line; returns null for lines that are not replies (stray output). */
export function parseReply(line: string): Reply | null {
  if (!line.startsWith('{')) return null;
  try {
    const v = JSON.parse(line) as Partial<Reply>;
    return typeof v.id === 'number' && typeof v.ok === 'boolean' ? (v as Reply) : null;
  } catch {
    return null;
  }
}

/**
 * Child side: prints {"ready":true}, then runs commands as they arrive (several
 * may run at once) and exits when stdin closes, so a dead parent never leaves
 * a measuring process behind.
 */
export function serveCommands(handlers: Record<string, Handler>, onClose: () => void = () => process.exit(0)): void {
  const write = (obj: unknown): void => {
    process.stdout.write(JSON.stringify(obj) + '\n');
  };
  const rl = readline.createInterface({ input: process.stdin });
  rl.on('line', (line) => {
    let req: Request;
    try {
      req = JSON.parse(line) as Request;
    } catch {
      write({ id: -1, ok: false, error: `not JSON: ${line.slice(0, 80)}` });
      return;
    }
    const handler = handlers[req.cmd];
    if (!handler) {
      write({ id: req.id, ok: false, error: `unknown command ${req.cmd}; known: ${Object.keys(handlers).join(', ')}` });
      return;
    }
    Promise.resolve()
      .then(() => handler(req))
      .then(
        (result) => write({ id: req.id, ok: true, result }),
        (err: unknown) => write({ id: req.id, ok: false, error: (err as Error)?.stack ?? String(err) }),
      );
  });
  rl.on('close', onClose);
  write({ ready: true });
}
