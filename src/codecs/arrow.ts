import { Field, RecordBatch, Schema, Struct, Table, Type, makeData, tableFromIPC, tableToIPC, type Data, type DataType } from 'apache-arrow';
import { badRequest } from '../errors.js';
import { describeDims, type IoSpec, type ModelSignature } from '../runtime/onnx/signature.js';
import { allocate, storedAs, type Tensor, type TypedData } from '../runtime/onnx/tensor.js';
import { checkRows } from './bind.js';
import type { InferRequest, InferResult } from '../runtime/types.js';
import { ArrowEcho } from './arrow-echo.js';
import { GuardError, guardIpc } from './arrow-guard.js';
import { accepts, copyLeaf, describeType, expectedColumn, firstNull, leafComplete, leafKind, type LeafKind } from './arrow-read.js';
import { checkFailuresColumn, tensorColumn, timeColumn } from './arrow-write.js';
import { CONTENT_TYPES } from './media.js';
import { recordsDecoded } from './pandas.js';
import type { Decoded, Encoded, ServedBy, WireFormat } from './types.js';
import { expectedOf } from './values.js';

export type ArrowKind = 'arrow-file' | 'arrow-stream';
export { ArrowEcho };

/**
 * Arrow tables (SPEC §5.2, §5.3): the columns are record fields, bound to tensors the way records
 * are (bind.ts): every column a model input (one row of each input per table row), or, for a model
 * with one 2-D input, named features packed in feature order. A row of an [N, K] input is a
 * FixedSizeList or List of K numbers (nested lists for more dimensions); a [N, 1] or [N] input
 * also takes a plain column. Arrow nulls are refused; NaN in a float column is passed on as it is
 * (pandas' missing value, which ONNX imputers expect).
 */

/** One request column: its name, type and one Data per record batch. */
interface Column {
  name: string;
  type: DataType;
  chunks: Data[];
}

const noun = (kind: ArrowKind): string => (kind === 'arrow-file' ? 'file' : 'stream');
const list = (xs: readonly string[]): string => `[${xs.map((x) => `'${x}'`).join(', ')}]`;

function expectation(sig: ModelSignature): string {
  const inputs = `the model inputs ${list(sig.inputs.map((s) => s.name))}`;
  return sig.features ? `${inputs} or the features ${list(sig.features)}` : inputs;
}

/** Arrow IPC (file or stream) → a records request (SPEC §5.2): columns are record fields. */
export function decodeArrow(body: Uint8Array, kind: ArrowKind, sig: ModelSignature, reply: WireFormat): Decoded {
  const bytes = bodyCopy(body);
  try {
    return bind(readTable(bytes, kind), bytes, kind, sig, reply);
  } catch (err) {
    // A refused table is not read again: its copy serves the next request.
    spare(bytes);
    throw err;
  }
}

function bind(table: Table, bytes: Uint8Array, kind: ArrowKind, sig: ModelSignature, reply: WireFormat): Decoded {
  const fields = table.schema.fields;
  if (fields.length === 0) {
    throw badRequest(`the Arrow ${noun(kind)} has no columns (an empty schema, or not Arrow IPC at all); send one column per model input: ${expectation(sig)}`, 'BadArrow');
  }
  const names = fields.map((f) => f.name);
  const repeated = names.find((n, i) => names.indexOf(n) !== i);
  if (repeated !== undefined) throw badRequest(`the table has two columns named '${repeated}'`, 'DuplicateField');
  const nrows = table.numRows;
  if (nrows === 0) throw badRequest(`the Arrow table has no rows: send at least one`, 'Empty');
  const columns: Column[] = fields.map((f, c) => ({ name: f.name, type: f.type, chunks: table.batches.map((b) => b.data.children[c]!) }));
  let request: InferRequest;
  if (names.every((n) => sig.inputIndex.has(n))) request = bindInputs(sig, columns, nrows);
  else if (sig.featureIndex) request = bindFeatures(sig, columns, nrows);
  else {
    const unknown = names.find((n) => !sig.inputIndex.has(n))!;
    throw badRequest(`column '${unknown}': unknown column; expected ${expectation(sig)}`, 'UnknownField');
  }
  return recordsDecoded(request, new ArrowEcho(table, bytes), reply);
}

