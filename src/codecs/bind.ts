import { badRequest, type GatewayError } from '../errors.js';
import type { InferRequest } from '../runtime/types.js';
import type { IoSpec, ModelSignature } from '../runtime/onnx/signature.js';
import { describeDims } from '../runtime/onnx/signature.js';
import { elementCount, staged, type Tensor } from '../runtime/onnx/tensor.js';
import { describeValue, isList, putNested, putValue, shapeOf } from './values.js';

/**
 * Records → tensors (SPEC §5.3). Every record-like format (ModelArts req_data, pandas-records,
 * WML fields/values) is a table: field names and a cell accessor. Fields are either all model
 * inputs (one row of each input per record) or, for a model with one 2-D input, named features
 * packed in feature order.
 */
export type Cell = (row: number, col: number) => unknown;

const list = (xs: readonly string[]): string => `[${xs.map((x) => `'${x}'`).join(', ')}]`;

function expectation(sig: ModelSignature): string {
  const inputs = `the model inputs ${list(sig.inputs.map((s) => s.name))}`;
  return sig.features ? `${inputs} or the features ${list(sig.features)}` : inputs;
}

export function bindColumns(sig: ModelSignature, fields: readonly string[], nrows: number, cell: Cell, label: string): InferRequest {
  if (nrows === 0) throw badRequest(`no ${label}s: send at least one`, 'Empty');
  if (fields.every((f) => sig.inputIndex.has(f))) return bindInputs(sig, fields, nrows, cell, label);
  // Fields that name inputs mean inputs: the unknown one is among the others, not the input.
  const namesInputs = fields.some((f) => sig.inputIndex.has(f) && !sig.featureIndex?.has(f));
  if (sig.featureIndex && !namesInputs) return bindFeatures(sig, fields, nrows, cell, label);
  const unknown = fields.find((f) => !sig.inputIndex.has(f))!;
  throw badRequest(`${label} 0: unknown field '${unknown}'; expected ${expectation(sig)}`, 'UnknownField');
}

function bindInputs(sig: ModelSignature, fields: readonly string[], nrows: number, cell: Cell, label: string): InferRequest {
  const inputs: Tensor[] = new Array(sig.inputs.length);
  for (let i = 0; i < sig.inputs.length; i++) {
    const spec = sig.inputs[i]!;
    const col = fields.indexOf(spec.name);
    if (col < 0) {
      throw badRequest(`${label} 0: missing input '${spec.name}'; the model takes inputs ${list(sig.inputs.map((s) => s.name))}`, 'MissingInput');
    }
    inputs[i] = bindInput(spec, col, nrows, cell, label);
  }
  return { inputs, rows: sig.inputs[0]!.batched ? nrows : 1 };
}

function bindInput(spec: IoSpec, col: number, nrows: number, cell: Cell, label: string): Tensor {
  checkRows(spec, nrows, label);
  const rowDims = spec.rowSize >= 0 ? spec.rowDims : concreteRowDims(spec, cell(0, col), `${label} 0, field '${spec.name}'`);
  const rowSize = elementCount(rowDims);
  const data = staged(nrows * rowSize);
  const scalarRow = rowSize === 1;
  for (let r = 0, off = 0; r < nrows; r++) {
    const v = cell(r, col);
    const where = `${label} ${r}, field '${spec.name}'`;
    if (scalarRow && !isList(v)) putValue(data, off++, spec.type, v, where);
    else off = putNested(data, off, spec.type, v, rowDims, 0, where);
  }
  return { type: spec.type, dims: spec.batched ? [nrows, ...rowDims] : rowDims, data };
}

