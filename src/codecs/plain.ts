import { elementCount, rowSize, type Tensor } from '../runtime/onnx/tensor.js';
import { fromHalf } from './values.js';

/**
 * Tensor values → plain values (numbers, strings, booleans, nested arrays), the value-tree twin of
 * jsonvalues.ts for encodings that are not JSON text (msgpack). int64 stays a bigint, which
 * msgpack writes as an integer.
 */

function scalar(t: Tensor, i: number): unknown {
  switch (t.type) {
    case 'bool':
      return (t.data as Uint8Array)[i] !== 0;
    case 'float16':
      return fromHalf((t.data as Uint16Array)[i]!);
    default:
      return (t.data as ArrayLike<unknown>)[i];
  }
}

function nested(t: Tensor, off: number, dims: readonly number[], depth: number): unknown[] {
  const n = dims[depth]!;
  const out = new Array<unknown>(n);
  if (depth === dims.length - 1) {
    for (let i = 0; i < n; i++) out[i] = scalar(t, off + i);
  } else {
    const stride = elementCount(dims.slice(depth + 1));
    for (let i = 0; i < n; i++) out[i] = nested(t, off + i * stride, dims, depth + 1);
  }
  return out;
}

/** Row `r` of an output (dimension 0 is the batch); a one-element row is a scalar when asked. */
export function rowValue(t: Tensor, r: number, batched: boolean, scalarIfOne: boolean): unknown {
  const dims = t.dims;
  const first = batched ? 1 : 0;
  const size = rowSize(dims, batched);
  const off = batched ? r * size : 0;
  if (dims.length === first) return scalarIfOne ? scalar(t, off) : [scalar(t, off)];
  if (size === 1 && scalarIfOne) return scalar(t, off);
  return nested(t, off, dims, first);
}

/** `count` elements from `from`, flat (Open Inference Protocol `data`). */
export function flatValue(t: Tensor, from: number, count: number): unknown[] {
  const out = new Array<unknown>(count);
  for (let i = 0; i < count; i++) out[i] = scalar(t, from + i);
  return out;
}

/**
 * A decoded msgpack value made plain for echoing: typed arrays (msgpackr's extension, which other
 * msgpack libraries cannot read) become arrays; bins stay bytes when `keepBytes` (a msgpack answer
 * gives a client back the bytes it sent) and become arrays of byte values in JSON.
 */
export function plainOf(v: unknown, keepBytes: boolean): unknown {
  if (ArrayBuffer.isView(v)) {
    if (keepBytes && v instanceof Uint8Array) return v;
    return v instanceof DataView ? [] : Array.from(v as unknown as ArrayLike<unknown>);
  }
  if (Array.isArray(v)) return v.map((x) => plainOf(x, keepBytes));
  if (typeof v === 'object' && v !== null) {
    const out: Record<string, unknown> = {};
    for (const k of Object.keys(v)) out[k] = plainOf((v as Record<string, unknown>)[k], keepBytes);
    return out;
  }
  return v;
}
