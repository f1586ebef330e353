import os from 'node:os';

/**
 * ModelArts' service monitor (SPEC §10, `GET /v1/services/{id}/monitor`): calls per minute
 * (Cloud Eye's successfully_called_times, failed_called_times, total_called_times) for the last
 * hour, next to the gateway process's CPU and memory use per minute. In-process ONNX versions run
 * on the gateway's own worker threads, so the process's use is theirs too.
 */

export const MINUTES = 60;

/** What the monitor counts as a successful call: ModelArts counts the rest as failed. */
export const isSuccess = (code: number): boolean => code >= 200 && code < 300;
const MINUTE_MS = 60_000;

/** Calls per minute over the last hour, in a ring indexed by minute: one add is two array writes. */
export class MinuteCounts {
  private readonly minute = new Float64Array(MINUTES).fill(-1);
  private readonly ok = new Float64Array(MINUTES);
  private readonly failed = new Float64Array(MINUTES);

  add(success: boolean, now = Date.now()): void {
    const m = Math.floor(now / MINUTE_MS);
    const slot = m % MINUTES;
    if (this.minute[slot] !== m) {
      this.minute[slot] = m;
      this.ok[slot] = 0;
      this.failed[slot] = 0;
    }
    if (success) this.ok[slot]!++;
    else this.failed[slot]!++;
  }

  /** Successful and failed calls in minute `m` (minutes since the epoch); 0 for one out of the ring. */
  at(m: number): { ok: number; failed: number } {
    const slot = m % MINUTES;
    return this.minute[slot] === m ? { ok: this.ok[slot]!, failed: this.failed[slot]! } : { ok: 0, failed: 0 };
  }
}

interface ProcessSample { minute: number; cpuCores: number; rssBytes: number }

/** The gateway process's CPU (cores busy) and resident memory, sampled once a minute. */
export class ProcessUsage {
  private readonly samples: ProcessSample[] = [];
  private last = { at: performance.now(), cpu: process.cpuUsage() };
  private timer: NodeJS.Timeout;

  constructor() {
    this.timer = this.arm();
  }

  /**
   * Samples are taken on the minute, so each covers the calendar minute it is filed under; the
   * timer is set afresh each time, as an interval drifts and a stalled loop would shift it.
   */
  private arm(): NodeJS.Timeout {
    return setTimeout(() => {
      if (this.samples.push(this.sample()) > MINUTES) this.samples.shift();
      this.timer = this.arm();
    }, MINUTE_MS - (Date.now() % MINUTE_MS) + 5).unref();
  }

  /** Use since the previous sample, filed under the minute that just ended. */
  private sample(): ProcessSample {
    const use = this.now();
    this.last = { at: performance.now(), cpu: process.cpuUsage() };
    return { minute: Math.floor((Date.now() - MINUTE_MS / 2) / MINUTE_MS), ...use };
  }

  /** The sample of minute `m`, if one was taken. */
  at(m: number): ProcessSample | undefined {
    return this.samples.find((s) => s.minute === m);
  }

  /** Use since the last sample (or the start), without filing it. */
  now(): { cpuCores: number; rssBytes: number } {
    const elapsed = Math.max(1, performance.now() - this.last.at);
    const cpu = process.cpuUsage(this.last.cpu);
    return { cpuCores: (cpu.user + cpu.system) / 1000 / elapsed, rssBytes: process.memoryUsage.rss() };
  }

  close(): void {
    clearTimeout(this.timer);
  }
}

/** One service version as the monitor reports it (ModelArts' real-time `monitors` entry). */
export interface VersionMonitor {
  model_id: string;
  model_name: string;
  model_version: string;
  invocation_times: number;
  failed_times: number;
  cpu_core_usage: number;
  cpu_core_total: number;
  cpu_memory_usage: number;
  cpu_memory_total: number;
  gpu_usage: number;
  gpu_total: number;
  gpu_memory_usage: number;
  gpu_memory_total: number;
  model_running_instance_count: number;
  model_instance_count: number;
}

/** One minute of Cloud Eye's metric ids; null where nothing was measured for that minute. */
export interface MinutePoint {
  time: string;
  successfully_called_times: number;
  failed_called_times: number;
  total_called_times: number;
  cpu_usage: number | null;
  mem_usage: number | null;
  gpu_util: number | null;
}

export interface VersionCalls {
  model_id: string;
  model_name: string;
  model_version: string;
  total: number;
  failed: number;
  minutes: MinuteCounts;
  running: number;
  instances: number;
}

const MB = 1024 * 1024;
const round = (v: number, places: number): number => Math.round(v * 10 ** places) / 10 ** places;

/** The monitor's body for one service's live versions. */
export function monitorView(service: { id: string; name: string }, versions: VersionCalls[], usage: ProcessUsage, now = Date.now()) {
  const cores = os.availableParallelism();
  const memTotal = os.totalmem();
  const current = usage.now();
  const thisMinute = Math.floor(now / MINUTE_MS);
  const metrics: MinutePoint[] = [];
  for (let m = thisMinute - MINUTES + 1; m <= thisMinute; m++) {
    let ok = 0, failed = 0;
    for (const v of versions) {
      const c = v.minutes.at(m);
      ok += c.ok;
      failed += c.failed;
    }
    const sample = m === thisMinute ? current : usage.at(m);
    metrics.push({
      time: new Date(m * MINUTE_MS).toISOString(),
      successfully_called_times: ok,
      failed_called_times: failed,
      total_called_times: ok + failed,
      cpu_usage: sample ? round((sample.cpuCores / cores) * 100, 2) : null,
      mem_usage: sample ? round((sample.rssBytes / memTotal) * 100, 2) : null,
      gpu_util: null,
    });
  }
  const previous = metrics[metrics.length - 2]!;
  return {
    service_id: service.id,
    service_name: service.name,
    service_running_instance_count: versions.reduce((a, v) => a + v.running, 0),
    service_instance_count: versions.reduce((a, v) => a + v.instances, 0),
    req_count_per_min: previous.total_called_times,
    monitors: versions.map((v): VersionMonitor => ({
      model_id: v.model_id,
      model_name: v.model_name,
      model_version: v.model_version,
      invocation_times: v.total,
      failed_times: v.failed,
      cpu_core_usage: round(current.cpuCores, 3),
      cpu_core_total: cores,
      cpu_memory_usage: Math.round(current.rssBytes / MB),
      cpu_memory_total: Math.round(memTotal / MB),
      gpu_usage: 0,
      gpu_total: 0,
      gpu_memory_usage: 0,
      gpu_memory_total: 0,
      model_running_instance_count: v.running,
      model_instance_count: v.instances,
    })),
    metrics,
  };
}