/** A fixed batch dimension takes exactly that many rows; an input without one takes one. */
export function checkRows(spec: IoSpec, nrows: number, label: string): void {
  if (spec.fixedBatch > 0 && nrows !== spec.fixedBatch) {
    throw badRequest(`input '${spec.name}' has a fixed batch of ${spec.fixedBatch} (shape ${describeDims(spec.dims)}); send exactly ${spec.fixedBatch} ${label}${spec.fixedBatch > 1 ? 's' : ''}, got ${nrows}`, 'WrongShape');
  }
  if (!spec.batched && nrows !== 1) {
    throw badRequest(`input '${spec.name}' has no batch dimension (shape ${describeDims(spec.dims)}); send exactly one ${label}, got ${nrows}`, 'WrongShape');
  }
}

/** For inputs with symbolic inner dimensions, the first row fixes them; static ones must match. */
function concreteRowDims(spec: IoSpec, first: unknown, where: string): number[] {
  const got = shapeOf(first);
  if (got.length !== spec.rowDims.length || spec.rowDims.some((d, k) => d >= 0 && d !== got[k])) {
    throw badRequest(`${where}: expected a row of shape ${describeDims(spec.rowDims)}, got ${got.length ? describeDims(got) : describeValue(first)}`, 'WrongShape');
  }
  return got;
}

function bindFeatures(sig: ModelSignature, fields: readonly string[], nrows: number, cell: Cell, label: string): InferRequest {
  const spec = sig.inputs[0]!;
  checkRows(spec, nrows, label);
  const featureIndex = sig.featureIndex!;
  const features = sig.features!;
  const slots = fields.map((f) => {
    const k = featureIndex.get(f);
    if (k === undefined) throw badRequest(`${label} 0: unknown field '${f}'; expected ${expectation(sig)}`, 'UnknownField');
    return k;
  });
  if (slots.length !== features.length) {
    const missing = features.filter((f) => !fields.includes(f));
    throw badRequest(`${label} 0: missing feature${missing.length > 1 ? 's' : ''} ${list(missing)}; the model takes ${list(features)}`, 'MissingInput');
  }
  const width = features.length;
  const data = staged(nrows * width);
  for (let r = 0; r < nrows; r++) {
    for (let c = 0; c < slots.length; c++) {
      putValue(data, r * width + slots[c]!, spec.type, cell(r, c), `${label} ${r}, field '${fields[c]}'`);
    }
  }
  return { inputs: [{ type: spec.type, dims: [nrows, width], data }], rows: nrows };
}

const hasOwn = (o: object, k: string): boolean => Object.prototype.hasOwnProperty.call(o, k);

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !isList(v);

const notRecord = (label: string, r: number, v: unknown): GatewayError =>
  badRequest(`${label} ${r}: expected an object of fields, got ${describeValue(v)}`, 'WrongShape');

/** An array of objects (ModelArts req_data, pandas-records): every record must have the same fields. */
export function bindRecords(sig: ModelSignature, records: unknown, label: string, what: string): InferRequest {
  if (!Array.isArray(records)) throw badRequest(`${what}: expected an array of ${label}s (objects), got ${records === null ? 'null' : typeof records}`, 'WrongShape');
  if (records.length === 0) throw badRequest(`${what} is empty: send at least one ${label}`, 'Empty');
  const first = records[0];
  if (!isRecord(first)) throw notRecord(label, 0, first);
  const fields = Object.keys(first);
  if (fields.length === 0) throw badRequest(`${label} 0 has no fields; expected ${expectation(sig)}`, 'MissingInput');
  for (let r = 1; r < records.length; r++) {
    const rec = records[r];
    if (!isRecord(rec)) throw notRecord(label, r, rec);
    const keys = Object.keys(rec);
    const extra = keys.find((k) => !hasOwn(first, k));
    if (extra !== undefined) throw badRequest(`${label} ${r}: unexpected field '${extra}'; ${label} 0 has ${list(fields)}`, 'UnknownField');
    if (keys.length !== fields.length) {
      const missing = fields.find((f) => !hasOwn(rec, f));
      throw badRequest(`${label} ${r}: missing field '${missing}' that ${label} 0 has`, 'MissingInput');
    }
  }
  const rows = records as Record<string, unknown>[];
  return bindColumns(sig, fields, rows.length, (r, c) => rows[r]![fields[c]!], label);
}
