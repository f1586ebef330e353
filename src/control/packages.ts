import { createHash } from 'node:crypto';
import { createReadStream, existsSync } from 'node:fs';
import { readFile, readdir, stat } from 'node:fs/promises';
import path from 'node:path';
import type { BatchingConfig } from '../runtime/onnx/batcher.js';
import { healthConfigOf, imageConfigOf, ImageConfigError, type HealthConfig, type ImageConfig } from '../runtime/image/config.js';
import { imagePreprocessOf, ModelConfigError, streamStateOf, type ImagePreprocess, type StreamState } from '../runtime/onnx/model-config.js';

/** A model package on disk (SPEC §4), with what the gateway derived from its config.json. */
export interface ModelPackage {
  name: string;
  version: string;
  dir: string;
  config: PackageConfig;
  modelType: 'ONNX' | 'Image';
  modelPath: string;
  hookPath: string | null;
  sha256: string;
  /** Feature order for records of named features: the `apis` request schema's, else `features`. */
  features: string[] | null;
  batching: BatchingConfig;
  /** Image packages: how instances run and how their health is checked (SPEC §8.2). */
  image: { image: ImageConfig; health: HealthConfig } | null;
  /** ONNX packages: declarative image preprocessing (`preprocess.image`). */
  preprocess: ImagePreprocess | null;
  /** ONNX packages: state kept per WebSocket connection (`stream.state`). */
  stream: StreamState[] | null;
}

export interface PackageConfig {
  model_type?: unknown;
  model_file?: unknown;
  features?: unknown;
  batching?: Partial<BatchingConfig>;
  apis?: unknown;
  [key: string]: unknown;
}

export const DEFAULT_BATCHING: BatchingConfig = { max_batch_size: 64, max_queue_delay_us: 0, max_queue_size: 1024 };

/**
 * Bounds on batching fields. A delay is how long a lone request waits for company: past 10 s it
 * only turns requests into timeouts (and past 2^31 ms Node's timer fires every millisecond).
 */
export const BATCHING_RANGE: Record<keyof BatchingConfig, [number, number]> = {
  max_batch_size: [1, 1_048_576],
  max_queue_delay_us: [0, 10_000_000],
  max_queue_size: [1, 1_048_576],
};

export class PackageError extends Error {}

const MODEL_NAME = /^[A-Za-z0-9_-]{1,64}$/;

export async function readPackage(dir: string, name = path.basename(dir), version = '0.0.1'): Promise<ModelPackage> {
  if (!MODEL_NAME.test(name)) throw new PackageError(`${dir}: model name '${name}' must be 1–64 of A-Za-z0-9_-`);
  const configPath = path.join(dir, 'config.json');
  const configStat = await stat(configPath).catch(() => null);
  if (!configStat) throw new PackageError(`${dir}: config.json is missing; every package needs one (SPEC §4)`);
  if (!configStat.isFile()) throw new PackageError(`${configPath}: is a folder; config.json must be a file`);
  let config: PackageConfig;
  try {
    config = JSON.parse(await readFile(configPath, 'utf8')) as PackageConfig;
  } catch (err) {
    throw new PackageError(`${configPath}: not valid JSON: ${(err as Error).message}`);
  }
  if (typeof config !== 'object' || config === null || Array.isArray(config)) throw new PackageError(`${configPath}: expected a JSON object`);
  const modelType = config.model_type;
  if (modelType !== 'ONNX' && modelType !== 'Image') {
    throw new PackageError(`${configPath}: model_type ${JSON.stringify(modelType)} is not supported; expected "ONNX" or "Image"`);
  }
  const modelFile = config.model_file ?? 'model.onnx';
  if (typeof modelFile !== 'string' || modelFile.includes('..') || path.isAbsolute(modelFile)) {
    throw new PackageError(`${configPath}: model_file must be a file name inside the package, got ${JSON.stringify(modelFile)}`);
  }
  const modelPath = path.join(dir, modelFile);
  let sha256 = '';
  if (modelType === 'ONNX') {
    const st = await stat(modelPath).catch(() => null);
    if (!st?.isFile()) throw new PackageError(`${dir}: model file '${modelFile}' (config "model_file") is missing`);
    sha256 = await hashFile(modelPath);
  }
  let image: ModelPackage['image'] = null;
  if (modelType === 'Image') {
    try {
      image = { image: imageConfigOf(config, configPath), health: healthConfigOf(config, configPath) };
    } catch (err) {
      if (err instanceof ImageConfigError) throw new PackageError(err.message);
      throw err;
    }
  }
  let preprocess: ImagePreprocess | null = null;
  let stream: StreamState[] | null = null;
  if (modelType === 'ONNX') {
    try {
      preprocess = imagePreprocessOf(config['preprocess'], configPath);
      stream = streamStateOf(config['stream'], configPath);
    } catch (err) {
      if (err instanceof ModelConfigError) throw new PackageError(err.message);
      throw err;
    }
  }
  const hook = path.join(dir, 'customize_service.js');
  return {
    name,
    version,
    dir,
    config,
    modelType,
    modelPath,
    hookPath: existsSync(hook) ? hook : null,
    sha256,
    features: featureOrder(config, configPath),
    batching: batchingOf(config.batching, configPath),
    image,
    preprocess,
    stream,
  };
}