/**
 * Spare buffers for body copies. The body's bytes are reused once decoding returns, and the table
 * (views into the copy) is echoed after the run, so the body is copied; a 10k-row table is over a
 * megabyte, and a fresh buffer per request showed in the profile as page faults and collections.
 * A copy comes back when its Arrow answer is written; one whose request ends otherwise (a JSON
 * answer, an error) is left to the collector.
 */
const spares: ArrayBuffer[] = [];
const MAX_SPARES = 4;
const POOLED_BYTES = 64 * 1024;

function bodyCopy(body: Uint8Array): Uint8Array {
  if (body.length < POOLED_BYTES) return new Uint8Array(body); // (Buffer#slice would be a view)
  let buf: ArrayBuffer | undefined;
  for (let i = spares.length - 1; i >= 0; i--) {
    const b = spares[i]!;
    if (b.byteLength >= body.length && b.byteLength <= 2 * body.length) {
      buf = b;
      spares.splice(i, 1);
      break;
    }
  }
  // Rounded up, so bodies of about the same size share buffers.
  const copy = new Uint8Array(buf ?? new ArrayBuffer(Math.ceil(body.length / POOLED_BYTES) * POOLED_BYTES), 0, body.length);
  copy.set(body);
  return copy;
}

function spare(bytes: Uint8Array): void {
  if (bytes.byteLength >= POOLED_BYTES && spares.length < MAX_SPARES && bytes.buffer instanceof ArrayBuffer) spares.push(bytes.buffer);
}

function readTable(bytes: Uint8Array, kind: ArrowKind): Table {
  if (bytes.length === 0) throw badRequest(`the request body is empty; send an Arrow IPC ${noun(kind)}`, 'Empty');
  try {
    guardIpc(bytes);
    return tableFromIPC(bytes);
  } catch (err) {
    if (err instanceof GuardError) throw badRequest(`the body is not a valid Arrow IPC ${noun(kind)}: corrupt metadata: ${err.message}`, 'BadArrow');
    // The reader's own words name the cut (e.g. "Expected to read 136 metadata bytes, but only read 130");
    // a TypeError or RangeError is the reader tripping over corrupt metadata.
    const why = err instanceof TypeError || err instanceof RangeError ? 'its IPC metadata is corrupt or cut short' : String((err as Error)?.message ?? err).split('\n')[0]!.slice(0, 200);
    throw badRequest(`the body is not a valid Arrow IPC ${noun(kind)} (not Arrow, truncated or corrupt): ${why}`, 'BadArrow');
  }
}

function bindInputs(sig: ModelSignature, columns: Column[], nrows: number): InferRequest {
  const inputs: Tensor[] = new Array(sig.inputs.length);
  for (let i = 0; i < sig.inputs.length; i++) {
    const spec = sig.inputs[i]!;
    const col = columns.find((c) => c.name === spec.name);
    if (!col) throw badRequest(`missing column '${spec.name}'; the model takes inputs ${list(sig.inputs.map((s) => s.name))}`, 'MissingInput');
    inputs[i] = readInput(spec, col, nrows);
  }
  return { inputs, rows: sig.inputs[0]!.batched ? nrows : 1 };
}

/** The list types around a column's values, outermost first, and the values' type. */
function peel(type: DataType): { lists: DataType[]; leaf: DataType } {
  const lists: DataType[] = [];
  let t = type;
  while (t.typeId === Type.FixedSizeList || t.typeId === Type.List || t.typeId === Type.LargeList) {
    lists.push(t);
    t = (t as unknown as { children: Field[] }).children[0]!.type;
  }
  return { lists, leaf: t };
}

const nullRefused = (where: string, type: IoSpec['type']): never => {
  throw badRequest(`${where}: expected ${expectedOf(type)} (${type}), got null`, 'WrongType');
};

const cutShort = (col: Column): never => {
  throw badRequest(`column '${col.name}': its buffers are shorter than its rows (the Arrow data is truncated or corrupt)`, 'BadArrow');
};

