import type { ModelSignature } from '../runtime/onnx/signature.js';
import type { InferResult } from '../runtime/types.js';
import { bindRecords } from './bind.js';
import { rowJson } from './jsonvalues.js';
import type { Codec, Decoded, Encoded, ServedBy } from './types.js';

interface PandasState {
  records: unknown[];
  /** JSON text of the only record, cut from the body, so it is echoed without re-serialising. */
  soleRecordText: string | null;
}

/**
 * Wallaroo pandas-records: [{...row...}] → one record per row with time, in, out, check_failures
 * and metadata. Outputs are lists even for one element, as Wallaroo returns them.
 */
export const pandasRecords: Codec & { decode(body: unknown[], sig: ModelSignature, text: string): Decoded } = {
  name: 'pandas-records',

  decode(body, sig, text) {
    const request = bindRecords(sig, body, 'record', 'the records array');
    let soleRecordText: string | null = null;
    if (body.length === 1) {
      // JSON.parse accepted it, so the text is "[ <record> ]" with optional whitespace around.
      const start = text.indexOf('[');
      const end = text.lastIndexOf(']');
      soleRecordText = text.slice(start + 1, end).trim();
    }
    const state: PandasState = { records: body, soleRecordText };
    return { codec: pandasRecords, request, state };
  },

  encode(decoded: Decoded, result: InferResult, sig: ModelSignature, by: ServedBy): Encoded {
    const state = decoded.state as PandasState;
    const { outputs, offset } = result;
    const time = Date.now();
    const outNames = sig.outputKeysJson;
    const tail = `"check_failures":[],${by.pandasMetadataPrefix}${result.queueNs},${result.runNs}]}}`;
    let s = '[';
    for (let r = 0; r < decoded.request.rows; r++) {
      const inText = state.soleRecordText ?? JSON.stringify(state.records[r]);
      s += `${r ? ',' : ''}{"time":${time},"in":${inText},"out":{`;
      for (let o = 0; o < outputs.length; o++) s += (o ? ',' : '') + outNames[o] + ':' + rowJson(outputs[o]!, offset + r, sig.outputs[o]!.batched, false);
      s += by.modelSplit + '},' + tail;
    }
    return { body: s + ']', contentType: 'application/json; format=pandas-records' };
  },
};
