import client from 'prom-client';

/**
 * Prometheus metrics (SPEC §10). The hot path holds pre-bound children per service version, so
 * recording a request does no label hashing.
 */
export class Metrics {
  readonly registry = new client.Registry();
  private readonly requests: client.Counter<'service' | 'version' | 'code'>;
  private readonly duration: client.Histogram<'service' | 'version'>;
  private readonly queueTime: client.Histogram<'service' | 'version'>;
  private readonly runTime: client.Histogram<'service' | 'version'>;
  private readonly batchSize: client.Histogram<'service' | 'version'>;
  private readonly gauges = new Map<string, () => { depth: number; running: number }>();

  constructor() {
    const registers = [this.registry];
    client.collectDefaultMetrics({ register: this.registry, prefix: 'infergate_' });
    this.requests = new client.Counter({ name: 'infergate_requests_total', help: 'Inference requests by service, version and status code', labelNames: ['service', 'version', 'code'], registers });
    const latency = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 40];
    this.duration = new client.Histogram({ name: 'infergate_request_duration_seconds', help: 'Time from request received to reply written', labelNames: ['service', 'version'], buckets: latency, registers });
    this.queueTime = new client.Histogram({ name: 'infergate_queue_duration_seconds', help: 'Time a request waited in the batcher queue', labelNames: ['service', 'version'], buckets: latency, registers });
    this.runTime = new client.Histogram({ name: 'infergate_run_duration_seconds', help: 'Model run time of the batch that served a request', labelNames: ['service', 'version'], buckets: latency, registers });
    this.batchSize = new client.Histogram({ name: 'infergate_batch_size', help: 'Rows per model run', labelNames: ['service', 'version'], buckets: [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024], registers });
    const gauges = this.gauges;
    new client.Gauge({
      name: 'infergate_queue_depth', help: 'Requests waiting in the batcher queue', labelNames: ['service', 'version'], registers,
      collect() {
        this.reset();
        for (const [key, read] of gauges) { const [service, version] = key.split('\u0000') as [string, string]; this.set({ service, version }, read().depth); }
      },
    });
    new client.Gauge({
      name: 'infergate_batches_running', help: 'Model runs in progress', labelNames: ['service', 'version'], registers,
      collect() {
        this.reset();
        for (const [key, read] of gauges) { const [service, version] = key.split('\u0000') as [string, string]; this.set({ service, version }, read().running); }
      },
    });
  }

  forVersion(service: string, version: string, state: () => { depth: number; running: number }): VersionMetrics {
    this.gauges.set(`${service}\u0000${version}`, state);
    return new VersionMetrics(this, service, version);
  }

  forget(service: string, version: string): void {
    this.gauges.delete(`${service}\u0000${version}`);
    for (const m of [this.duration, this.queueTime, this.runTime, this.batchSize]) m.remove({ service, version });
  }

  /** @internal children for VersionMetrics */
  bind(service: string, version: string) {
    const labels = { service, version };
    return {
      duration: this.duration.labels(labels),
      queueTime: this.queueTime.labels(labels),
      runTime: this.runTime.labels(labels),
      batchSize: this.batchSize.labels(labels),
      code: (code: number) => this.requests.labels({ service, version, code: String(code) }),
    };
  }

  /** Requests answered before a version was chosen (unknown service, bad route). */
  unrouted(code: number): void {
    this.requests.inc({ service: '', version: '', code: String(code) });
  }
}

export class VersionMetrics {
  private readonly c: ReturnType<Metrics['bind']>;
  private readonly byCode = new Map<number, client.Counter.Internal>();

  constructor(metrics: Metrics, service: string, version: string) {
    this.c = metrics.bind(service, version);
  }

  request(code: number, seconds: number): void {
    let counter = this.byCode.get(code);
    if (!counter) this.byCode.set(code, (counter = this.c.code(code)));
    counter.inc();
    this.c.duration.observe(seconds);
  }

  served(queueNs: number, runNs: number): void {
    this.c.queueTime.observe(queueNs / 1e9);
    this.c.runTime.observe(runNs / 1e9);
  }

  batch(rows: number): void {
    this.c.batchSize.observe(rows);
  }
}
