import type { ModelSignature } from '../runtime/onnx/signature.js';
import type { InferRequest, InferResult } from '../runtime/types.js';
import { bindRecords } from './bind.js';
import { rowJson } from './jsonvalues.js';
import { plainOf, rowValue } from './plain.js';
import type { Codec, Decoded, Encoded, ServedBy, WireFormat } from './types.js';

/** The input rows a records answer echoes as `in`: from JSON records, msgpack records or an Arrow table. */
export interface RecordsEcho {
  /** Row r's input record as JSON text. */
  json(r: number): string;
  /** Row r's input record as a plain value. */
  value(r: number): unknown;
}

/** Records decoded from JSON (`text` given) or msgpack: the JSON text of a sole record is cut from the body, not re-serialised. */
function recordsEcho(records: unknown[], text: string | null): RecordsEcho {
  let sole: string | null = null;
  if (text !== null && records.length === 1) {
    // JSON.parse accepted it, so the text is "[ <record> ]" with optional whitespace around.
    sole = text.slice(text.indexOf('[') + 1, text.lastIndexOf(']')).trim();
  }
  return {
    json: (r) => sole ?? JSON.stringify(text === null ? plainOf(records[r], false) : records[r]),
    value: (r) => plainOf(records[r], true),
  };
}

/** A records request (pandas-records or an Arrow table) answered by this codec. */
export function recordsDecoded(request: InferRequest, echo: RecordsEcho, reply: WireFormat): Decoded {
  return { codec: pandasRecords, request, state: echo, reply };
}

function metadataValue(result: InferResult, by: ServedBy): Record<string, unknown> {
  return { last_model: JSON.stringify({ model_name: by.modelName, model_sha: by.modelSha }), pipeline_version: by.serviceVersion, elapsed: [result.queueNs, result.runNs] };
}

/**
 * Wallaroo pandas-records: [{...row...}] → one record per row with time, in, out, check_failures
 * and metadata. Outputs are lists even for one element, as Wallaroo returns them.
 */
export const pandasRecords: Codec & { decode(body: unknown[], sig: ModelSignature, text: string | null, reply: WireFormat): Decoded } = {
  name: 'pandas-records',

  decode(body, sig, text, reply) {
    return recordsDecoded(bindRecords(sig, body, 'record', 'the records array'), recordsEcho(body, text), reply);
  },

  encode(decoded: Decoded, result: InferResult, sig: ModelSignature, by: ServedBy): Encoded {
    const echo = decoded.state as RecordsEcho;
    const { outputs, offset } = result;
    const time = Date.now();
    const outNames = sig.outputKeysJson;
    const tail = `"check_failures":[],${by.pandasMetadataPrefix}${result.queueNs},${result.runNs}]}}`;
    let s = '[';
    for (let r = 0; r < decoded.request.rows; r++) {
      s += `${r ? ',' : ''}{"time":${time},"in":${echo.json(r)},"out":{`;
      for (let o = 0; o < outputs.length; o++) s += (o ? ',' : '') + outNames[o] + ':' + rowJson(outputs[o]!, offset + r, sig.outputs[o]!.batched, false);
      s += by.modelSplit + '},' + tail;
    }
    return { body: s + ']', contentType: 'application/json; format=pandas-records' };
  },

  value(decoded: Decoded, result: InferResult, sig: ModelSignature, by: ServedBy): unknown {
    const echo = decoded.state as RecordsEcho;
    const { outputs, offset } = result;
    const time = Date.now();
    const metadata = metadataValue(result, by);
    const split = by.modelSplit ? [{ name: by.modelName, version: by.modelVersion, sha: by.modelSha }] : null;
    const out = new Array<unknown>(decoded.request.rows);
    for (let r = 0; r < out.length; r++) {
      const o: Record<string, unknown> = {};
      for (let k = 0; k < outputs.length; k++) o[sig.outputs[k]!.name] = rowValue(outputs[k]!, offset + r, sig.outputs[k]!.batched, false);
      if (split) o['_model_split'] = split;
      out[r] = { time, in: echo.value(r), out: o, check_failures: [], metadata };
    }
    return out;
  },
};
