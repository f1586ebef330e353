import { Piscina } from 'piscina';
import type { Job, BatchingConfig, BatchObserver, RunBatch } from './batcher.js';
import { Batcher } from './batcher.js';
import { resolveProvider, type Provider } from './providers.js';
import { buildSignature, type ModelSignature } from './signature.js';
import type { ImagePreprocess, StreamState } from './model-config.js';
import type { DescribeResult, RunResult, WorkerConfig, WorkerTask } from './protocol.js';

export interface OnnxVersionOptions {
  /** "service/version", used in messages. */
  label: string;
  packageDir: string;
  modelPath: string;
  hookPath: string | null;
  instances: number;
  provider: Provider;
  providerFallback?: Provider | undefined;
  intraOpThreads: number;
  batching: BatchingConfig;
  features: string[] | null;
  /** config.json preprocess.image and stream.state. */
  image: ImagePreprocess | null;
  stream: StreamState[] | null;
  observer: BatchObserver;
}

/** How long closing waits for running batches before the workers are terminated anyway. */
const CLOSE_WAIT_MS = 30_000;

/** Batches that may be in a worker at once: the main thread prepares the next while one runs. */
const TASKS_PER_WORKER = 2;
const WORKER_FILE = new URL('./worker.js', import.meta.url);

/** One service version on ONNX Runtime: a piscina pool of sessions fed by a dynamic batcher. */
export class OnnxRunner {
  readonly kind = 'onnx';

  private constructor(
    readonly signature: ModelSignature,
    readonly provider: Provider,
    readonly notes: string[],
    /** The package folder when the package has hooks (customize_service.js), which then get a ctx. */
    readonly hookDir: string | null,
    private readonly pool: Piscina,
    private readonly batcher: Batcher,
  ) {}

  static async start(opts: OnnxVersionOptions): Promise<OnnxRunner> {
    const { provider, note } = resolveProvider(opts.provider, opts.providerFallback, opts.label);
    const workerData: WorkerConfig = {
      modelPath: opts.modelPath,
      provider,
      intraOpThreads: opts.intraOpThreads,
      hookPath: opts.hookPath,
      packageDir: opts.packageDir,
    };
    const pool = new Piscina({
      filename: WORKER_FILE.href,
      minThreads: opts.instances,
      maxThreads: opts.instances,
      concurrentTasksPerWorker: TASKS_PER_WORKER,
      idleTimeout: Number.POSITIVE_INFINITY,
      workerData,
    });
    // A worker that dies is replaced by piscina; the error event must not become an uncaught exception.
    pool.on('error', () => undefined);
    let signature: ModelSignature;
    try {
      const described = (await pool.run({ kind: 'describe' } satisfies WorkerTask)) as DescribeResult;
      signature = buildSignature(described.inputs, described.outputs, { features: opts.features, image: opts.image, stream: opts.stream, hooks: described.hooks });
    } catch (err) {
      await pool.destroy();
      throw new Error(`${opts.label}: the model could not be loaded: ${(err as Error).message.split('\n')[0]}`);
    }
    const capacity = opts.instances * TASKS_PER_WORKER;
    const run: RunBatch = (inputs, transfer, ctx, parts) =>
      pool.run({ kind: 'run', inputs, ctx, parts } satisfies WorkerTask, { transferList: transfer }) as Promise<RunResult>;
    const batcher = new Batcher(opts.label, signature, opts.batching, capacity, run, opts.observer);
    return new OnnxRunner(signature, provider, note ? [note] : [], opts.hookPath ? opts.packageDir : null, pool, batcher);
  }

  submit(job: Job): void {
    this.batcher.submit(job);
  }

  get queueDepth(): number {
    return this.batcher.depth;
  }

  get running(): number {
    return this.batcher.running;
  }

  /** Lets running batches finish before the workers go (bounded: a stuck run does not hold shutdown forever). */
  async close(): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const bound = new Promise<void>((resolve) => (timer = setTimeout(resolve, CLOSE_WAIT_MS)));
    await Promise.race([this.batcher.close(), bound]);
    clearTimeout(timer);
    await this.pool.destroy();
  }
}
