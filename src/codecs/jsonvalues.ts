import { elementCount, rowSize, type Tensor } from '../runtime/onnx/tensor.js';
import { fromHalf } from './values.js';

/**
 * Tensor values → JSON text, written by hand: JSON.stringify cannot take typed arrays, and
 * converting each row to a plain array first costs an allocation per row on the hot path.
 */

function scalar(t: Tensor, i: number): string {
  switch (t.type) {
    case 'string':
      return JSON.stringify((t.data as string[])[i]);
    case 'bool':
      return (t.data as Uint8Array)[i] ? 'true' : 'false';
    case 'int64':
    case 'uint64':
      return String((t.data as BigInt64Array)[i]);
    case 'float16':
      return num(fromHalf((t.data as Uint16Array)[i]!));
    default:
      return num((t.data as Float32Array)[i]!);
  }
}

const num = (x: number): string => (Number.isFinite(x) ? String(x) : 'null');

function nested(t: Tensor, off: number, dims: readonly number[], depth: number): string {
  const n = dims[depth]!;
  let s = '[';
  if (depth === dims.length - 1) {
    for (let i = 0; i < n; i++) s += (i ? ',' : '') + scalar(t, off + i);
  } else {
    const stride = elementCount(dims.slice(depth + 1));
    for (let i = 0; i < n; i++) s += (i ? ',' : '') + nested(t, off + i * stride, dims, depth + 1);
  }
  return s + ']';
}

/** Row `r` of an output (dimension 0 is the batch); a one-element row is a scalar when asked. */
export function rowJson(t: Tensor, r: number, batched: boolean, scalarIfOne: boolean): string {
  const dims = t.dims;
  const first = batched ? 1 : 0;
  const size = rowSize(dims, batched);
  const off = batched ? r * size : 0;
  if (dims.length === first) return scalarIfOne ? scalar(t, off) : `[${scalar(t, off)}]`;
  if (size === 1 && scalarIfOne) return scalar(t, off);
  return nested(t, off, dims, first);
}

/** `count` elements from `from`, flat (Open Inference Protocol `data`). */
export function flatJson(t: Tensor, from: number, count: number): string {
  let s = '[';
  for (let i = 0; i < count; i++) s += (i ? ',' : '') + scalar(t, from + i);
  return s + ']';
}

/** A whole tensor (or a run of its rows, by `dims` and `off`) as nested JSON arrays. */
export function tensorJson(t: Tensor, dims: readonly number[], off: number): string {
  return dims.length === 0 ? scalar(t, off) : nested(t, off, dims, 0);
}
