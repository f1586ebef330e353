import { badRequest } from '../errors.js';
import type { ModelSignature } from '../runtime/onnx/signature.js';
import type { InferResult } from '../runtime/types.js';
import { bindRecords } from './bind.js';
import { rowJson } from './jsonvalues.js';
import { rowValue } from './plain.js';
import type { Codec, Decoded, Encoded, WireFormat } from './types.js';

/** ModelArts: {"meta": {"uuid"}, "data": {"req_data": [records]}} → {"meta", "data": {"resp_data"}}. */
export const modelArts: Codec & { decode(body: Record<string, unknown>, sig: ModelSignature, reply: WireFormat): Decoded } = {
  name: 'modelarts',

  decode(body, sig, reply) {
    const data = body['data'];
    if (typeof data !== 'object' || data === null || Array.isArray(data)) {
      throw badRequest(`'data' must be an object holding 'req_data', got ${Array.isArray(data) ? 'an array' : typeof data}`, 'WrongShape');
    }
    const meta = body['meta'];
    const given = typeof meta === 'object' && meta !== null ? (meta as Record<string, unknown>)['uuid'] : undefined;
    // A uuid is a string; one sent as a number comes back as its digits.
    const uuid = typeof given === 'string' ? given : typeof given === 'number' && Number.isFinite(given) ? String(given) : '';
    const request = bindRecords(sig, (data as Record<string, unknown>)['req_data'], 'record', "'data.req_data'");
    return { codec: modelArts, request, state: uuid, reply };
  },

  encode(decoded: Decoded, result: InferResult, sig: ModelSignature): Encoded {
    const { outputs, offset } = result;
    const names = sig.outputKeysJson;
    let s = `{"meta":{"uuid":${JSON.stringify(decoded.state as string)}},"data":{"resp_data":[`;
    for (let r = 0; r < decoded.request.rows; r++) {
      s += r ? ',{' : '{';
      for (let o = 0; o < outputs.length; o++) {
        s += (o ? ',' : '') + names[o] + ':' + rowJson(outputs[o]!, offset + r, sig.outputs[o]!.batched, true);
      }
      s += '}';
    }
    return { body: s + ']}}', contentType: 'application/json' };
  },

  value(decoded: Decoded, result: InferResult, sig: ModelSignature): unknown {
    const { outputs, offset } = result;
    const resp = new Array<Record<string, unknown>>(decoded.request.rows);
    for (let r = 0; r < resp.length; r++) {
      const rec: Record<string, unknown> = {};
      for (let o = 0; o < outputs.length; o++) rec[sig.outputs[o]!.name] = rowValue(outputs[o]!, offset + r, sig.outputs[o]!.batched, true);
      resp[r] = rec;
    }
    return { meta: { uuid: decoded.state as string }, data: { resp_data: resp } };
  },
};