export function batchingOf(b: unknown, where: string, base: BatchingConfig = DEFAULT_BATCHING): BatchingConfig {
  if (b === undefined) return base;
  if (typeof b !== 'object' || b === null) throw new PackageError(`${where}: "batching" must be an object`);
  const out = { ...base };
  for (const key of Object.keys(b)) {
    if (!(key in BATCHING_RANGE)) throw new PackageError(`${where}: unknown batching field '${key}'; expected ${Object.keys(BATCHING_RANGE).join(', ')}`);
    const v = (b as Record<string, unknown>)[key];
    const [min, max] = BATCHING_RANGE[key as keyof BatchingConfig];
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) throw new PackageError(`${where}: batching.${key} must be an integer from ${min} to ${max}, got ${JSON.stringify(v)}`);
    out[key as keyof BatchingConfig] = v;
  }
  return out;
}

async function hashFile(file: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(file)) h.update(chunk as Buffer);
  return h.digest('hex');
}

/**
 * ModelArts request schemas name record fields under data.req_data.items(.properties); an
 * `index` on a property fixes its position, as ModelArts documents.
 */
function featureOrder(config: PackageConfig, where: string): string[] | null {
  const fromApis = schemaFields(config.apis);
  if (fromApis) return fromApis;
  if (config.features === undefined) return null;
  if (!Array.isArray(config.features) || !config.features.every((f) => typeof f === 'string')) {
    throw new PackageError(`${where}: "features" must be an array of names`);
  }
  return config.features as string[];
}

function schemaFields(apis: unknown): string[] | null {
  if (!Array.isArray(apis)) return null;
  for (const api of apis) {
    const props = dig(api, ['request', 'data', 'properties', 'data', 'properties', 'req_data', 'items']);
    const item = Array.isArray(props) ? props[0] : props;
    const fields = dig(item, ['properties']);
    if (typeof fields !== 'object' || fields === null) continue;
    const entries = Object.entries(fields as Record<string, { index?: unknown }>);
    const indexed = entries.map(([name, s], pos) => ({ name, pos, index: typeof s?.index === 'number' ? s.index : pos }));
    indexed.sort((a, b) => a.index - b.index || a.pos - b.pos);
    return indexed.map((e) => e.name);
  }
  return null;
}

function dig(v: unknown, keys: string[]): unknown {
  let cur = v;
  for (const k of keys) {
    if (typeof cur !== 'object' || cur === null) return undefined;
    cur = (cur as Record<string, unknown>)[k];
  }
  return cur;
}

/**
 * Every package folder directly under a models directory (folders holding config.json), links to
 * folders included: a models directory is often a set of links into where packages are built.
 */
export async function listPackageDirs(modelsDir: string): Promise<string[]> {
  const entries = await readdir(modelsDir, { withFileTypes: true }).catch(() => []);
  return entries
    .filter((e) => (e.isDirectory() || e.isSymbolicLink()) && existsSync(path.join(modelsDir, e.name, 'config.json')))
    .map((e) => path.join(modelsDir, e.name))
    .sort();
}