/** Rows of one input from its column: a typed copy of the leaf values, after every row is checked. */
function readInput(spec: IoSpec, col: Column, nrows: number): Tensor {
  checkRows(spec, nrows, 'row');
  const { lists, leaf } = peel(col.type);
  const kind = leafKind(leaf);
  const shape = describeDims(spec.rowDims);
  if (!accepts(spec.type, kind)) {
    throw badRequest(`column '${col.name}' is ${describeType(col.type)}, but input '${spec.name}' takes ${spec.type}: expected ${expectedColumn(spec.type)}${spec.rowDims.length ? `, rows of shape ${shape}` : ''}`, 'WrongType');
  }
  const levels = listLevels(spec, col, lists.length);
  const ranges: { leaf: Data; start: number; count: number; rowBase: number }[] = [];
  let rowBase = 0;
  for (const chunk of col.chunks) {
    ranges.push({ ...walk(spec, col, chunk, rowBase, levels, kind), rowBase });
    rowBase += chunk.length;
  }
  // Flat lists feed rows of any rank in C order; nested ones give each dimension.
  const rowDims = lists.length === 0 ? spec.rowDims : levels.length === spec.rowDims.length ? levels : spec.rowDims;
  let rowSize = 1;
  for (const d of rowDims) rowSize *= d;
  let data: TypedData | string[];
  const only = ranges.length === 1 ? ranges[0]! : null;
  if (only && sameStorage(only.leaf, kind, spec.type)) {
    // The common case (one batch, the input's own element type): one copy, no zero-fill.
    data = (only.leaf.values as TypedData).slice(only.start, only.start + only.count) as TypedData;
  } else {
    data = allocate(spec.type, nrows * rowSize);
    let off = 0;
    for (const r of ranges) {
      copyLeaf(r.leaf, kind, r.start, r.count, spec.type, data, off, 1, (i) => `row ${r.rowBase + Math.floor((i - r.start) / rowSize)}, column '${col.name}'`);
      off += r.count;
    }
  }
  return { type: spec.type, dims: spec.batched ? [nrows, ...rowDims] : rowDims.slice(), data };
}

/** Leaf values stored exactly as the tensor stores `type`, so a slice is the tensor's storage. */
function sameStorage(leaf: Data, kind: LeafKind, type: IoSpec['type']): boolean {
  // Half floats are Uint16Arrays on both sides, but an Arrow Uint16 leaf is not half floats.
  if (type === 'float16') return kind === 'half' && leaf.values instanceof Uint16Array;
  return kind !== 'bool' && kind !== 'string' && kind !== 'half' && storedAs(leaf.values, type);
}

/**
 * The length each list level must have (-1: set by the first row): none for a plain column (rows
 * of one value), the row size for one flat list, each row dimension for lists nested as deep.
 */
function listLevels(spec: IoSpec, col: Column, depth: number): number[] {
  const rd = spec.rowDims;
  const shape = describeDims(rd);
  if (depth === 0) {
    if (spec.rowSize === 1) return [];
    throw badRequest(`column '${col.name}' holds one value per row, but input '${spec.name}' takes rows of shape ${shape}: send a FixedSizeList (or List) of ${spec.rowSize >= 0 ? spec.rowSize : 'N'} values per row`, 'WrongShape');
  }
  if (depth === 1 && rd.length >= 1 && (spec.rowSize >= 0 || rd.length === 1)) return [spec.rowSize];
  if (depth === rd.length) return rd.slice();
  const want = rd.length === 0 ? 'one value per row' : `a list of ${spec.rowSize >= 0 ? spec.rowSize : 'N'} values per row${rd.length > 1 ? ` or lists nested ${rd.length} deep` : ''}`;
  throw badRequest(`column '${col.name}' is ${describeType(col.type)} (lists nested ${depth} deep), but input '${spec.name}' takes rows of shape ${shape}: send ${want}`, 'WrongShape');
}

/**
 * Checks one record batch's part of a column level by level (nulls, list lengths) and gives the
 * leaf elements holding its rows, contiguous once every list of a level has the same length.
 */
