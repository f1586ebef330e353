/**
 * A piscina worker: one ONNX Runtime session per thread. Tensors arrive as moved buffers and the
 * outputs are moved back, so neither direction copies tensor data through structured clone.
 */
import { performance } from 'node:perf_hooks';
import { pathToFileURL } from 'node:url';
import ort from 'onnxruntime-node';
import { Piscina } from 'piscina';
import type { RawIoMetadata } from './signature.js';
import type { Tensor } from './tensor.js';
import { HOOK_REFUSED, type DescribeResult, type HookContext, type RawParts, type RunResult, type WorkerConfig, type WorkerTask } from './protocol.js';

/** What hooks see: the request's context and the tensor type to build feeds with (the package cannot import onnxruntime itself). */
export type HookCtx = HookContext & { Tensor: typeof ort.Tensor };
type Feeds = Record<string, ort.Tensor>;

interface Hooks {
  preprocess?: (data: Feeds | RawParts, ctx: HookCtx) => Feeds | Promise<Feeds>;
  postprocess?: (outputs: Feeds, ctx: HookCtx) => unknown;
}

const config = Piscina.workerData as WorkerConfig;

async function open(): Promise<{ session: ort.InferenceSession; hooks: Hooks }> {
  const session = await ort.InferenceSession.create(config.modelPath, {
    executionProviders: config.provider === 'cuda' ? ['cuda', 'cpu'] : ['cpu'],
    intraOpNumThreads: config.intraOpThreads,
    interOpNumThreads: 1,
    graphOptimizationLevel: 'all',
  });
  const hooks = config.hookPath ? loadHooks(await import(pathToFileURL(config.hookPath).href)) : {};
  return { session, hooks };
}

const ready = open();
// An unloadable model is reported by the first task; keep the rejection from crashing the thread.
ready.catch(() => undefined);

function metadata(names: readonly string[], meta: readonly unknown[] | undefined): RawIoMetadata[] {
  return names.map((name, i) => {
    const m = (meta?.[i] ?? {}) as { isTensor?: boolean; type?: string; shape?: (number | string)[] };
    return { name, isTensor: m.isTensor, type: m.type, shape: m.shape } as RawIoMetadata;
  });
}

export default async function run(task: WorkerTask): Promise<unknown> {
  const { session, hooks } = await ready;
  if (task.kind === 'describe') {
    const s = session as unknown as { inputMetadata?: unknown[]; outputMetadata?: unknown[] };
    const result: DescribeResult = {
      inputs: metadata(session.inputNames, s.inputMetadata),
      outputs: metadata(session.outputNames, s.outputMetadata),
      hooks: { preprocess: typeof hooks.preprocess === 'function', postprocess: typeof hooks.postprocess === 'function' },
    };
    return result;
  }
  const ctx: HookCtx = { ...(task.ctx ?? { modelPath: config.packageDir, settings: {}, headers: {} }), Tensor: ort.Tensor };
  const feeds = await feedsOf(task, session, hooks, ctx);
  const t0 = performance.now();
  let out: Feeds = await runNow(session, feeds);
  const runNs = Math.round((performance.now() - t0) * 1e6);
  if (hooks.postprocess) {
    const answer = await hooks.postprocess(out, ctx);
    if (!isTensorMap(answer, session.outputNames)) return { outputs: [], runNs, custom: answer } satisfies RunResult;
    out = answer;
  }
  const outputs: Tensor[] = [];
  const transfer: ArrayBuffer[] = [];
  for (const name of session.outputNames) {
    const t = out[name];
    if (!t) throw new Error(`the model run gave no output '${name}'`);
    const data = t.data as Tensor['data'];
    outputs.push({ type: t.type as Tensor['type'], dims: t.dims as number[], data });
    if (!Array.isArray(data) && data.buffer instanceof ArrayBuffer && !transfer.includes(data.buffer)) transfer.push(data.buffer);
  }
  const result: RunResult = { outputs, runNs };
  return Piscina.move({
    get [Piscina.transferableSymbol]() { return transfer; },
    get [Piscina.valueSymbol]() { return result; },
  } as unknown as ArrayBuffer);
}

/**
 * session.run without a trip around this thread's event loop. onnxruntime-node's handler defers
 * the native run with setImmediate, which here cost ~35 µs a batch at low load (the loop polls
 * once more before its check phase). It calls setImmediate synchronously inside session.run()
 * (the first await of onnxruntime-common's run is on the handler's promise), so for that call
 * alone setImmediate runs its callback at once; should a later onnxruntime stop deferring, this
 * changes nothing.
 */
function runNow(session: ort.InferenceSession, feeds: Feeds): Promise<Feeds> {
  const deferred = globalThis.setImmediate;
  globalThis.setImmediate = immediateNow;
  try {
    return session.run(feeds);
  } finally {
    globalThis.setImmediate = deferred;
  }
}

const immediateNow = ((callback: (...args: unknown[]) => void, ...args: unknown[]) => {
  callback(...args);
}) as unknown as typeof setImmediate;

/** The session's feeds: the request's tensors through the preprocess hook, or what the hook made of raw parts. */
async function feedsOf(task: Extract<WorkerTask, { kind: 'run' }>, session: ort.InferenceSession, hooks: Hooks, ctx: HookCtx): Promise<Feeds> {
  let feeds: Feeds = {};
  if (!task.parts) {
    const names = session.inputNames;
    for (let i = 0; i < names.length; i++) {
      const t = task.inputs[i]!;
      feeds[names[i]!] = new ort.Tensor(t.type as 'float32', t.data as Float32Array, t.dims);
    }
    if (!hooks.preprocess) return feeds;
  }
  try {
    feeds = await hooks.preprocess!(task.parts ? asBuffers(task.parts) : feeds, ctx);
  } catch (err) {
    // An error the hook marks with status 400 is the request's fault; anything else is the model's (500).
    const status = (err as { status?: unknown; statusCode?: unknown } | null)?.status ?? (err as { statusCode?: unknown } | null)?.statusCode;
    if (status === 400) throw new Error(HOOK_REFUSED + (err instanceof Error ? err.message : String(err)));
    throw err;
  }
  const missing = session.inputNames.filter((n) => !(feeds?.[n] instanceof ort.Tensor));
  if (missing.length) {
    throw new Error(`customize_service.js preprocess must return {input: ctx.Tensor} for every model input; missing or not a Tensor: ${missing.map((n) => `'${n}'`).join(', ')}`);
  }
  return feeds;
}

/** Parts arrive as Uint8Array (structured clone); hooks get Buffers, as SPEC §5.3 says, without a copy. */
function asBuffers(parts: RawParts): RawParts {
  for (const files of Object.values(parts)) {
    for (const name of Object.keys(files)) files[name] = Buffer.from(files[name]!.buffer, files[name]!.byteOffset, files[name]!.byteLength);
  }
  return parts;
}

/** Tensors for the model's outputs (by name), as opposed to a custom answer. */
function isTensorMap(v: unknown, names: readonly string[]): v is Feeds {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return false;
  const o = v as Record<string, unknown>;
  return names.every((n) => o[n] instanceof ort.Tensor);
}

/** An ES module exports the hooks by name; a CommonJS one arrives as the default export. */
function loadHooks(mod: Hooks & { default?: Hooks }): Hooks {
  return {
    preprocess: mod.preprocess ?? mod.default?.preprocess,
    postprocess: mod.postprocess ?? mod.default?.postprocess,
  } as Hooks;
}
