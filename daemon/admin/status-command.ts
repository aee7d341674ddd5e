// `qmesh status --config FILE [--json]`: reads listen.admin from the config,
// GETs /status from the running daemon and prints status-table.ts's table (or
// the JSON as is). An unreachable daemon is a one-line failure, exit 1.
import http from 'node:http';
import { loadConfig } from '../config/load.js';
import { ErrorCodes, QmeshError } from '../errors.js';
import { renderStatus, type StatusDocument } from './status-table.js';

/** How long `qmesh status` waits for the admin listener: it answers from memory at once. */
const ADMIN_TIMEOUT_MS = 3_000;
/** Code on the one stderr line when the daemon does not answer. */
export const ADMIN_UNREACHABLE = ErrorCodes.ADMIN_UNREACHABLE;

export class AdminUnreachableError extends QmeshError {
  constructor(message: string) {
    super(ErrorCodes.ADMIN_UNREACHABLE, message);
  }
}

/** A wildcard listen address is reached on loopback. */
function dialHost(host: string): string {
  if (host === '0.0.0.0') return '127.0.0.1';
  if (host === '::') return '::1';
  return host;
}

export function fetchAdmin(host: string, port: number, urlPath: string, timeoutMs = ADMIN_TIMEOUT_MS): Promise<{ status: number; body: string }> {
  const where = `${host.includes(':') ? `[${host}]` : host}:${port}`;
  return new Promise((resolve, reject) => {
    const req = http.get({ host: dialHost(host), port, path: urlPath, timeout: timeoutMs, headers: { accept: 'application/json' } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', (err) => reject(new AdminUnreachableError(`admin listener ${where}: ${err.message}`)));
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on('error', (err: NodeJS.ErrnoException) =>
      reject(new AdminUnreachableError(`qmesh is not reachable on its admin listener ${where} (${err.code ?? err.message}): is the daemon running with this config?`)),
    );
  });
}

export async function statusCommand(file: string, opts: { json: boolean }): Promise<void> {
  const config = loadConfig(file, process.env);
  const { host, port } = config.listen.admin;
  const r = await fetchAdmin(host, port, '/status');
  if (r.status !== 200) throw new AdminUnreachableError(`admin listener ${host}:${port} answered HTTP ${r.status} to GET /status`);
  let doc: StatusDocument;
  try {
    doc = JSON.parse(r.body) as StatusDocument;
  } catch {
    throw new AdminUnreachableError(`admin listener ${host}:${port} answered GET /status with something other than JSON: is another program on that port?`);
  }
  process.stdout.write(opts.json ? JSON.stringify(doc, null, 2) + '\n' : renderStatus(doc));
}
