/**
 * The one internal tensor type every codec decodes into and encodes from (SPEC §5.3).
 * Element types use onnxruntime's names so tensors pass to sessions without translation.
 */
export type ElementType =
  | 'float32' | 'float64' | 'float16'
  | 'int8' | 'int16' | 'int32' | 'int64'
  | 'uint8' | 'uint16' | 'uint32' | 'uint64'
  | 'bool' | 'string';

export type TypedData =
  | Float32Array | Float64Array | Uint16Array
  | Int8Array | Int16Array | Int32Array | BigInt64Array
  | Uint8Array | Uint32Array | BigUint64Array;

/**
 * Decoders write into plain arrays (a young-generation allocation) and the batcher copies each
 * batch into one typed array: a typed array per request costs a backing store and GC work that
 * showed in the request-path profile.
 */
export type StagedValues = number[] | bigint[] | string[];
export type TensorValues = TypedData | StagedValues;

export interface Tensor {
  type: ElementType;
  dims: number[];
  data: TensorValues;
}

type TypedCtor = { new (n: number): TypedData; new (buf: ArrayBufferLike, off: number, len: number): TypedData; BYTES_PER_ELEMENT: number };

const CTORS: Record<Exclude<ElementType, 'string'>, TypedCtor> = {
  float32: Float32Array as unknown as TypedCtor,
  float64: Float64Array as unknown as TypedCtor,
  float16: Uint16Array as unknown as TypedCtor, // raw IEEE half bits
  int8: Int8Array as unknown as TypedCtor,
  int16: Int16Array as unknown as TypedCtor,
  int32: Int32Array as unknown as TypedCtor,
  int64: BigInt64Array as unknown as TypedCtor,
  uint8: Uint8Array as unknown as TypedCtor,
  uint16: Uint16Array as unknown as TypedCtor,
  uint32: Uint32Array as unknown as TypedCtor,
  uint64: BigUint64Array as unknown as TypedCtor,
  bool: Uint8Array as unknown as TypedCtor,
};

export function allocate(type: ElementType, n: number): TypedData | string[] {
  return type === 'string' ? new Array<string>(n) : new CTORS[type](n);
}

export function staged(n: number): StagedValues {
  return new Array(n) as number[];
}

/** Typed storage for a worker: staged values are copied, typed ones pass as they are. */
export function toTyped(type: ElementType, data: TensorValues): TypedData | string[] {
  if (type === 'string' || !Array.isArray(data)) return data as TypedData | string[];
  const out = new CTORS[type](data.length);
  (out as Float32Array).set(data as number[]);
  return out;
}

/** Values held exactly as a tensor of `type` stores them (float32 in a Float32Array, …): usable as its storage after a copy. */
export function storedAs(values: unknown, type: ElementType): values is TypedData {
  return type !== 'string' && type !== 'bool' && type !== 'float16' && ArrayBuffer.isView(values) && values.constructor === CTORS[type];
}

export function typedView(type: Exclude<ElementType, 'string'>, buf: ArrayBufferLike, byteOffset: number, length: number): TypedData {
  return new CTORS[type](buf, byteOffset, length);
}

export function bytesPerElement(type: ElementType): number {
  return type === 'string' ? 0 : CTORS[type].BYTES_PER_ELEMENT;
}

export const isBigIntType = (t: ElementType): boolean => t === 'int64' || t === 'uint64';

/** Elements in one row of a tensor: after dimension 0 when it is batched, the whole tensor when not. */
export function rowSize(dims: readonly number[], batched: boolean): number {
  let n = 1;
  for (let k = batched ? 1 : 0; k < dims.length; k++) n *= dims[k]!;
  return n;
}

export function elementCount(dims: readonly number[]): number {
  let n = 1;
  for (let i = 0; i < dims.length; i++) n *= dims[i]!;
  return n;
}
