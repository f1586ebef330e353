import { badRequest } from '../errors.js';
import type { ModelSignature } from '../runtime/onnx/signature.js';
import type { InferResult } from '../runtime/types.js';
import { bindColumns } from './bind.js';
import { rowJson } from './jsonvalues.js';
import { rowValue } from './plain.js';
import type { Codec, Decoded, Encoded, WireFormat } from './types.js';
import { isList } from './values.js';

/** Watson ML v4: {"input_data": [{"fields", "values"}]} → {"predictions": [{"fields", "values"}]}. */
export const watsonMl: Codec & { decode(body: Record<string, unknown>, sig: ModelSignature, reply: WireFormat): Decoded } = {
  name: 'wml',

  decode(body, sig, reply) {
    const inputData = body['input_data'];
    if (!Array.isArray(inputData) || inputData.length === 0) {
      throw badRequest(`'input_data' must be a non-empty array of {"fields", "values"} objects`, 'WrongShape');
    }
    if (inputData.length > 1) {
      throw badRequest(`'input_data' has ${inputData.length} entries; send one {"fields", "values"} entry per request`, 'WrongShape');
    }
    const entry = inputData[0] as Record<string, unknown> | null;
    if (typeof entry !== 'object' || entry === null) throw badRequest(`'input_data[0]' must be an object with "fields" and "values"`, 'WrongShape');
    const { values } = entry as { values: unknown };
    // Without "fields" (Watson ML allows it where the model's schema is known), values are in the
    // model's own order: its features where it has them, else its inputs.
    const sent = (entry as { fields?: unknown }).fields;
    const fields = sent ?? sig.features ?? sig.inputs.map((i) => i.name);
    if (!Array.isArray(fields) || fields.length === 0 || !fields.every((f) => typeof f === 'string')) {
      throw badRequest(`'input_data[0].fields' must be a non-empty array of field names (strings)`, 'WrongShape');
    }
    const repeated = (fields as string[]).find((f, i) => fields.indexOf(f) !== i);
    if (repeated !== undefined) throw badRequest(`'input_data[0].fields' repeats the field '${repeated}'`, 'DuplicateField');
    if (!Array.isArray(values)) throw badRequest(`'input_data[0].values' must be an array of rows (arrays)`, 'WrongShape');
    if (values.length === 0) throw badRequest(`'input_data[0].values' is empty: send at least one row`, 'Empty');
    // A model with one input (and no named features) sent without "fields": each row may be that
    // input's own row, as a Watson ML client sends a vector model ([29 numbers] for ccfraud's [N, 29]).
    const only = sent === undefined && !sig.features && sig.inputs.length === 1 ? sig.inputs[0]! : null;
    const rowWidth = only && (only.rowDims[0] ?? 0) > 1 ? only.rowDims[0]! : 0;
    if (only && rowWidth && values.every((row) => isList(row) && row.length === rowWidth)) {
      const rows = values as unknown[];
      return { codec: watsonMl, request: bindColumns(sig, [only.name], rows.length, (r) => rows[r], 'row'), state: null, reply };
    }
    for (let r = 0; r < values.length; r++) {
      const row = values[r];
      if (!isList(row)) throw badRequest(`'input_data[0].values' row ${r}: expected an array of ${fields.length} values, got ${row === null ? 'null' : typeof row}`, 'WrongShape');
      if (row.length !== fields.length) {
        // Without "fields" the row is in the model's order: say which names that is.
        const per = sent !== undefined ? 'one per field' : `one per ${sig.features ? 'model feature' : 'model input'}: ${(fields as string[]).map((f) => `'${f}'`).join(', ')}; no "fields" were sent`;
        const orRow = only && rowWidth ? ` or ${rowWidth} values (a row of '${only.name}')` : '';
        throw badRequest(`'input_data[0].values' row ${r}: expected ${fields.length} value${fields.length === 1 ? '' : 's'} (${per})${orRow}, got ${row.length}`, 'WrongShape');
      }
    }
    const rows = values as ArrayLike<unknown>[];
    const request = bindColumns(sig, fields as string[], rows.length, (r, c) => rows[r]![c], 'row');
    return { codec: watsonMl, request, state: null, reply };
  },

  encode(decoded: Decoded, result: InferResult, sig: ModelSignature): Encoded {
    const { outputs, offset } = result;
    let s = `{"predictions":[{"fields":${sig.outputListJson},"values":[`;
    for (let r = 0; r < decoded.request.rows; r++) {
      s += r ? ',[' : '[';
      for (let o = 0; o < outputs.length; o++) s += (o ? ',' : '') + rowJson(outputs[o]!, offset + r, sig.outputs[o]!.batched, true);
      s += ']';
    }
    return { body: s + ']}]}', contentType: 'application/json' };
  },

  value(decoded: Decoded, result: InferResult, sig: ModelSignature): unknown {
    const { outputs, offset } = result;
    const values = new Array<unknown[]>(decoded.request.rows);
    for (let r = 0; r < values.length; r++) values[r] = outputs.map((t, o) => rowValue(t, offset + r, sig.outputs[o]!.batched, true));
    return { predictions: [{ fields: sig.outputs.map((o) => o.name), values }] };
  },
};
