import type { ElementType } from './tensor.js';
import { elementCount } from './tensor.js';
import type { ImagePreprocess, StreamState } from './model-config.js';

/** One model input or output as the gateway sees it. */
export interface IoSpec {
  name: string;
  type: ElementType;
  /** Shape as the model declares it; symbolic dimensions are -1. */
  dims: number[];
  /**
   * Dimension 0 counts rows: symbolic (rows of several requests may stack along it) or, for a
   * tensor of rank ≥ 2, fixed (`fixedBatch` rows exactly, one request at a time).
   */
  batched: boolean;
  /** The fixed size of dimension 0, or -1 when it is symbolic or there is no batch dimension. */
  fixedBatch: number;
  /** Dimensions after the batch dimension (or all of them when not batched); -1 = taken from the request. */
  rowDims: number[];
  /** Elements per row, or -1 when a row dimension is symbolic. */
  rowSize: number;
}

export interface ModelSignature {
  inputs: IoSpec[];
  outputs: IoSpec[];
  inputIndex: Map<string, number>;
  outputIndex: Map<string, number>;
  /** Requests may be merged along dimension 0 (every input and output has a symbolic dim 0). */
  mergeable: boolean;
  /** Ordered feature names of the single 2-D input, when the package names them (SPEC §5.3). */
  features: string[] | null;
  featureIndex: Map<string, number> | null;
  /** JSON-quoted output names, and the JSON list of them, for encoders. */
  outputKeysJson: string[];
  outputListJson: string;
  /** Images become this input's rows (config.json preprocess.image), with the input resolved. */
  image: (ImagePreprocess & { input: string }) | null;
  /** State the gateway keeps per WebSocket connection (config.json stream.state). */
  stream: StreamState[] | null;
  /** What customize_service.js exports. */
  hooks: { preprocess: boolean; postprocess: boolean };
}

/** What the package adds to what the model declares. */
export interface InterfaceOptions {
  features: string[] | null;
  image?: ImagePreprocess | null;
  stream?: StreamState[] | null;
  hooks?: { preprocess: boolean; postprocess: boolean };
}

/** What onnxruntime-node reports in session.inputMetadata / outputMetadata. */
export interface RawIoMetadata {
  name: string;
  isTensor?: boolean;
  type?: string;
  shape?: ReadonlyArray<number | string>;
}

const ORT_TYPES: ReadonlySet<string> = new Set([
  'float32', 'float64', 'float16', 'int8', 'int16', 'int32', 'int64',
  'uint8', 'uint16', 'uint32', 'uint64', 'bool', 'string',
]);

export function ioSpec(meta: RawIoMetadata): IoSpec {
  const type = meta.type ?? 'float32';
  if (meta.isTensor === false || !ORT_TYPES.has(type)) {
    throw new Error(`'${meta.name}' has type ${meta.isTensor === false ? 'non-tensor' : type}, which the gateway cannot feed or read`);
  }
  const dims = (meta.shape ?? []).map((d) => (typeof d === 'number' && d >= 0 ? d : -1));
  const symbolic0 = dims.length > 0 && dims[0] === -1;
  const fixed0 = dims.length >= 2 && dims[0]! > 0;
  const batched = symbolic0 || fixed0;
  const rowDims = batched ? dims.slice(1) : dims.slice();
  const rowSize = rowDims.includes(-1) ? -1 : elementCount(rowDims);
  return { name: meta.name, type: type as ElementType, dims, batched, fixedBatch: fixed0 ? dims[0]! : -1, rowDims, rowSize };
}

