import { badRequest } from '../errors.js';
import { bytesPerElement, typedView, type ElementType, type TensorValues } from '../runtime/onnx/tensor.js';

/**
 * Writing JSON values into tensor storage, with the checks that give SPEC §5.3's messages.
 * `where` is a prefix such as "record 3, field 'tensor'" so every refusal names its place.
 */

/** The values each integer type holds (64-bit ones are checked as bigints). */
export const INT_RANGE: Partial<Record<ElementType, [number, number]>> = {
  int8: [-128, 127], int16: [-32768, 32767], int32: [-2147483648, 2147483647],
  uint8: [0, 255], uint16: [0, 65535], uint32: [0, 4294967295],
};

export function expectedOf(type: ElementType): string {
  if (type === 'string') return 'a string';
  if (type === 'bool') return 'a boolean';
  if (type.startsWith('float')) return 'a number';
  return type.startsWith('uint') ? 'a non-negative integer' : 'an integer';
}

/**
 * A list of values: a JSON array, or a typed array (msgpack carries tensor data as typed arrays
 * or raw bytes).
 */
export function isList(v: unknown): v is ArrayLike<unknown> {
  return Array.isArray(v) || (ArrayBuffer.isView(v) && !(v instanceof DataView));
}

/**
 * Raw little-endian bytes standing for `want` elements of `type` (a msgpack bin, numpy's
 * tobytes()), viewed as those elements; null when `v` is not bytes of exactly that size.
 */
export function bytesAsElements(v: unknown, type: ElementType, want: number): ArrayLike<unknown> | null {
  if (!(v instanceof Uint8Array) || type === 'string') return null;
  // One byte per element: for int8 the bytes are two's complement, for uint8 and bool they are the values.
  if (type === 'int8' && v.length === want) return new Int8Array(v.buffer, v.byteOffset, want);
  if (v.length === want) return null;
  const size = bytesPerElement(type);
  if (v.byteLength !== want * size) return null;
  // An unaligned view is not allowed: copy to an aligned buffer first.
  const bytes = v.byteOffset % size === 0 ? v : v.slice();
  return typedView(type, bytes.buffer, bytes.byteOffset, want) as unknown as ArrayLike<unknown>;
}

/** A value as messages name it: 'the string "…"', 'an array', 'number 5'. */
export function describeValue(v: unknown): string {
  if (v === null) return 'null';
  if (isList(v)) return 'an array';
  if (typeof v === 'string') return `the string ${JSON.stringify(v.length > 40 ? v.slice(0, 40) + '…' : v)}`;
  if (typeof v === 'object') return 'an object';
  if (typeof v === 'number' && !Number.isFinite(v)) return `${v} (out of range)`;
  return `${typeof v} ${String(v)}`;
}

function wrong(where: string, type: ElementType, v: unknown): never {
  throw badRequest(`${where}: expected ${expectedOf(type)} (${type}), got ${describeValue(v)}`, 'WrongType');
}

/**
 * The smallest magnitudes that round to ±Infinity in float32 and float16 (the largest finite value
 * plus half a unit in the last place): a number that large would reach the model as Infinity.
 */
export const F32_OVERFLOW = 3.4028235677973366e38;
export const F16_OVERFLOW = 65520;

/** A finite number too large for the element type: refused, naming the range. */
export function outOfFloatRange(where: string, type: 'float32' | 'float16', v: number): never {
  const max = type === 'float32' ? '3.4028235e38' : '65504';
  throw badRequest(`${where}: ${v} is out of range for ${type} (at most ±${max}; it would become Infinity)`, 'WrongType');
}

const BIG_RANGE = { int64: [-(2n ** 63n), 2n ** 63n - 1n], uint64: [0n, 2n ** 64n - 1n] } as const;

function bigOutOfRange(where: string, type: 'int64' | 'uint64', v: number | bigint): never {
  const [lo, hi] = BIG_RANGE[type];
  throw badRequest(`${where}: ${typeof v === 'number' ? String(BigInt(v)) : String(v)} is out of range for ${type} [${lo}, ${hi}]`, 'WrongType');
}

