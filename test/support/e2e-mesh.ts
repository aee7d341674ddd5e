// Lifecycle of the Mesh an e2e file builds in beforeAll and removes in afterAll:
// bounded create/start, teardown that never throws and leaves no namespace
// behind, and the daemons' JSON logs as objects for assertions.
import { Mesh, type MeshOptions, type RunningDaemon } from '../../daemon/demo/mesh.js';
import { cleanupStale, type HostInfo } from '../../daemon/demo/topology.js';
import { waitFor, withTimeout } from './fn-net.js';

export { Mesh, type HostInfo, type RunningDaemon };

const CREATE_MS = 30_000;
const START_MS = 30_000;
const DESTROY_MS = 20_000;

/** Builds the mesh and (unless start is false) starts every daemon and waits for every tunnel. */
export async function startMesh(opts: MeshOptions = {}, start = true): Promise<Mesh> {
  const mesh = await withTimeout(Mesh.create({ logLevel: 'info', ...opts }), CREATE_MS, 'Mesh.create');
  if (!start) return mesh;
  try {
    await startDaemons(mesh);
  } catch (err) {
    await destroyMesh(mesh);
    throw err;
  }
  return mesh;
}

/** Starts every daemon and waits (bounded) for every tunnel; the error carries the daemons' last log lines. */
export async function startDaemons(mesh: Mesh): Promise<void> {
  try {
    await withTimeout(mesh.startAll(), START_MS, 'mesh.startAll');
  } catch (err) {
    const logs = [...mesh.daemons.values()].map((d) => `--- ${d.host.name}\n${d.log.slice(-20).join('\n')}`).join('\n');
    throw new Error(`${String(err)}\n${logs}`);
  }
}

/** For afterAll: kills the daemons, deletes the namespaces and files; never throws. */
export async function destroyMesh(mesh: Mesh | undefined): Promise<void> {
  if (!mesh) return;
  await withTimeout(mesh.destroy(), DESTROY_MS, 'mesh.destroy').catch(() => undefined);
  await cleanupStale(mesh.topo.prefix);
}

/** A daemon's log lines parsed (pino JSON; other lines kept as { msg }). */
export function logOf(d: RunningDaemon | undefined): any[] {
  return (d?.log ?? []).map((line) => {
    try {
      return JSON.parse(line);
    } catch {
      return { msg: line };
    }
  });
}

export function daemonOf(mesh: Mesh, host: HostInfo): RunningDaemon {
  const d = mesh.daemons.get(host.name);
  if (!d) throw new Error(`no daemon running on ${host.name}`);
  return d;
}

/** Waits until a log line of `d` matches `pred`; returns it. */
export function waitLog(d: RunningDaemon, pred: (entry: any) => boolean, ms: number, what: string): Promise<any> {
  return waitFor(() => logOf(d).find(pred), ms, `${d.host.name} log: ${what}`, 50);
}

/** The outbound tunnel state `host` reports for `peer` (or 'unreachable' if /status does not answer). */
export async function outboundState(mesh: Mesh, host: HostInfo, peer: HostInfo): Promise<string> {
  const status = await mesh.status(host).catch(() => null);
  const p = (status?.peers as any[] | undefined)?.find((x) => x.name === peer.name);
  return p?.outbound?.state ?? 'unreachable';
}