export function buildSignature(inputs: RawIoMetadata[], outputs: RawIoMetadata[], opts: InterfaceOptions): ModelSignature {
  const ins = inputs.map(ioSpec);
  const outs = outputs.map(ioSpec);
  const hooks = opts.hooks ?? { preprocess: false, postprocess: false };
  const stream = opts.stream ?? null;
  // A postprocess hook sees one request's outputs and may answer anything (ModelArts' _postprocess);
  // streamed state belongs to one connection: neither merges requests.
  const mergeable = [...ins, ...outs].every((s) => s.batched && s.fixedBatch < 0) && !stream && !hooks.postprocess;
  const single2d = ins.length === 1 && ins[0]!.dims.length === 2 && ins[0]!.rowSize > 0;
  let feats: string[] | null = null;
  if (opts.features && single2d) {
    if (opts.features.length !== ins[0]!.rowSize) {
      throw new Error(`config lists ${opts.features.length} features but input '${ins[0]!.name}' has ${ins[0]!.rowSize} per row`);
    }
    feats = opts.features;
  }
  for (const st of stream ?? []) {
    const i = ins.find((x) => x.name === st.input);
    const o = outs.find((x) => x.name === st.output);
    if (!i) throw new Error(`config stream.state names input '${st.input}', which the model does not have (inputs ${ins.map((x) => `'${x.name}'`).join(', ')})`);
    if (!o) throw new Error(`config stream.state names output '${st.output}', which the model does not have (outputs ${outs.map((x) => `'${x.name}'`).join(', ')})`);
    if (i.type !== o.type) throw new Error(`config stream.state: input '${i.name}' is ${i.type} but output '${o.name}' is ${o.type}`);
  }
  return {
    inputs: ins,
    outputs: outs,
    inputIndex: new Map(ins.map((s, i) => [s.name, i])),
    outputIndex: new Map(outs.map((s, i) => [s.name, i])),
    mergeable,
    features: feats,
    featureIndex: feats ? new Map(feats.map((f, i) => [f, i])) : null,
    outputKeysJson: outs.map((o) => JSON.stringify(o.name)),
    outputListJson: JSON.stringify(outs.map((o) => o.name)),
    image: opts.image ? imageInput(opts.image, ins) : null,
    stream,
    hooks,
  };
}

/** Resolves the image preprocessing's input and checks it can hold images. */
function imageInput(image: ImagePreprocess, ins: IoSpec[]): ImagePreprocess & { input: string } {
  const name = image.input ?? (ins.length === 1 ? ins[0]!.name : null);
  if (name === null) throw new Error(`config preprocess.image must name its "input": the model has ${ins.length} inputs (${ins.map((x) => `'${x.name}'`).join(', ')})`);
  const spec = ins.find((x) => x.name === name);
  if (!spec) throw new Error(`config preprocess.image.input '${name}' is not an input of the model (inputs ${ins.map((x) => `'${x.name}'`).join(', ')})`);
  if (spec.dims.length !== 4) throw new Error(`config preprocess.image: input '${name}' has shape ${describeDims(spec.dims)}; images need a 4-D input (NCHW or NHWC)`);
  if (spec.type === 'string' || spec.type === 'bool') throw new Error(`config preprocess.image: input '${name}' is ${spec.type}; images need a numeric input`);
  const [c, h, w] = image.layout === 'NCHW' ? [spec.dims[1]!, spec.dims[2]!, spec.dims[3]!] : [spec.dims[3]!, spec.dims[1]!, spec.dims[2]!];
  const channels = image.channels === 'GRAY' ? 1 : 3;
  if (c >= 0 && c !== channels) throw new Error(`config preprocess.image: input '${name}' takes ${c} channels (${image.layout}) but channels is ${image.channels}`);
  if (image.resize && ((w >= 0 && w !== image.resize[0]) || (h >= 0 && h !== image.resize[1]))) {
    throw new Error(`config preprocess.image.resize [${image.resize.join(', ')}] does not fit input '${name}' of shape ${describeDims(spec.dims)} (${image.layout})`);
  }
  const resize: [number, number] | null = image.resize ?? (w >= 0 && h >= 0 ? [w, h] : null);
  return { ...image, input: name, resize };
}

export function describeDims(dims: readonly number[]): string {
  return `[${dims.map((d) => (d < 0 ? 'N' : String(d))).join(',')}]`;
}
