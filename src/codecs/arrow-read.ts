import { DataType, Precision, Type, makeVector, type Data, type Vector } from 'apache-arrow';
import { badRequest } from '../errors.js';
import type { ElementType, TypedData } from '../runtime/onnx/tensor.js';
import { F16_OVERFLOW, F32_OVERFLOW, fromHalf, INT_RANGE, toHalf, outOfFloatRange } from './values.js';

/**
 * Arrow column values → tensor storage. Numeric leaves are copied by typed-array copies
 * (`set`/`slice`, which also convert between number types natively); a JavaScript loop runs only
 * where a value must be checked (a narrowing integer range), converted by hand (64-bit integers,
 * half floats, booleans) or scattered (named features), and for strings.
 */

/** How a leaf column's values are stored, which decides what they may feed. */
export type LeafKind = 'float' | 'half' | 'int' | 'int64' | 'bool' | 'string' | 'other';

export function leafKind(t: DataType): LeafKind {
  switch (t.typeId) {
    case Type.Float:
      return (t as DataType<Type.Float> & { precision: Precision }).precision === Precision.HALF ? 'half' : 'float';
    case Type.Int:
      return (t as unknown as { bitWidth: number }).bitWidth === 64 ? 'int64' : 'int';
    case Type.Bool:
      return 'bool';
    case Type.Utf8:
    case Type.LargeUtf8:
    case Type.Utf8View:
      return 'string';
    case Type.Dictionary: {
      // pandas categoricals arrive as dictionaries of strings.
      const v = (t as unknown as { dictionary: DataType }).dictionary;
      return leafKind(v) === 'string' ? 'string' : 'other';
    }
    default:
      return 'other';
  }
}

const ACCEPTS: Record<ElementType, readonly LeafKind[]> = {
  float32: ['float', 'half', 'int', 'int64'],
  float64: ['float', 'half', 'int', 'int64'],
  float16: ['float', 'half', 'int', 'int64'],
  int8: ['int', 'int64'], int16: ['int', 'int64'], int32: ['int', 'int64'],
  uint8: ['int', 'int64'], uint16: ['int', 'int64'], uint32: ['int', 'int64'],
  int64: ['int', 'int64'], uint64: ['int', 'int64'],
  bool: ['bool', 'int'],
  string: ['string'],
};

export const accepts = (type: ElementType, kind: LeafKind): boolean => ACCEPTS[type].includes(kind);

/** What a column feeding `type` should hold, for messages. */
export function expectedColumn(type: ElementType): string {
  if (type === 'string') return 'strings (a Utf8 column)';
  if (type === 'bool') return 'booleans (a Bool column)';
  if (type.startsWith('float')) return 'numbers (a Float or Int column)';
  return `integers (an Int column${type.startsWith('uint') ? ' of non-negative values' : ''})`;
}


/** An Int leaf whose every value fits `type`, so a plain typed-array copy needs no check. */
function intFits(leaf: DataType, type: ElementType): boolean {
  const { bitWidth, isSigned } = leaf as unknown as { bitWidth: number; isSigned: boolean };
  const range = INT_RANGE[type];
  if (!range) return false;
  const bits = Math.log2(range[1] - range[0] + 1);
  const signed = range[0] < 0;
  if (signed) return isSigned ? bitWidth <= bits : bitWidth < bits;
  return !isSigned && bitWidth <= bits;
}

/** Where a refused value lies: the message prefix for leaf element i. */
export type Where = (i: number) => string;

function outOfRange(where: string, v: number | bigint, type: ElementType): never {
  const range = INT_RANGE[type];
  const bounds = range ? `[${range[0]}, ${range[1]}]` : type === 'uint64' ? '[0, 18446744073709551615]' : '[-9223372036854775808, 9223372036854775807]';
  throw badRequest(`${where}: ${v} is out of range for ${type} ${bounds}`, 'WrongType');
}

const vectors = new WeakMap<Data, Vector>();

/** A vector over one leaf, for strings (Utf8, LargeUtf8, Utf8View, dictionaries), made once per leaf. */
export function vectorOf(d: Data): Vector {
  let v = vectors.get(d);
  if (!v) vectors.set(d, (v = makeVector(d)));
  return v;
}

const bit = (d: Data, i: number): number => {
  const k = d.offset + i;
  return ((d.values as Uint8Array)[k >> 3]! >> (k & 7)) & 1;
};

const MAX_I64 = (1n << 63n) - 1n;

/**
 * Copies leaf elements [start, start + count) into `out` at outOff, outOff + stride, … as `type`.
 * The leaf's kind was checked with `accepts` already.
 */