/** Stores one scalar value at `out[i]`, converting to the element type or refusing. */
export function putValue(out: TensorValues, i: number, type: ElementType, v: unknown, where: string): void {
  switch (type) {
    case 'float32':
    case 'float64':
      if (typeof v !== 'number' || v - v !== 0) wrong(where, type, v);
      if (type === 'float32' && (v >= F32_OVERFLOW || v <= -F32_OVERFLOW)) outOfFloatRange(where, type, v);
      (out as Float32Array)[i] = v;
      return;
    case 'float16':
      if (typeof v !== 'number' || v - v !== 0) wrong(where, type, v);
      if (v >= F16_OVERFLOW || v <= -F16_OVERFLOW) outOfFloatRange(where, type, v);
      (out as Uint16Array)[i] = toHalf(v);
      return;
    case 'string':
      if (typeof v !== 'string') wrong(where, type, v);
      (out as string[])[i] = v;
      return;
    case 'bool':
      if (typeof v === 'boolean') (out as Uint8Array)[i] = v ? 1 : 0;
      else if (v === 0 || v === 1) (out as Uint8Array)[i] = v;
      else wrong(where, type, v);
      return;
    case 'int64':
    case 'uint64': {
      // A typed array would wrap a value out of range (1e20 into int64 became 7766279631452241920).
      const [lo, hi] = BIG_RANGE[type];
      if (typeof v === 'bigint') {
        if (v < lo || v > hi) bigOutOfRange(where, type, v);
        (out as BigInt64Array)[i] = v;
        return;
      }
      if (typeof v !== 'number' || !Number.isInteger(v)) wrong(where, type, v);
      const b = BigInt(v);
      if (b < lo || b > hi) bigOutOfRange(where, type, v);
      (out as BigInt64Array)[i] = b;
      return;
    }
    default: {
      const range = INT_RANGE[type]!;
      if (typeof v !== 'number' || !Number.isInteger(v)) wrong(where, type, v);
      if (v < range[0] || v > range[1]) {
        throw badRequest(`${where}: ${v} is out of range for ${type} [${range[0]}, ${range[1]}]`, 'WrongType');
      }
      (out as Int32Array)[i] = v;
    }
  }
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** IEEE 754 binary16 bits of a number (round to nearest even). */
export function toHalf(value: number): number {
  f32[0] = value;
  const x = u32[0]!;
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let half = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const mid = 1 << (shift - 1);
    if (rem > mid || (rem === mid && (half & 1))) half++;
    return sign | half;
  }
  let half = sign | (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (half & 1))) half++;
  return half;
}

export function fromHalf(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant ? NaN : sign * Infinity;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

/** Deeper nesting than any tensor has: followed no further (a value nested without end is refused). */
const MAX_RANK = 32;

/** The shape of a (nested) JSON array value, following first elements. */
export function shapeOf(v: unknown): number[] {
  const dims: number[] = [];
  let cur = v;
  while (isList(cur)) {
    if (dims.length === MAX_RANK) throw badRequest(`a value is nested more than ${MAX_RANK} arrays deep; no tensor has that many dimensions`, 'WrongShape');
    dims.push(cur.length);
    cur = cur[0];
  }
  return dims;
}

/**
 * Copies a nested array of exactly `dims` into `out` from `offset`, refusing ragged or mis-shaped
 * values. Returns the next offset.
 */
export function putNested(out: TensorValues, offset: number, type: ElementType, v: unknown, dims: readonly number[], depth: number, where: string): number {
  if (depth === dims.length) {
    putValue(out, offset, type, v, where);
    return offset + 1;
  }
  const want = dims[depth]!;
  if (depth === dims.length - 1) v = bytesAsElements(v, type, want) ?? v;
  if (!isList(v)) {
    throw badRequest(`${where}: expected an array of ${want} at depth ${depth + 1}, got ${describeValue(v)}`, 'WrongShape');
  }
  if (v.length !== want) {
    if (v instanceof Uint8Array && type !== 'string' && bytesPerElement(type) > 1) {
      throw badRequest(`${where}: expected ${want} ${type} values (${want * bytesPerElement(type)} bytes) at depth ${depth + 1}, got ${v.length} bytes`, 'WrongShape');
    }
    throw badRequest(`${where}: expected ${want} elements at depth ${depth + 1}, got ${v.length} (ragged or wrong shape)`, 'WrongShape');
  }
  if (depth === dims.length - 1 && (type === 'float32' || type === 'float64')) {
    // The common case (a row of numbers) without a call per element.
    const arr = out as Float32Array;
    const limit = type === 'float32' ? F32_OVERFLOW : Infinity;
    for (let i = 0; i < want; i++) {
      const x = v[i];
      // x - x is NaN for ±Infinity (JSON's 1e999): a finite number is expected.
      if (typeof x !== 'number' || x - x !== 0) wrong(`${where}[${i}]`, type, x);
      if (x >= limit || x <= -limit) outOfFloatRange(`${where}[${i}]`, 'float32', x);
      arr[offset + i] = x;
    }
    return offset + want;
  }
  for (let i = 0; i < want; i++) offset = putNested(out, offset, type, v[i], dims, depth + 1, `${where}[${i}]`);
  return offset;
}
