import { performance } from 'node:perf_hooks';
import { GatewayError } from '../../errors.js';
import type { InferRequest, InferResult } from '../types.js';
import type { ModelSignature } from './signature.js';
import { allocate, elementCount, toTyped, type Tensor, type TypedData } from './tensor.js';
import { HOOK_REFUSED, type HookContext, type RawParts, type RunResult } from './protocol.js';

/**
 * One request waiting for a model run. The HTTP layer's per-request object implements this, so
 * admitting a request allocates no promise and no wrapper.
 */
export interface Job {
  readonly request: InferRequest;
  readonly ctx?: HookContext | undefined;
  /** Set by the owner when the client is gone or timed out: the batcher then skips the job. */
  cancelled: boolean;
  /** performance.now() when queued. */
  enqueuedAt: number;
  resolve(result: InferResult): void;
  reject(err: GatewayError): void;
}

export interface BatchingConfig {
  max_batch_size: number;
  max_queue_delay_us: number;
  max_queue_size: number;
}

/** Runs one merged batch (or one request's raw parts); rejects with the worker's error. */
export type RunBatch = (inputs: Tensor[], transfer: ArrayBuffer[], ctx: HookContext | undefined, parts: RawParts | undefined) => Promise<RunResult>;

export interface BatchObserver {
  batch(rows: number, requests: number): void;
}

/**
 * The dynamic batcher of one service version (SPEC §8.1): joins queued requests along dimension 0
 * up to max_batch_size rows whenever an instance is free (Triton's default with a zero delay),
 * and gives each request exactly its own rows of every output.
 */
export class Batcher {
  private readonly queue: Job[] = [];
  private head = 0;
  private inflight = 0;
  private scheduled = false;
  private delayTimer: NodeJS.Timeout | null = null;
  private readonly flushBound = (): void => this.flush();
  /** Closing: nothing new is taken, and `idleWaiters` hear when the last running batch is done. */
  private closing = false;
  private idleWaiters: (() => void)[] = [];
  /** Inner row dimensions vary per request for some inputs, so only equal ones may merge. */
  private readonly variableRows: boolean;

  constructor(
    private readonly label: string,
    private readonly sig: ModelSignature,
    private readonly cfg: BatchingConfig,
    /** Batches that may run at once (instances × tasks per worker). */
    private readonly capacity: number,
    private readonly runBatch: RunBatch,
    private readonly observer: BatchObserver,
  ) {
    this.variableRows = sig.inputs.some((s) => s.rowSize < 0);
  }

  /** Requests waiting for an instance (not yet running). */
  get depth(): number {
    return this.queue.length - this.head;
  }

  get running(): number {
    return this.inflight;
  }

  submit(job: Job): void {
    if (this.closing) {
      job.reject(new GatewayError(503, 'ShuttingDown', `${this.label} is shutting down; retry on another version or instance`));
      return;
    }
    if (this.depth >= this.cfg.max_queue_size) {
      job.reject(new GatewayError(503, 'QueueFull', `${this.label}: the queue is full (${this.cfg.max_queue_size} requests waiting); retry later`));
      return;
    }
    job.enqueuedAt = performance.now();
    this.queue.push(job);
    if (!this.scheduled && this.inflight < this.capacity) {
      this.scheduled = true;
      setImmediate(this.flushBound);
    }
  }

  private flush(): void {
    this.scheduled = false;
    if (this.closing) return;
    while (this.inflight < this.capacity) {
      this.dropCancelled();
      if (this.depth === 0) break;
      if (this.shouldWait()) return;
      this.dispatch(this.take());
    }
    this.compact();
  }

  /** With a queue delay, a partial batch waits for more rows until its oldest request has waited long enough. */
  private shouldWait(): boolean {
    const delayMs = this.cfg.max_queue_delay_us / 1000;
    if (delayMs <= 0 || !this.sig.mergeable) return false;
    let rows = 0;
    for (let i = this.head; i < this.queue.length && rows < this.cfg.max_batch_size; i++) rows += this.queue[i]!.request.rows;
    if (rows >= this.cfg.max_batch_size) return false;
    const waited = performance.now() - this.queue[this.head]!.enqueuedAt;
    if (waited >= delayMs) return false;
    if (!this.delayTimer) {
      this.delayTimer = setTimeout(() => {
        this.delayTimer = null;
        this.flush();
      }, delayMs - waited);
    }
    return true;
  }