export function copyLeaf(leaf: Data, kind: LeafKind, start: number, count: number, type: ElementType, out: TypedData | string[], outOff: number, stride: number, where: Where): void {
  const end = start + count;
  const src = leaf.values as TypedData;
  if (kind === 'string') {
    const v = vectorOf(leaf);
    const o = out as string[];
    for (let i = start, k = outOff; i < end; i++, k += stride) {
      const s = v.get(i) as unknown;
      // A dictionary may hold nulls, or (corrupt) indices past its end.
      if (typeof s !== 'string') throw badRequest(`${where(i)}: expected a string (string), got ${s === null || s === undefined ? 'null' : typeof s}`, 'WrongType');
      o[k] = s;
    }
    return;
  }
  if (kind === 'bool') {
    const o = out as Uint8Array;
    for (let i = start, k = outOff; i < end; i++, k += stride) o[k] = bit(leaf, i);
    return;
  }
  switch (type) {
    case 'float32':
    case 'float64': {
      const o = out as Float32Array;
      if (kind === 'half') for (let i = start, k = outOff; i < end; i++, k += stride) o[k] = fromHalf((src as Uint16Array)[i]!);
      else if (kind === 'int64') for (let i = start, k = outOff; i < end; i++, k += stride) o[k] = Number((src as BigInt64Array)[i]!);
      else if (stride === 1) o.set((src as Float64Array).subarray(start, end), outOff); // native conversion from any number type
      else for (let i = start, k = outOff; i < end; i++, k += stride) o[k] = (src as Float64Array)[i]!;
      // Doubles too large for float32 would reach the model as Infinity (Infinity and NaN sent as such pass).
      if (type === 'float32' && src instanceof Float64Array) {
        for (let i = start; i < end; i++) {
          const x = src[i]!;
          if (x - x === 0 && (x >= F32_OVERFLOW || x <= -F32_OVERFLOW)) outOfFloatRange(where(i), 'float32', x);
        }
      }
      return;
    }
    case 'float16': {
      const o = out as Uint16Array;
      if (kind === 'half' && stride === 1) o.set((src as Uint16Array).subarray(start, end), outOff);
      else if (kind === 'half') for (let i = start, k = outOff; i < end; i++, k += stride) o[k] = (src as Uint16Array)[i]!;
      else {
        for (let i = start, k = outOff; i < end; i++, k += stride) {
          const x = Number((src as Float64Array)[i]!);
          // Finite values too large for float16 would reach the model as Infinity.
          if (x - x === 0 && (x >= F16_OVERFLOW || x <= -F16_OVERFLOW)) outOfFloatRange(where(i), 'float16', x);
          o[k] = toHalf(x);
        }
      }
      return;
    }
    case 'bool': {
      // An Int column of 0 and 1.
      const o = out as Uint8Array;
      for (let i = start, k = outOff; i < end; i++, k += stride) {
        const v = Number((src as Int32Array)[i]!);
        if (v !== 0 && v !== 1) throw badRequest(`${where(i)}: expected a boolean (bool), got ${v}; an Int column feeding a bool input holds 0 and 1`, 'WrongType');
        o[k] = v;
      }
      return;
    }
    case 'int64':
    case 'uint64': {
      const o = out as BigInt64Array;
      const signedSrc = (leaf.type as unknown as { isSigned: boolean }).isSigned;
      if (kind === 'int64' && signedSrc === (type === 'int64') && stride === 1) {
        o.set((src as BigInt64Array).subarray(start, end), outOff);
        return;
      }
      for (let i = start, k = outOff; i < end; i++, k += stride) {
        const v = kind === 'int64' ? (src as BigInt64Array)[i]! : BigInt((src as Int32Array)[i]!);
        if (type === 'uint64' ? v < 0n : v > MAX_I64) outOfRange(where(i), v, type);
        o[k] = v;
      }
      return;
    }
    default: {
      const o = out as Int32Array;
      if (kind === 'int' && intFits(leaf.type, type)) {
        if (stride === 1) o.set((src as Int32Array).subarray(start, end), outOff);
        else for (let i = start, k = outOff; i < end; i++, k += stride) o[k] = (src as Int32Array)[i]!;
        return;
      }
      const [lo, hi] = INT_RANGE[type]!;
      for (let i = start, k = outOff; i < end; i++, k += stride) {
        const v = Number((src as Int32Array)[i]!);
        if (v < lo || v > hi) outOfRange(where(i), (src as Int32Array)[i]!, type);
        o[k] = v;
      }
    }
  }
}

/** Enough buffer behind a leaf's elements [start, start + count): a corrupt or cut body is refused, not read past. */
export function leafComplete(leaf: Data, kind: LeafKind, start: number, count: number): boolean {
  const end = start + count;
  switch (leaf.type.typeId) {
    case Type.Bool:
      return (leaf.values as Uint8Array).length * 8 >= leaf.offset + end;
    case Type.Utf8:
    case Type.LargeUtf8: {
      const offs = leaf.valueOffsets as Int32Array | BigInt64Array;
      if (offs.length < end + 1) return false;
      return Number(offs[end]!) <= (leaf.values as Uint8Array).length;
    }
    case Type.Utf8View:
      return true;
    default:
      // Fixed-width values, and a dictionary's indices.
      return kind === 'other' || ((leaf.values as TypedData | undefined)?.length ?? 0) >= end;
  }
}

/**
 * The first null among elements [start, start + count) of `d`: -1 when there is none, -2 when its
 * validity bitmap is too short to say (corrupt data), so a scan never runs past the bitmap.
 */
export function firstNull(d: Data, start: number, count: number): number {
  if (d.type.typeId === Type.Null) return count > 0 ? start : -1;
  if (d.nullCount <= 0) return -1;
  const bitmap = d.nullBitmap as Uint8Array | undefined;
  if (!bitmap || bitmap.length * 8 < d.offset + start + count) return -2;
  for (let i = start; i < start + count; i++) {
    const k = d.offset + i;
    if (!((bitmap[k >> 3]! >> (k & 7)) & 1)) return i;
  }
  return -1;
}

export function describeType(t: DataType): string {
  return String(t);
}
