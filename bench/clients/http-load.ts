// Scenario 4: keep-alive HTTP/1.1 GETs at a fixed rate (wrk2's method). Each
// request has a scheduled start time. Two latencies are kept: from the moment
// the request is handed to the HTTP agent (it still waits there while every
// connection is busy, so a stalled transport delays the requests behind it),
// and wrk2's from the scheduled time, which also counts this process's own
// timer lag (Node's timers tick in whole milliseconds, up to ~1 ms late when
// idle and far more on a busy machine), reported separately as scheduleLag.
import http from 'node:http';
import type { Target } from './servers.js';

/** The schedule is checked this often; requests due in between leave together. */
const TICK_MS = 1;

export interface HttpRateResult {
  sent: number;
  completed: number;
  errors: number;
  firstError: string | null;
  /** ms from handing the request to the agent to the end of the response. */
  latencies: number[];
  /** ms from the scheduled start to the end of the response (wrk2's corrected latency). */
  fromSchedule: number[];
  /** ms each request left after its scheduled time (this client's own timer lag). */
  scheduleLag: number[];
  achievedRate: number;
}

export async function httpRate(a: { target: Target; rate: number; durationMs: number; connections: number; warmupMs?: number }): Promise<HttpRateResult> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: a.connections, maxFreeSockets: a.connections });
  const out: HttpRateResult = { sent: 0, completed: 0, errors: 0, firstError: null, latencies: [], fromSchedule: [], scheduleLag: [], achievedRate: 0 };
  const intervalMs = 1000 / a.rate;
  const warmupMs = a.warmupMs ?? 500;
  const pending = new Set<Promise<void>>();
  const one = (scheduled: number, record: boolean): Promise<void> =>
    new Promise<void>((resolve) => {
      const sentAt = performance.now();
      if (record) out.scheduleLag.push(sentAt - scheduled);
      const req = http.get({ host: a.target.host, port: a.target.port, path: '/', agent }, (res) => {
        res.resume();
        res.on('end', () => {
          if (record) {
            const now = performance.now();
            out.completed++;
            out.latencies.push(now - sentAt);
            out.fromSchedule.push(now - scheduled);
          }
          resolve();
        });
      });
      req.setNoDelay(true);
      req.setTimeout(5_000, () => req.destroy(new Error('timeout')));
      req.on('error', (err) => {
        if (record) {
          out.errors++;
          out.firstError ??= err.message;
        }
        resolve();
      });
    });
  const start = performance.now();
  const measureFrom = start + warmupMs;
  const end = measureFrom + a.durationMs;
  let next = start;
  await new Promise<void>((done) => {
    const tick = (): void => {
      const now = performance.now();
      while (next <= now && next < end) {
        const record = next >= measureFrom;
        if (record) out.sent++;
        const p = one(next, record);
        pending.add(p);
        void p.then(() => pending.delete(p));
        next += intervalMs;
      }
      if (next >= end) return done();
      setTimeout(tick, TICK_MS);
    };
    tick();
  });
  await Promise.race([Promise.all(pending), new Promise((r) => setTimeout(r, 6_000))]);
  out.achievedRate = out.completed / (a.durationMs / 1000);
  agent.destroy();
  return out;
}
