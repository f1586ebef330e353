/**
 * The declarative parts of a package's config.json that change how requests become tensors:
 * image preprocessing (SPEC §4 `preprocess.image`) and per-connection stream state
 * (`stream.state`). Parsed at import, so a bad block refuses the package naming the field;
 * checked against the model's inputs and outputs when a version starts.
 */

export type ChannelOrder = 'RGB' | 'BGR' | 'GRAY';

export interface ImagePreprocess {
  /** The input the image feeds; null: the model's only input. */
  input: string | null;
  /** [width, height] to resize to; null: the model's static H and W, else the image's own size. */
  resize: [number, number] | null;
  /** How the aspect ratio is treated: stretched to the size, or kept and padded right and bottom with zeros. */
  fit: 'fill' | 'pad';
  layout: 'NCHW' | 'NHWC';
  /** Multiplies each 0–255 value first (default 1/255). */
  scale: number;
  /** Per channel, after scale: (v − mean) / std. */
  mean: number[];
  std: number[];
  channels: ChannelOrder;
}

export interface StreamState {
  /** Input fed from the connection's state (zeros at first). */
  input: string;
  /** Output that becomes the next run's input. */
  output: string;
  init: 'zeros';
}

export class ModelConfigError extends Error {}

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

function known(obj: Record<string, unknown>, keys: readonly string[], where: string): void {
  const extra = Object.keys(obj).find((k) => !keys.includes(k));
  if (extra !== undefined) throw new ModelConfigError(`${where}: unknown field '${extra}'; expected ${keys.join(', ')}`);
}

function numbers(v: unknown, where: string, n: number): number[] {
  const list = typeof v === 'number' ? new Array<number>(n).fill(v) : v;
  if (!Array.isArray(list) || list.length !== n || !list.every((x) => typeof x === 'number' && Number.isFinite(x))) {
    throw new ModelConfigError(`${where} must be a number or an array of ${n} numbers (one per channel)`);
  }
  return list as number[];
}

/** config.json `preprocess` → the image preprocessing, or null when there is none. */
export function imagePreprocessOf(raw: unknown, where: string): ImagePreprocess | null {
  if (raw === undefined || raw === null) return null;
  if (!isObj(raw)) throw new ModelConfigError(`${where}: "preprocess" must be an object such as {"image": {...}}`);
  known(raw, ['image'], `${where}: preprocess`);
  const img = raw['image'];
  if (img === undefined) return null;
  const at = `${where}: preprocess.image`;
  if (!isObj(img)) throw new ModelConfigError(`${at} must be an object`);
  known(img, ['input', 'resize', 'fit', 'layout', 'scale', 'mean', 'std', 'channels'], at);
  const input = img['input'] ?? null;
  if (input !== null && typeof input !== 'string') throw new ModelConfigError(`${at}.input must name a model input`);
  let resize: [number, number] | null = null;
  if (img['resize'] !== undefined) {
    const r = img['resize'];
    if (!Array.isArray(r) || r.length !== 2 || !r.every((d) => Number.isInteger(d) && d > 0 && d <= 16384)) {
      throw new ModelConfigError(`${at}.resize must be [width, height] in pixels, e.g. [224, 224]`);
    }
    resize = [r[0], r[1]];
  }
  const fit = img['fit'] ?? 'fill';
  if (fit !== 'fill' && fit !== 'pad') throw new ModelConfigError(`${at}.fit must be "fill" (stretch to the size) or "pad" (keep the aspect ratio, pad with zeros)`);
  const layout = img['layout'] ?? 'NCHW';
  if (layout !== 'NCHW' && layout !== 'NHWC') throw new ModelConfigError(`${at}.layout must be "NCHW" or "NHWC"`);
  const channelsRaw = img['channels'] ?? 'RGB';
  const channels: ChannelOrder | undefined = channelsRaw === 3 ? 'RGB' : channelsRaw === 1 ? 'GRAY' : (['RGB', 'BGR', 'GRAY'] as const).find((c) => c === channelsRaw);
  if (!channels) throw new ModelConfigError(`${at}.channels must be "RGB", "BGR", "GRAY", 3 or 1`);
  const n = channels === 'GRAY' ? 1 : 3;
  const scale = img['scale'] ?? 1 / 255;
  if (typeof scale !== 'number' || !Number.isFinite(scale)) throw new ModelConfigError(`${at}.scale must be a number (e.g. 0.00392156862745098 for 1/255)`);
  const mean = numbers(img['mean'] ?? 0, `${at}.mean`, n);
  const std = numbers(img['std'] ?? 1, `${at}.std`, n);
  if (std.some((s) => s === 0)) throw new ModelConfigError(`${at}.std must not be 0`);
  return { input, resize, fit, layout, scale, mean, std, channels };
}

/** config.json `stream` → the per-connection state, or null when the model keeps none. */
export function streamStateOf(raw: unknown, where: string): StreamState[] | null {
  if (raw === undefined || raw === null) return null;
  const at = `${where}: stream`;
  if (!isObj(raw)) throw new ModelConfigError(`${at} must be an object such as {"state": [{"input": "state", "output": "stateN", "init": "zeros"}]}`);
  known(raw, ['state'], at);
  const list = raw['state'];
  if (!Array.isArray(list) || list.length === 0) throw new ModelConfigError(`${at}.state must be a non-empty array of {"input", "output", "init"}`);
  return list.map((s, i) => {
    const w = `${at}.state[${i}]`;
    if (!isObj(s)) throw new ModelConfigError(`${w} must be an object {"input", "output", "init": "zeros"}`);
    known(s, ['input', 'output', 'init'], w);
    if (typeof s['input'] !== 'string' || typeof s['output'] !== 'string') throw new ModelConfigError(`${w}: "input" and "output" must name a model input and output`);
    const init = s['init'] ?? 'zeros';
    if (init !== 'zeros') throw new ModelConfigError(`${w}.init must be "zeros"`);
    return { input: s['input'], output: s['output'], init };
  });
}
