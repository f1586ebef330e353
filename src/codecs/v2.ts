import { badRequest } from '../errors.js';
import type { IoSpec, ModelSignature } from '../runtime/onnx/signature.js';
import { describeDims } from '../runtime/onnx/signature.js';
import { bytesPerElement, elementCount, staged, storedAs, typedView, type ElementType, type Tensor } from '../runtime/onnx/tensor.js';
import type { InferResult } from '../runtime/types.js';
import { flatJson } from './jsonvalues.js';
import type { Codec, Decoded, Encoded, ServedBy, WireFormat } from './types.js';
import { flatValue } from './plain.js';
import { bytesAsElements, isList, putNested, putValue, shapeOf } from './values.js';

/**
 * Open Inference Protocol (KServe / Triton v2), JSON and the binary tensor data extension, which
 * Triton's and KServe's own clients use by default.
 */

const TO_ORT: Record<string, ElementType> = {
  BOOL: 'bool', UINT8: 'uint8', UINT16: 'uint16', UINT32: 'uint32', UINT64: 'uint64',
  INT8: 'int8', INT16: 'int16', INT32: 'int32', INT64: 'int64',
  FP16: 'float16', FP32: 'float32', FP64: 'float64', BYTES: 'string',
};
const FROM_ORT: Record<ElementType, string> = Object.fromEntries(Object.entries(TO_ORT).map(([k, v]) => [v, k])) as Record<ElementType, string>;

export const v2Datatype = (t: ElementType): string => FROM_ORT[t];

interface RequestedOutput { index: number; binary: boolean }
interface V2State { id: string | number | undefined; outputs: RequestedOutput[] }

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !isList(v);

export const openInference: Codec & { decode(body: Record<string, unknown>, sig: ModelSignature, reply: WireFormat, binary?: Uint8Array): Decoded } = {
  name: 'v2',

  decode(body, sig, reply, binary) {
    const { inputs } = body;
    if (!Array.isArray(inputs) || inputs.length === 0) throw badRequest(`'inputs' must be a non-empty array of {"name", "shape", "datatype", "data"}`, 'WrongShape');
    // The protocol's id is a string; a number (a WebSocket client counting its messages) is echoed as given.
    const id = body['id'];
    if (id !== undefined && typeof id !== 'string' && typeof id !== 'number') throw badRequest(`'id' must be a string (or a number), got ${id === null ? 'null' : typeof id}`, 'WrongShape');
    const tensors: (Tensor | undefined)[] = new Array(sig.inputs.length);
    let rows = -1;
    let fixedRows = -1;
    let binaryOffset = 0;
    for (let k = 0; k < inputs.length; k++) {
      const inp = inputs[k];
      const where = `inputs[${k}]`;
      if (!isObject(inp)) throw badRequest(`${where}: expected an object with "name", "shape", "datatype" and "data"`, 'WrongShape');
      const { name, shape, datatype } = inp;
      if (typeof name !== 'string') throw badRequest(`${where}: 'name' must be a string`, 'WrongShape');
      const idx = sig.inputIndex.get(name);
      if (idx === undefined) throw badRequest(`${where}: unknown input '${name}'; the model takes ${sig.inputs.map((s) => `'${s.name}'`).join(', ')}`, 'UnknownInput');
      if (tensors[idx]) throw badRequest(`${where}: input '${name}' is given twice`, 'DuplicateField');
      const spec = sig.inputs[idx]!;
      const label = `${where} ('${name}')`;
      if (typeof datatype !== 'string' || TO_ORT[datatype] === undefined) {
        throw badRequest(`${label}: unknown datatype ${JSON.stringify(datatype)}; expected one of ${Object.keys(TO_ORT).join(', ')}`, 'WrongType');
      }
      if (TO_ORT[datatype] !== spec.type) throw badRequest(`${label}: datatype ${datatype} does not match the model's ${FROM_ORT[spec.type]}`, 'WrongType');
      const dims = checkShape(shape, spec, label);
      const params = isObject(inp['parameters']) ? inp['parameters'] : undefined;
      const binarySize = params?.['binary_data_size'];
      let tensor: Tensor;
      if (binarySize !== undefined) {
        if (inp['data'] !== undefined) throw badRequest(`${label}: give its values either in 'data' or in the binary part ('binary_data_size'), not both`, 'WrongShape');
        if (!binary) throw badRequest(`${label}: 'binary_data_size' given but the request has no binary part (Inference-Header-Content-Length)`, 'WrongShape');
        if (typeof binarySize !== 'number' || !Number.isInteger(binarySize) || binarySize < 0) throw badRequest(`${label}: 'binary_data_size' must be a non-negative integer`, 'WrongShape');
        if (binaryOffset + binarySize > binary.length) {
          throw badRequest(`${label}: 'binary_data_size' ${binarySize} runs past the end of the binary part (${binary.length - binaryOffset} bytes left)`, 'WrongShape');
        }
        tensor = fromBinary(spec.type, dims, binary.subarray(binaryOffset, binaryOffset + binarySize), label);
        binaryOffset += binarySize;
      } else {
        tensor = fromJson(spec.type, dims, inp['data'], label);
      }
      // Rows are counted on inputs whose dimension 0 is symbolic; a fixed one (Silero VAD's
      // state [2,N,128]) is not a batch of requests.
      if (spec.batched && spec.fixedBatch < 0) {
        if (rows >= 0 && dims[0] !== rows) throw badRequest(`${label}: batch size ${dims[0]} differs from the other inputs' ${rows}`, 'WrongShape');
        rows = dims[0]!;
      } else if (spec.fixedBatch > 0 && fixedRows < 0) {
        fixedRows = spec.fixedBatch;
      }
      tensors[idx] = tensor;
    }
    const missing = sig.inputs.filter((_, i) => !tensors[i]).map((s) => `'${s.name}'`);
    if (missing.length) throw badRequest(`missing input ${missing.join(', ')}; the model takes ${sig.inputs.map((s) => `'${s.name}'`).join(', ')}`, 'MissingInput');
    if (binary && binaryOffset !== binary.length) {
      throw badRequest(`the binary part has ${binary.length - binaryOffset} bytes that no input's 'binary_data_size' accounts for`, 'WrongShape');
    }
    if (rows === 0) throw badRequest(`the batch is empty (dimension 0 is 0)`, 'Empty');
    if (rows < 0) rows = fixedRows > 0 ? fixedRows : 1;
    const state: V2State = { id: id as string | number | undefined, outputs: requestedOutputs(body, sig) };
    return { codec: openInference, request: { inputs: tensors as Tensor[], rows }, state, reply };
  },

  encode(decoded: Decoded, result: InferResult, sig: ModelSignature, by: ServedBy): Encoded {
    const state = decoded.state as V2State;
    const parts: Uint8Array[] = [];
    let s = `{"model_name":${JSON.stringify(by.modelName)},"model_version":${JSON.stringify(by.modelVersion)}`;
    if (state.id !== undefined) s += `,"id":${JSON.stringify(state.id)}`;
    s += ',"outputs":[';
    state.outputs.forEach(({ index, binary }, k) => {
      const t = result.outputs[index]!;
      const { dims, from, count } = ownPart(decoded, result, sig, index);
      s += `${k ? ',' : ''}{"name":${sig.outputKeysJson[index]},"datatype":"${FROM_ORT[t.type]}","shape":${JSON.stringify(dims)}`;
      if (binary) {
        const bytes = toBinary(t, from, count);
        parts.push(bytes);
        s += `,"parameters":{"binary_data_size":${bytes.length}}}`;
      } else {
        s += `,"data":${flatJson(t, from, count)}}`;
      }
    });
    s += ']}';
    if (parts.length === 0) return { body: s, contentType: 'application/json' };
    const header = Buffer.from(s);
    return {
      body: Buffer.concat([header, ...parts]),
      contentType: 'application/octet-stream',
      headers: { 'Inference-Header-Content-Length': String(header.length) },
    };
  },

  value(decoded: Decoded, result: InferResult, sig: ModelSignature, by: ServedBy): unknown {
    const state = decoded.state as V2State;
    const outputs = state.outputs.map(({ index }) => {
      const t = result.outputs[index]!;
      const { dims, from, count } = ownPart(decoded, result, sig, index);
      return { name: sig.outputs[index]!.name, datatype: FROM_ORT[t.type], shape: dims, data: flatValue(t, from, count) };
    });
    return { model_name: by.modelName, model_version: by.modelVersion, ...(state.id !== undefined ? { id: state.id } : {}), outputs };
  },
};

