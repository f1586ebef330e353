// CPU time per request, read from /proc while a scenario is measured: the server's (all its
// threads, and its busiest thread alone), the proxy upstream's, and the load generator's. The
// machine's cores are shared by all three, so these say how far threads alone could take a
// server: at its present work per request, with every core busy, it cannot go faster than
// cores ÷ (its CPU + the load generator's + the upstream's) per request. Linux only; elsewhere
// nothing is read and the tables show '-'.
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import os from 'node:os';
import { processTree } from '../src/runtime/image/process-tree.js';

/** Clock ticks per second of /proc's CPU times (USER_HZ, 100 on every Linux we run on). */
const HZ = ((): number => {
  const r = spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' });
  const n = Number(r.stdout?.trim());
  return Number.isInteger(n) && n > 0 ? n : 100;
})();

/** user+system ticks from a /proc stat line; `children`: the reaped children's (cutime+cstime). */
function statTicks(path: string, children = false): number | undefined {
  let text: string;
  try {
    text = readFileSync(path, 'latin1');
  } catch {
    return undefined;
  }
  // The command name (field 2) may hold spaces and parentheses: fields are counted after its ')'.
  const f = text.slice(text.lastIndexOf(')') + 2).split(' ');
  // After ')': state is index 0, so utime (field 14) is 11, stime 12, cutime 13, cstime 14.
  return children ? Number(f[13]) + Number(f[14]) : Number(f[11]) + Number(f[12]);
}

/** Ticks of each thread of a process, by thread id. */
function threadTicks(pid: number): Map<string, number> {
  const out = new Map<string, number>();
  let tids: string[];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return out;
  }
  for (const tid of tids) {
    const t = statTicks(`/proc/${pid}/task/${tid}/stat`);
    if (t !== undefined) out.set(tid, t);
  }
  return out;
}

interface ProcessSample {
  total: number | undefined;
  threads: Map<string, number>;
}

/**
 * CPU of a process tree (`tree[0]` and its descendants, as found when the window opened: nginx's
 * workers, a gateway's image instances): the sum, and each thread's by thread id (unique machine-wide).
 */
function sampleProcess(tree: number[]): ProcessSample {
  if (statTicks(`/proc/${tree[0]}/stat`) === undefined) return { total: undefined, threads: new Map() };
  const threads = new Map<string, number>();
  let total = 0;
  for (const p of tree) {
    const t = statTicks(`/proc/${p}/stat`);
    if (t === undefined) continue;
    total += t;
    for (const [tid, ticks] of threadTicks(p)) threads.set(tid, ticks);
  }
  return { total, threads };
}

/** CPU microseconds per request of one measured window; undefined where it could not be read. */
export interface CpuPerRequest {
  /** the server process and its descendants, every thread (a process that exits inside the window is not counted) */
  server?: number;
  /** the server's busiest thread (its event loop, in practice) */
  serverThread?: number;
  /** a proxy scenario's upstream process */
  upstream?: number;
  /** the load generator (wrk) */
  load?: number;
}

/** Samples taken when the measured window opens; `finish` turns them into µs per request. */
export class CpuWindow {
  private readonly server: ProcessSample;
  private readonly upstream: ProcessSample | null;
  private readonly children: number | undefined;

  private constructor(private readonly serverTree: number[], private readonly upstreamTree: number[] | null) {
    this.server = sampleProcess(serverTree);
    this.upstream = upstreamTree === null ? null : sampleProcess(upstreamTree);
    this.children = statTicks('/proc/self/stat', true);
  }

  /**
   * `serverPid` and `upstreamPid` run through the window; the load generator is a child of this
   * process that exits inside it, so its time is read from this process' reaped-children total.
   */
  static async open(serverPid: number, upstreamPid: number | null): Promise<CpuWindow> {
    return new CpuWindow(await processTree(serverPid), upstreamPid === null ? null : await processTree(upstreamPid));
  }

  finish(requests: number): CpuPerRequest {
    if (!(requests > 0) || this.server.total === undefined) return {};
    const us = (ticks: number): number => (ticks / HZ / requests) * 1e6;
    const server = sampleProcess(this.serverTree);
    const out: CpuPerRequest = {};
    if (server.total !== undefined) out.server = us(server.total - this.server.total);
    let busiest = 0;
    for (const [tid, t] of server.threads) busiest = Math.max(busiest, t - (this.server.threads.get(tid) ?? 0));
    out.serverThread = us(busiest);
    if (this.upstream && this.upstreamTree !== null) {
      const now = sampleProcess(this.upstreamTree).total;
      if (now !== undefined && this.upstream.total !== undefined) out.upstream = us(now - this.upstream.total);
    }
    const children = statTicks('/proc/self/stat', true);
    if (children !== undefined && this.children !== undefined) out.load = us(children - this.children);
    return out;
  }
}

/** The whole CPU a request cost across the processes measured, or undefined without the server's and the load's. */
export function totalPerRequest(c: CpuPerRequest | undefined): number | undefined {
  if (!c || c.server === undefined || c.load === undefined) return undefined;
  return c.server + c.load + (c.upstream ?? 0);
}

/** Requests/s the machine's cores could serve at `totalUs` CPU microseconds per request. */
export function cpuBoundRate(totalUs: number): number {
  return (os.availableParallelism() / totalUs) * 1e6;
}
