import { badRequest, GatewayError } from '../errors.js';
import type { ModelSignature } from '../runtime/onnx/signature.js';
import { modelArts } from './modelarts.js';
import { pandasRecords } from './pandas.js';
import type { Decoded } from './types.js';
import { openInference } from './v2.js';
import { watsonMl } from './wml.js';

export interface BodyMeta {
  /** Content-Type header, lower-cased ('' when absent). */
  contentType: string;
  /** Inference-Header-Content-Length (v2 binary extension), or -1. */
  inferenceHeaderLength: number;
}

const SUPPORTED = 'application/json (ModelArts, Watson ML, Open Inference Protocol v2, pandas-records), or application/octet-stream with Inference-Header-Content-Length';

/**
 * Body → internal request. The body view is only valid during this call (uWebSockets.js reuses
 * it), so decoders copy what they keep.
 */
export function decodeBody(body: Uint8Array, meta: BodyMeta, sig: ModelSignature): Decoded {
  if (meta.inferenceHeaderLength >= 0) return decodeV2Binary(body, meta.inferenceHeaderLength, sig);
  const semi = meta.contentType.indexOf(';');
  const media = (semi < 0 ? meta.contentType : meta.contentType.slice(0, semi)).trim();
  if (media !== 'application/json' && media !== '' && !media.endsWith('+json')) {
    throw new GatewayError(415, 'UnsupportedMediaType', `Content-Type '${media}' is not supported; send ${SUPPORTED}`);
  }
  const pandas = semi >= 0 && /format\s*=\s*"?pandas-records/.test(meta.contentType.slice(semi));
  const text = Buffer.from(body.buffer, body.byteOffset, body.byteLength).toString('utf8');
  const json = parseJson(text);
  if (Array.isArray(json)) return pandasRecords.decode(json, sig, text);
  if (pandas) throw badRequest(`Content-Type says format=pandas-records, so the body must be an array of records, got ${describeTop(json)}`, 'WrongShape');
  return decodeJsonObject(json, sig);
}

function decodeJsonObject(json: unknown, sig: ModelSignature): Decoded {
  if (typeof json !== 'object' || json === null) {
    throw badRequest(`expected a JSON object or an array of records, got ${describeTop(json)}`, 'WrongShape');
  }
  const body = json as Record<string, unknown>;
  if ('inputs' in body) return openInference.decode(body, sig);
  if ('input_data' in body) return watsonMl.decode(body, sig);
  if ('data' in body) return modelArts.decode(body, sig);
  const keys = Object.keys(body).slice(0, 5).map((k) => `'${k}'`).join(', ');
  throw badRequest(
    `unrecognised request shape (keys ${keys || 'none'}); expected {"data": {"req_data": [...]}} (ModelArts), {"input_data": [{"fields", "values"}]} (Watson ML), {"inputs": [...]} (Open Inference Protocol v2) or an array of records (pandas-records)`,
    'UnknownShape',
  );
}

function parseJson(text: string): unknown {
  if (text.length === 0) throw badRequest('the request body is empty; send a JSON inference request', 'Empty');
  try {
    return JSON.parse(text);
  } catch (err) {
    throw badRequest(`the body is not valid JSON: ${(err as Error).message}`, 'BadJson');
  }
}

function describeTop(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  return typeof v === 'object' ? 'an object' : `a ${typeof v}`;
}

function decodeV2Binary(body: Uint8Array, headerLength: number, sig: ModelSignature): Decoded {
  if (headerLength === 0) {
    throw badRequest(`Inference-Header-Content-Length is 0; it must give the length of the JSON inference header that starts the body`, 'WrongShape');
  }
  if (headerLength > body.length) {
    throw badRequest(`Inference-Header-Content-Length is ${headerLength} but the body has only ${body.length} bytes`, 'WrongShape');
  }
  const text = Buffer.from(body.buffer, body.byteOffset, headerLength).toString('utf8');
  const json = parseJson(text);
  if (typeof json !== 'object' || json === null || Array.isArray(json) || !('inputs' in json)) {
    throw badRequest(`with Inference-Header-Content-Length the JSON header must be an Open Inference Protocol request with "inputs"`, 'WrongShape');
  }
  return openInference.decode(json as Record<string, unknown>, sig, body.subarray(headerLength));
}