/** This request's part of output `index`: its own rows of a merged batch, or the whole tensor. */
function ownPart(decoded: Decoded, result: InferResult, sig: ModelSignature, index: number): { dims: number[]; from: number; count: number } {
  const t = result.outputs[index]!;
  const rows = decoded.request.rows;
  const sliced = sig.outputs[index]!.batched && !result.whole;
  const dims = sliced ? [rows, ...t.dims.slice(1)] : t.dims;
  const count = elementCount(dims);
  return { dims, from: sliced ? result.offset * (count / Math.max(rows, 1)) : 0, count };
}

function checkShape(shape: unknown, spec: IoSpec, label: string): number[] {
  if (!Array.isArray(shape) || !shape.every((d) => Number.isInteger(d) && d >= 0)) {
    throw badRequest(`${label}: 'shape' must be an array of non-negative integers`, 'WrongShape');
  }
  const ok = shape.length === spec.dims.length && spec.dims.every((d, i) => d < 0 || d === shape[i]);
  if (!ok) throw badRequest(`${label}: shape ${describeDims(shape)} does not fit the model's ${describeDims(spec.dims)}`, 'WrongShape');
  return shape as number[];
}

function fromJson(type: ElementType, dims: number[], data: unknown, label: string): Tensor {
  const n = elementCount(dims);
  data = bytesAsElements(data, type, n) ?? data;
  if (!isList(data)) throw badRequest(`${label}: 'data' must be an array (flat or nested to the shape)`, 'WrongShape');
  if (data.length === n && storedAs(data, type)) {
    // A typed array of the input's own element type (msgpack) is the tensor's storage, copied once.
    return { type, dims, data: data.slice() };
  }
  // Storage is sized only once the data is known to fill the shape: a shape is the client's word.
  if (data.length === n && (n === 0 || !isList(data[0]))) {
    const out = staged(n);
    for (let i = 0; i < n; i++) putValue(out, i, type, data[i], `${label} data[${i}]`);
    return { type, dims, data: out };
  }
  if (dims.length > 1 && isList(data[0]) && data.length === dims[0]) {
    const got = shapeOf(data);
    if (got.length === dims.length && got.every((d, i) => d === dims[i])) {
      const out = staged(n);
      putNested(out, 0, type, data, dims, 0, `${label} data`);
      return { type, dims, data: out };
    }
  }
  if (data instanceof Uint8Array && type !== 'string' && bytesPerElement(type) > 1) {
    // Raw bytes (a msgpack bin): counted in bytes, not as that many elements.
    throw badRequest(`${label}: 'data' holds ${data.length} bytes but shape ${describeDims(dims)} of ${FROM_ORT[type]} needs ${n * bytesPerElement(type)} (${n} × ${bytesPerElement(type)})`, 'WrongShape');
  }
  if (isList(data[0])) {
    throw badRequest(`${label}: 'data' is nested as ${describeDims(shapeOf(data))}, which is not shape ${describeDims(dims)}; send it nested to the shape, or flat with ${n} elements`, 'WrongShape');
  }
  throw badRequest(`${label}: 'data' has ${data.length} elements but shape ${describeDims(dims)} needs ${n}`, 'WrongShape');
}

