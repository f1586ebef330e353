import type { ElementType } from './tensor.js';
import { elementCount } from './tensor.js';

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

export function buildSignature(inputs: RawIoMetadata[], outputs: RawIoMetadata[], features: string[] | null, statefulInputs: ReadonlySet<string> = new Set()): ModelSignature {
  const ins = inputs.map(ioSpec);
  const outs = outputs.map(ioSpec);
  const mergeable = [...ins, ...outs].every((s) => s.batched && s.fixedBatch < 0) && statefulInputs.size === 0;
  const single2d = ins.length === 1 && ins[0]!.dims.length === 2 && ins[0]!.rowSize > 0;
  let feats: string[] | null = null;
  if (features && single2d) {
    if (features.length !== ins[0]!.rowSize) {
      throw new Error(`config lists ${features.length} features but input '${ins[0]!.name}' has ${ins[0]!.rowSize} per row`);
    }
    feats = features;
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
  };
}

export function describeDims(dims: readonly number[]): string {
  return `[${dims.map((d) => (d < 0 ? 'N' : String(d))).join(',')}]`;
}