  private dropCancelled(): void {
    while (this.head < this.queue.length && this.queue[this.head]!.cancelled) this.queue[this.head++] = undefined as unknown as Job;
  }

  private compact(): void {
    if (this.head > 0 && (this.head === this.queue.length || this.head > 1024)) {
      this.queue.splice(0, this.head);
      this.head = 0;
    }
  }

  private take(): Job[] {
    const first = this.queue[this.head]!;
    this.queue[this.head++] = undefined as unknown as Job;
    const jobs = [first];
    if (!this.sig.mergeable || runsAlone(first)) return jobs;
    let rows = first.request.rows;
    while (this.head < this.queue.length) {
      const next = this.queue[this.head]!;
      if (next.cancelled) { this.head++; continue; }
      if (rows + next.request.rows > this.cfg.max_batch_size || runsAlone(next)) break;
      if (this.variableRows && !sameRowDims(first.request.inputs, next.request.inputs)) break;
      this.queue[this.head++] = undefined as unknown as Job;
      jobs.push(next);
      rows += next.request.rows;
    }
    return jobs;
  }

  private dispatch(jobs: Job[]): void {
    this.inflight++;
    const startedAt = performance.now();
    const transfer: ArrayBuffer[] = [];
    const inputs = jobs.length === 1 ? typed(jobs[0]!.request.inputs) : merge(jobs, this.sig.inputs.length);
    for (const t of inputs) {
      if (!Array.isArray(t.data)) {
        const buf = (t.data as TypedData).buffer;
        if (buf instanceof ArrayBuffer && !transfer.includes(buf)) transfer.push(buf);
      }
    }
    // Row offsets are fixed now: a job that times out or loses its client meanwhile drops its request.
    const offsets = new Array<number>(jobs.length);
    let rows = 0;
    for (let k = 0; k < jobs.length; k++) {
      offsets[k] = rows;
      rows += jobs[k]!.request.rows;
    }
    this.observer.batch(rows, jobs.length);
    this.runBatch(inputs, transfer, jobs[0]!.ctx, jobs[0]!.request.parts).then(
      (res) => this.finish(jobs, offsets, startedAt, res, null),
      (err: unknown) => this.finish(jobs, offsets, startedAt, null, err),
    );
  }

  private finish(jobs: Job[], offsets: number[], startedAt: number, res: RunResult | null, err: unknown): void {
    this.inflight--;
    if (res) this.deliver(jobs, offsets, startedAt, res);
    else {
      const gerr = runError(this.label, err);
      for (const j of jobs) if (!j.cancelled) j.reject(gerr);
    }
    if (this.depth > 0) this.flush();
    else if (this.inflight === 0 && this.idleWaiters.length) {
      const waiters = this.idleWaiters;
      this.idleWaiters = [];
      for (const w of waiters) w();
    }
  }

