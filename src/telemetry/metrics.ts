import client from 'prom-client';
import { isSuccess, MinuteCounts, ProcessUsage } from './monitor.js';

/**
 * Prometheus metrics (SPEC §10). Request-path metrics are plain counters and bucket arrays
 * written without label lookups and rendered at scrape time; prom-client supplies the process
 * metrics (CPU, memory, event loop, GC). Label-bound prom-client children hash their labels on
 * every call, which showed in the request-path profile.
 */

const LATENCY_BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 40];
const BATCH_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024];

export class Histogram {
  readonly counts: Float64Array;
  sum = 0;
  count = 0;

  constructor(readonly bounds: readonly number[]) {
    this.counts = new Float64Array(bounds.length);
  }

  observe(v: number): void {
    const b = this.bounds;
    let i = 0;
    while (i < b.length && v > b[i]!) i++;
    if (i < b.length) this.counts[i]!++;
    this.sum += v;
    this.count++;
  }

  render(name: string, labels: string, out: string[]): void {
    let cumulative = 0;
    for (let i = 0; i < this.bounds.length; i++) {
      cumulative += this.counts[i]!;
      out.push(`${name}_bucket{${labels},le="${this.bounds[i]}"} ${cumulative}`);
    }
    out.push(`${name}_bucket{${labels},le="+Inf"} ${this.count}`, `${name}_sum{${labels}} ${this.sum}`, `${name}_count{${labels}} ${this.count}`);
  }
}

const escapeLabel = (v: string): string => v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');

/** What one service version records on the request path. */
export class VersionMetrics {
  readonly byCode = new Map<number, number>();
  readonly duration = new Histogram(LATENCY_BUCKETS);
  readonly queueTime = new Histogram(LATENCY_BUCKETS);
  readonly runTime = new Histogram(LATENCY_BUCKETS);
  readonly batchSize = new Histogram(BATCH_BUCKETS);
  /** Calls per minute for the service monitor: a 2xx is a successful call, anything else failed. */
  readonly minutes = new MinuteCounts();
  readonly labels: string;

  constructor(readonly service: string, readonly version: string, readonly state: () => { depth: number; running: number }) {
    this.labels = `service="${escapeLabel(service)}",version="${escapeLabel(version)}"`;
  }

  request(code: number, seconds: number): void {
    this.byCode.set(code, (this.byCode.get(code) ?? 0) + 1);
    this.duration.observe(seconds);
    this.minutes.add(isSuccess(code));
  }

  served(queueNs: number, runNs: number): void {
    this.queueTime.observe(queueNs / 1e9);
    this.runTime.observe(runNs / 1e9);
  }

  batch(rows: number): void {
    this.batchSize.observe(rows);
  }
}

interface Family { name: string; help: string; type: 'counter' | 'gauge' | 'histogram'; render(v: VersionMetrics, out: string[]): void }

const FAMILIES: Family[] = [
  {
    name: 'infergate_requests_total', help: 'Inference requests by service, version and status code', type: 'counter',
    render: (v, out) => { for (const [code, n] of v.byCode) out.push(`infergate_requests_total{${v.labels},code="${code}"} ${n}`); },
  },
  { name: 'infergate_request_duration_seconds', help: 'Time from request received to reply written', type: 'histogram', render: (v, out) => v.duration.render('infergate_request_duration_seconds', v.labels, out) },
  { name: 'infergate_queue_duration_seconds', help: 'Time a request waited in the batcher queue', type: 'histogram', render: (v, out) => v.queueTime.render('infergate_queue_duration_seconds', v.labels, out) },
  { name: 'infergate_run_duration_seconds', help: 'Model run time of the batch that served a request', type: 'histogram', render: (v, out) => v.runTime.render('infergate_run_duration_seconds', v.labels, out) },
  { name: 'infergate_batch_size', help: 'Rows per model run', type: 'histogram', render: (v, out) => v.batchSize.render('infergate_batch_size', v.labels, out) },
  { name: 'infergate_queue_depth', help: 'Requests waiting: in the batcher queue (ONNX), or for room on an instance under image.max_concurrency (Image)', type: 'gauge', render: (v, out) => out.push(`infergate_queue_depth{${v.labels}} ${v.state().depth}`) },
  { name: 'infergate_batches_running', help: 'Model runs in progress', type: 'gauge', render: (v, out) => out.push(`infergate_batches_running{${v.labels}} ${v.state().running}`) },
];

export class Metrics {
  private readonly process = new client.Registry();
  private readonly versions = new Map<string, VersionMetrics>();
  /** Requests refused before a service version was chosen (unknown service, too large, …). */
  private readonly unroutedByCode = new Map<number, number>();
  private readonly gauges: { name: string; help: string; read: () => number }[] = [];
  readonly contentType = client.Registry.PROMETHEUS_CONTENT_TYPE;
  /** The process's CPU and memory per minute, for the service monitor. */
  readonly usage = new ProcessUsage();

  constructor() {
    client.collectDefaultMetrics({ register: this.process, prefix: 'infergate_' });
  }

  forVersion(service: string, version: string, state: () => { depth: number; running: number }): VersionMetrics {
    const m = new VersionMetrics(service, version, state);
    this.versions.set(`${service}\u0000${version}`, m);
    return m;
  }

  /** Drops a retired version's series, unless a newer deployment of it registered since. */
  forget(m: VersionMetrics): void {
    const key = `${m.service}\u0000${m.version}`;
    if (this.versions.get(key) === m) this.versions.delete(key);
  }

  /** A gauge read at scrape time (connections, …). */
  gauge(name: string, help: string, read: () => number): void {
    this.gauges.push({ name, help, read });
  }

  unrouted(code: number): void {
    this.unroutedByCode.set(code, (this.unroutedByCode.get(code) ?? 0) + 1);
  }

  async render(): Promise<string> {
    const out: string[] = [];
    for (const f of FAMILIES) {
      out.push(`# HELP ${f.name} ${f.help}`, `# TYPE ${f.name} ${f.type}`);
      for (const v of this.versions.values()) f.render(v, out);
      if (f.name === 'infergate_requests_total') {
        for (const [code, n] of this.unroutedByCode) out.push(`infergate_requests_total{service="",version="",code="${code}"} ${n}`);
      }
    }
    for (const g of this.gauges) out.push(`# HELP ${g.name} ${g.help}`, `# TYPE ${g.name} gauge`, `${g.name} ${g.read()}`);
    return out.join('\n') + '\n' + (await this.process.metrics());
  }
}