function walk(spec: IoSpec, col: Column, chunk: Data, rowBase: number, levels: number[], kind: LeafKind): { leaf: Data; start: number; count: number } {
  let d = chunk;
  let start = 0;
  let count = chunk.length;
  let perRow = 1;
  const rowOf = (i: number): number => rowBase + Math.floor((i - start) / perRow);
  for (let k = 0; k < levels.length; k++) {
    const at = firstNull(d, start, count);
    if (at === -2) cutShort(col);
    if (at >= 0) nullRefused(`row ${rowOf(at)}, column '${col.name}'${k ? ` (inside its list)` : ''}`, spec.type);
    const depth = k ? ` at depth ${k + 1}` : '';
    const shape = `input '${spec.name}' takes rows of shape ${describeDims(spec.rowDims)}`;
    let want = levels[k]!;
    if (d.type.typeId === Type.FixedSizeList) {
      const size = (d.type as unknown as { listSize: number }).listSize;
      if (want < 0) want = levels[k] = size;
      if (size !== want) throw badRequest(`column '${col.name}' is ${describeType(col.type)}: fixed-size lists of ${size}${depth}, but ${shape} (${want} values${depth})`, 'WrongShape');
      start *= size;
    } else {
      const offs = d.valueOffsets as Int32Array | BigInt64Array;
      if (!offs || offs.length < start + count + 1) cutShort(col);
      for (let j = 0; j < count; j++) {
        const len = Number(offs[start + j + 1]!) - Number(offs[start + j]!);
        if (want < 0) want = levels[k] = len;
        if (len !== want) {
          throw badRequest(`row ${rowBase + Math.floor(j / perRow)}, column '${col.name}': a list of ${len} values${depth}, expected ${want} (${shape}; ragged or wrong-length lists)`, 'WrongShape');
        }
      }
      start = count ? Number(offs[start]!) : 0;
    }
    count *= want;
    perRow *= want;
    d = d.children[0]!;
  }
  if (!leafComplete(d, kind, start, count) || start < 0) cutShort(col);
  const at = firstNull(d, start, count);
  if (at === -2) cutShort(col);
  if (at >= 0) nullRefused(`row ${rowOf(at)}, column '${col.name}'${levels.length ? ` (inside its list)` : ''}`, spec.type);
  return { leaf: d, start, count };
}

function bindFeatures(sig: ModelSignature, columns: Column[], nrows: number): InferRequest {
  const spec = sig.inputs[0]!;
  checkRows(spec, nrows, 'row');
  const featureIndex = sig.featureIndex!;
  const features = sig.features!;
  const slots = columns.map((c) => {
    const k = featureIndex.get(c.name);
    if (k === undefined) throw badRequest(`column '${c.name}': unknown column; expected ${expectation(sig)}`, 'UnknownField');
    return k;
  });
  if (slots.length !== features.length) {
    const missing = features.filter((f) => !columns.some((c) => c.name === f));
    throw badRequest(`missing feature column${missing.length > 1 ? 's' : ''} ${list(missing)}; the model takes ${list(features)}`, 'MissingInput');
  }
  const width = features.length;
  // Every column is checked before the tensor is sized: its row count is the body's word.
  const kinds = columns.map((col) => {
    const kind = leafKind(col.type);
    const what = `feature '${col.name}' of input '${spec.name}'`;
    if (peel(col.type).lists.length > 0) {
      throw badRequest(`column '${col.name}' is ${describeType(col.type)}, but ${what} takes one value per row: send a plain column of ${expectedColumn(spec.type)}`, 'WrongShape');
    }
    if (!accepts(spec.type, kind)) throw badRequest(`column '${col.name}' is ${describeType(col.type)}, but ${what} takes ${spec.type}: expected ${expectedColumn(spec.type)}`, 'WrongType');
    let rowBase = 0;
    for (const chunk of col.chunks) {
      if (!leafComplete(chunk, kind, 0, chunk.length)) cutShort(col);
      const at = firstNull(chunk, 0, chunk.length);
      if (at === -2) cutShort(col);
      if (at >= 0) nullRefused(`row ${rowBase + at}, column '${col.name}'`, spec.type);
      rowBase += chunk.length;
    }
    return kind;
  });
  const data = allocate(spec.type, nrows * width);
  columns.forEach((col, c) => {
    let rowBase = 0;
    for (const chunk of col.chunks) {
      const base = rowBase;
      copyLeaf(chunk, kinds[c]!, 0, chunk.length, spec.type, data, base * width + slots[c]!, width, (i) => `row ${base + i}, column '${col.name}'`);
      rowBase += chunk.length;
    }
  });
  return { inputs: [{ type: spec.type, dims: [nrows, width], data }], rows: nrows };
}