  /**
   * Stops taking jobs and resolves once no batch is running: a worker terminated in the middle of a
   * session run can take the process down with it. Jobs still queued (their callers gone or not)
   * are refused with 503.
   */
  close(): Promise<void> {
    this.closing = true;
    if (this.delayTimer) clearTimeout(this.delayTimer);
    this.delayTimer = null;
    const refused = new GatewayError(503, 'ShuttingDown', `${this.label} is shutting down; retry on another version or instance`);
    while (this.head < this.queue.length) {
      const j = this.queue[this.head]!;
      this.queue[this.head++] = undefined as unknown as Job;
      if (!j.cancelled) j.reject(refused);
    }
    this.compact();
    if (this.inflight === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private deliver(jobs: Job[], offsets: number[], startedAt: number, res: RunResult): void {
    if (jobs.length === 1 && jobs[0]!.request.parts) {
      // Rows made by the preprocess hook out of raw parts are known only now.
      const batched = this.sig.outputs.findIndex((o) => o.batched && o.fixedBatch < 0);
      jobs[0]!.request.rows = batched >= 0 && res.outputs[batched] ? res.outputs[batched]!.dims[0]! : 1;
    } else if (jobs.length > 1) {
      // Rows are handed back by offset: a merged run must answer exactly its rows (a preprocess hook could change them).
      const rows = offsets[offsets.length - 1]! + jobs[jobs.length - 1]!.request.rows;
      const wrong = res.outputs.findIndex((t, o) => this.sig.outputs[o]!.batched && t.dims[0] !== rows);
      if (wrong >= 0) {
        const err = new GatewayError(500, 'ModelRunFailed', `${this.label}: output '${this.sig.outputs[wrong]!.name}' has ${res.outputs[wrong]!.dims[0]} rows for a batch of ${rows}; a preprocess hook that changes the rows must not be merged`);
        for (const j of jobs) if (!j.cancelled) j.reject(err);
        return;
      }
    }
    for (let k = 0; k < jobs.length; k++) {
      const j = jobs[k]!;
      if (j.cancelled) continue;
      try {
        j.resolve({ outputs: res.outputs, offset: offsets[k]!, whole: jobs.length === 1, queueNs: nsBetween(j.enqueuedAt, startedAt), runNs: res.runNs, custom: res.custom });
      } catch (err) {
        // One caller failing to take its answer must not keep the others of the batch from theirs.
        if (!j.cancelled) j.reject(new GatewayError(500, 'Internal', `${this.label}: the answer could not be delivered: ${(err as Error).message}`));
      }
    }
  }
}

const nsBetween = (from: number, to: number): number => Math.round((to - from) * 1e6);

/** A request with its own hook context (rule settings, headers) or raw parts is never merged with others. */
const runsAlone = (j: Job): boolean => j.ctx !== undefined || j.request.parts !== undefined;

function sameRowDims(a: Tensor[], b: Tensor[]): boolean {
  for (let i = 0; i < a.length; i++) {
    const da = a[i]!.dims, db = b[i]!.dims;
    if (da.length !== db.length) return false;
    for (let k = 1; k < da.length; k++) if (da[k] !== db[k]) return false;
  }
  return true;
}

function typed(inputs: Tensor[]): Tensor[] {
  return inputs.map((t) => (Array.isArray(t.data) && t.type !== 'string' ? { type: t.type, dims: t.dims, data: toTyped(t.type, t.data) } : t));
}

function merge(jobs: Job[], nInputs: number): Tensor[] {
  const merged: Tensor[] = new Array(nInputs);
  for (let i = 0; i < nInputs; i++) {
    const first = jobs[0]!.request.inputs[i]!;
    let rows = 0;
    for (const j of jobs) rows += j.request.inputs[i]!.dims[0]!;
    const dims = [rows, ...first.dims.slice(1)];
    const data = allocate(first.type, elementCount(dims));
    let off = 0;
    for (const j of jobs) {
      const src = j.request.inputs[i]!.data;
      if (Array.isArray(data)) for (let k = 0; k < src.length; k++) data[off + k] = (src as string[])[k]!;
      else (data as Float32Array).set(src as ArrayLike<number>, off);
      off += src.length;
    }
    merged[i] = { type: first.type, dims, data };
  }
  return merged;
}

function runError(label: string, err: unknown): GatewayError {
  const msg = err instanceof Error ? err.message : String(err);
  const refused = msg.indexOf(HOOK_REFUSED);
  if (refused >= 0) return new GatewayError(400, 'PreprocessRefused', `${label}: customize_service.js ${msg.slice(refused).split('\n')[0]}`);
  if (/worker|terminat|exited/i.test(msg) && !/^Error: \[ErrorCode/.test(msg)) {
    return new GatewayError(503, 'InstanceLost', `${label}: the model instance stopped while running this request; it is being replaced, retry`);
  }
  // ONNX Runtime's own messages say which input or node refused; they carry no stack or secrets.
  return new GatewayError(500, 'ModelRunFailed', `${label}: the model run failed: ${msg.split('\n')[0]}`);
}
