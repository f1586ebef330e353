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

export interface WorkerConfig {
  modelPath: string;
  provider: 'cpu' | 'cuda';
  intraOpThreads: number;
  /** customize_service.js of the package, when it has one. */
  hookPath: string | null;
  packageDir: string;
}

export interface HookContext {
  modelPath: string;
  settings: Record<string, string>;
  headers: Record<string, string>;
}

export type WorkerTask =
  | { kind: 'describe' }
  | { kind: 'run'; inputs: Tensor[]; ctx?: HookContext };

export interface DescribeResult { inputs: RawIoMetadata[]; outputs: RawIoMetadata[] }
export interface RunResult { outputs: Tensor[]; runNs: number }

interface Hooks {
  preprocess?: (inputs: Record<string, ort.Tensor>, ctx: HookContext) => Record<string, ort.Tensor> | Promise<Record<string, ort.Tensor>>;
  postprocess?: (outputs: Record<string, ort.Tensor>, ctx: HookContext) => Record<string, ort.Tensor> | Promise<Record<string, ort.Tensor>>;
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
    };
    return result;
  }
  let feeds: Record<string, ort.Tensor> = {};
  const names = session.inputNames;
  for (let i = 0; i < names.length; i++) {
    const t = task.inputs[i]!;
    feeds[names[i]!] = new ort.Tensor(t.type as 'float32', t.data as Float32Array, t.dims);
  }
  const ctx = task.ctx ?? { modelPath: config.packageDir, settings: {}, headers: {} };
  if (hooks.preprocess) feeds = await hooks.preprocess(feeds, ctx);
  const t0 = performance.now();
  let out = await session.run(feeds);
  const runNs = Math.round((performance.now() - t0) * 1e6);
  if (hooks.postprocess) out = await hooks.postprocess(out, ctx);
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

/** An ES module exports the hooks by name; a CommonJS one arrives as the default export. */
function loadHooks(mod: Hooks & { default?: Hooks }): Hooks {
  return {
    preprocess: mod.preprocess ?? mod.default?.preprocess,
    postprocess: mod.postprocess ?? mod.default?.postprocess,
  } as Hooks;
}