// ---- answers

/**
 * The answer as an Arrow table: `time` (timestamp[ms]), `in.<col>` (an Arrow request's own columns,
 * unchanged; for any other request one column per model input), `out.<output>` (this request's
 * rows of each output, always lists: nested fixed-size lists of the row's shape, a one-element
 * list for a 1-D output, as pandas-records answers have them) and `check_failures` (an empty list
 * per row). The schema's metadata carries last_model, pipeline_version and elapsed.
 */
export function encodeArrow(decoded: Decoded, result: InferResult, sig: ModelSignature, by: ServedBy, kind: ArrowKind): Encoded {
  const rows = decoded.request.rows;
  const time = timeColumn(rows, Date.now());
  const checks = checkFailuresColumn(rows);
  const outs = sig.outputs.map((spec, o) => {
    const t = result.outputs[o]!;
    // Rows of a merged batch are this request's from `offset`; an output whose first dimension is
    // not this request's rows (no batch dimension, a fixed one) is whole on every row.
    const perRow = spec.batched && t.dims.length > 0 && (!result.whole || t.dims[0] === rows);
    return tensorColumn(t, rows, { perRow, offset: perRow ? result.offset : 0, listIfScalar: true });
  });
  const echo = decoded.state instanceof ArrowEcho && decoded.state.table.numRows === rows ? decoded.state : null;
  const fields: Field[] = [new Field('time', time.type, false)];
  let ins: Data[] | null = null;
  if (echo) {
    for (const f of echo.table.schema.fields) fields.push(new Field(`in.${f.name}`, f.type, f.nullable, f.metadata));
  } else {
    const inputs = decoded.request.inputs;
    ins = inputs.map((t, i) => tensorColumn(t, rows, { perRow: sig.inputs[i]!.batched && t.dims[0] === rows, offset: 0, listIfScalar: false }));
    ins.forEach((d, i) => fields.push(new Field(`in.${sig.inputs[i]!.name}`, d.type, true)));
  }
  outs.forEach((d, o) => fields.push(new Field(`out.${sig.outputs[o]!.name}`, d.type, false)));
  fields.push(new Field('check_failures', checks.type, false));
  const schema = new Schema(fields, answerMetadata(result, by));
  const batches: RecordBatch[] = [];
  if (echo && echo.table.batches.length > 1) {
    // One answer batch per request batch, so the request's columns pass through without a copy.
    let s = 0;
    for (const b of echo.table.batches) {
      const n = b.numRows;
      batches.push(recordBatch(schema, n, [time.slice(s, n), ...b.data.children, ...outs.map((d) => d.slice(s, n)), checks.slice(s, n)]));
      s += n;
    }
  } else {
    batches.push(recordBatch(schema, rows, [time, ...(echo ? echo.table.batches[0]!.data.children : ins!), ...outs, checks]));
  }
  let body = tableToIPC(new Table(schema, batches), kind === 'arrow-file' ? 'file' : 'stream');
  if (echo) {
    // The answer is a copy (apache-arrow joins its chunks into one buffer) unless it collapsed into
    // a view of the request's bytes, which are about to be reused.
    if (body.buffer === echo.bytes.buffer) body = body.slice();
    spare(echo.release());
  }
  return { body, contentType: CONTENT_TYPES[kind] };
}

function recordBatch(schema: Schema, rows: number, children: Data[]): RecordBatch {
  return new RecordBatch(schema, makeData({ type: new Struct(schema.fields), length: rows, nullCount: 0, children }));
}

/** What pandas-records answers carry per record in `metadata`, once per table. */
function answerMetadata(result: InferResult, by: ServedBy): Map<string, string> {
  const m = new Map<string, string>([
    ['last_model', JSON.stringify({ model_name: by.modelName, model_sha: by.modelSha })],
    ['pipeline_version', by.serviceVersion],
    ['elapsed', `[${result.queueNs},${result.runNs}]`],
  ]);
  if (by.modelSplit) m.set('_model_split', JSON.stringify([{ name: by.modelName, version: by.modelVersion, sha: by.modelSha }]));
  return m;
}
