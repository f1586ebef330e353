import {
  Bool, BufferType, Field, FixedSizeList, Float16, Float32, Float64, Int16, Int32, Int64, Int8, List, Null,
  TimestampMillisecond, Uint16, Uint32, Uint64, Uint8, Utf8, makeData, type Data, type DataType,
} from 'apache-arrow';
import { allocate, elementCount, type ElementType, type Tensor, type TypedData } from '../runtime/onnx/tensor.js';

/**
 * Tensors → Arrow columns for answers. Values go into Data by reference where they are already
 * typed arrays (a subarray of the batch's output is this request's rows; tableToIPC copies it
 * once into the answer); booleans are bit-packed and strings UTF-8 encoded, which takes a loop.
 */

const ARROW_TYPE: Record<ElementType, () => DataType> = {
  float32: () => new Float32(), float64: () => new Float64(), float16: () => new Float16(),
  int8: () => new Int8(), int16: () => new Int16(), int32: () => new Int32(), int64: () => new Int64(),
  uint8: () => new Uint8(), uint16: () => new Uint16(), uint32: () => new Uint32(), uint64: () => new Uint64(),
  bool: () => new Bool(), string: () => new Utf8(),
};

/** Elements [from, from + count) of a tensor's storage as the element type's typed array (or strings). */
function valuesOf(t: Tensor, from: number, count: number): TypedData | string[] {
  const d = t.data;
  if (t.type === 'string' || t.type === 'bool') return Array.prototype.slice.call(d, from, from + count) as string[];
  if (!Array.isArray(d)) return (d as TypedData).subarray(from, from + count) as TypedData;
  // Staged values (a JSON request's plain numbers): one typed copy.
  const out = allocate(t.type, count) as Float64Array;
  for (let i = 0; i < count; i++) out[i] = (d as number[])[from + i]!;
  return out;
}

function leafData(type: ElementType, values: TypedData | string[] | ArrayLike<unknown>, count: number): Data {
  if (type === 'string') return utf8Data(values as string[], count);
  if (type === 'bool') {
    const bits = new Uint8Array((count + 7) >> 3);
    for (let i = 0; i < count; i++) if (values[i]) bits[i >> 3]! |= 1 << (i & 7);
    return makeData({ type: new Bool(), length: count, data: bits });
  }
  return makeData({ type: ARROW_TYPE[type]() as Float32, length: count, data: values as Float32Array });
}

function utf8Data(values: string[], count: number): Data {
  const offsets = new Int32Array(count + 1);
  let bytes = 0;
  for (let i = 0; i < count; i++) {
    bytes += Buffer.byteLength(values[i] ?? '', 'utf8');
    offsets[i + 1] = bytes;
  }
  const data = Buffer.allocUnsafe(bytes);
  for (let i = 0; i < count; i++) data.write(values[i] ?? '', offsets[i]!, 'utf8');
  return makeData({ type: new Utf8(), length: count, valueOffsets: offsets, data: new Uint8Array(data.buffer, data.byteOffset, bytes) });
}

/** Wraps `count` leaf elements into rows of `rowDims`, as nested fixed-size lists (outermost first). */
function nest(leaf: Data, rowDims: readonly number[], rows: number): Data {
  let d = leaf;
  let n = leaf.length;
  for (let k = rowDims.length - 1; k >= 0; k--) {
    const size = rowDims[k]!;
    n = size === 0 ? rows * elementCount(rowDims.slice(0, k)) : n / size;
    d = makeData({ type: new FixedSizeList(size, new Field('item', d.type, true)), length: n, child: d });
  }
  return d;
}

export interface ColumnPlan {
  /** Each table row takes its own row of the tensor (dimension 0), from row `offset`; else every row repeats the whole tensor. */
  perRow: boolean;
  offset: number;
  /** A row of a 1-D tensor (one value) is a one-element list rather than a scalar. */
  listIfScalar: boolean;
}

/**
 * A column of `rows` table rows from a tensor: each row the tensor's row (or the whole tensor) as
 * nested fixed-size lists of its shape. A tensor whose storage is gone (moved to the model's
 * worker) gives a column of nulls of the same type.
 */
export function tensorColumn(t: Tensor, rows: number, plan: ColumnPlan): Data {
  let rowDims = plan.perRow ? t.dims.slice(1) : t.dims;
  const rowSize = elementCount(rowDims);
  const count = rows * rowSize;
  const from = plan.perRow ? plan.offset * rowSize : 0;
  const available = t.data.length >= from + (plan.perRow ? count : rowSize);
  let values: TypedData | string[];
  if (!available) values = allocate(t.type, count);
  else if (plan.perRow) values = valuesOf(t, from, count);
  else values = repeat(valuesOf(t, 0, rowSize), rows, rowSize, t.type);
  if (plan.listIfScalar && rowDims.length === 0) rowDims = [1];
  const col = nest(leafData(t.type, values, count), rowDims, rows);
  if (available) return col;
  const buffers = col.buffers;
  buffers[BufferType.VALIDITY] = new Uint8Array((rows + 7) >> 3);
  return col.clone(col.type, 0, rows, rows, buffers);
}

function repeat(row: TypedData | string[], rows: number, rowSize: number, type: ElementType): TypedData | string[] {
  const out = allocate(type, rows * rowSize);
  if (Array.isArray(out)) {
    for (let r = 0; r < rows; r++) for (let k = 0; k < rowSize; k++) out[r * rowSize + k] = (row as string[])[k]!;
  } else {
    for (let r = 0; r < rows; r++) (out as Float32Array).set(row as Float32Array, r * rowSize);
  }
  return out;
}

/** `time`: one timestamp (ms) for every row. */
export function timeColumn(rows: number, ms: number): Data {
  return makeData({ type: new TimestampMillisecond(), length: rows, data: new BigInt64Array(rows).fill(BigInt(ms)) });
}

const NULL_ITEM = new Field('item', new Null(), true);

/** `check_failures`: an empty list per row (list<null>, what pyarrow makes of empty lists). */
export function checkFailuresColumn(rows: number): Data {
  return makeData({ type: new List(NULL_ITEM), length: rows, valueOffsets: new Int32Array(rows + 1), child: makeData({ type: new Null(), length: 0 }) });
}
