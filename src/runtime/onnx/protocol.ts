/**
 * What the main thread and the ONNX workers say to each other (worker.ts runs in the threads;
 * this module is safe to import anywhere).
 */
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

/** Multipart parts no decoder took, for the preprocess hook: `{field: {filename: bytes}}`, as ModelArts hands them to `_preprocess`. */
export type RawParts = Record<string, Record<string, Uint8Array>>;

export type WorkerTask =
  | { kind: 'describe' }
  | { kind: 'run'; inputs: Tensor[]; ctx?: HookContext | undefined; parts?: RawParts | undefined };

export interface DescribeResult { inputs: RawIoMetadata[]; outputs: RawIoMetadata[]; hooks: { preprocess: boolean; postprocess: boolean } }
/** `custom`: what a postprocess hook answered instead of tensors (the reply body, as ModelArts' _postprocess returns it). */
export interface RunResult { outputs: Tensor[]; runNs: number; custom?: unknown }

/** Worker errors that are the request's fault, told apart from model failures by this prefix. */
export const HOOK_REFUSED = 'preprocess refused the request: ';