function fromBinary(type: ElementType, dims: number[], bytes: Uint8Array, label: string): Tensor {
  const n = elementCount(dims);
  if (type === 'string') {
    const out: string[] = [];
    let off = 0;
    while (off < bytes.length) {
      if (off + 4 > bytes.length) throw badRequest(`${label}: BYTES element ${out.length} has a truncated length prefix`, 'WrongShape');
      const len = bytes[off]! | (bytes[off + 1]! << 8) | (bytes[off + 2]! << 16) | (bytes[off + 3]! << 24);
      off += 4;
      if (len < 0 || off + len > bytes.length) throw badRequest(`${label}: BYTES element ${out.length} runs past its binary data`, 'WrongShape');
      out.push(Buffer.from(bytes.buffer, bytes.byteOffset + off, len).toString('utf8'));
      off += len;
    }
    if (out.length !== n) throw badRequest(`${label}: binary data holds ${out.length} BYTES elements but shape ${describeDims(dims)} needs ${n}`, 'WrongShape');
    return { type, dims, data: out };
  }
  const want = n * bytesPerElement(type);
  if (bytes.length !== want) throw badRequest(`${label}: binary_data_size is ${bytes.length} bytes but shape ${describeDims(dims)} of ${FROM_ORT[type]} needs ${want}`, 'WrongShape');
  // Copy into a fresh, aligned buffer: the body's offset need not be aligned, and the buffer moves to a worker.
  const copy = new Uint8Array(want);
  copy.set(bytes);
  return { type, dims, data: typedView(type, copy.buffer, 0, n) };
}

function toBinary(t: Tensor, from: number, count: number): Uint8Array {
  if (t.type === 'string') {
    const chunks = (t.data as string[]).slice(from, from + count).flatMap((s) => {
      const b = Buffer.from(s, 'utf8');
      const len = Buffer.alloc(4);
      len.writeUInt32LE(b.length);
      return [len, b];
    });
    return Buffer.concat(chunks);
  }
  const d = t.data as Uint8Array;
  const size = bytesPerElement(t.type);
  return new Uint8Array(d.buffer, d.byteOffset + from * size, count * size);
}

function requestedOutputs(body: Record<string, unknown>, sig: ModelSignature): RequestedOutput[] {
  const params = isObject(body['parameters']) ? body['parameters'] : undefined;
  const allBinary = params?.['binary_data_output'] === true;
  const outs = body['outputs'];
  // None requested (absent, or an empty list as clients build it): every output, as Triton does.
  if (outs === undefined || (Array.isArray(outs) && outs.length === 0)) return sig.outputs.map((_, index) => ({ index, binary: allBinary }));
  if (!Array.isArray(outs)) throw badRequest(`'outputs' must be an array of {"name"}`, 'WrongShape');
  const seen = new Set<number>();
  return outs.map((o, k) => {
    if (!isObject(o) || typeof o['name'] !== 'string') throw badRequest(`outputs[${k}]: expected {"name": "<output>"}`, 'WrongShape');
    const index = sig.outputIndex.get(o['name']);
    if (index === undefined) throw badRequest(`outputs[${k}]: unknown output '${o['name']}'; the model gives ${sig.outputs.map((s) => `'${s.name}'`).join(', ')}`, 'UnknownOutput');
    if (seen.has(index)) throw badRequest(`outputs[${k}]: output '${o['name']}' is requested twice`, 'DuplicateField');
    seen.add(index);
    const p = isObject(o['parameters']) ? o['parameters'] : undefined;
    return { index, binary: p?.['binary_data'] === true || (p?.['binary_data'] === undefined && allBinary) };
  });
}
