import { badRequest, GatewayError } from '../errors.js';
import type { ModelSignature } from '../runtime/onnx/signature.js';
import type { InferResult } from '../runtime/types.js';
import { arrowCodec, loadArrowCodec } from './arrow-lazy.js';
import { bodyFormat, CONTENT_TYPES, replyFormat, type BodyFormat } from './media.js';
import { decodeMultipart } from './multipart.js';
import { modelArts } from './modelarts.js';
import { packValue, unpackBody } from './msgpack.js';
import { pandasRecords } from './pandas.js';
import type { Decoded, Encoded, ServedBy, WireFormat } from './types.js';
import { openInference } from './v2.js';
import { watsonMl } from './wml.js';
import { jsonText } from './utf8.js';

export interface BodyMeta {
  /** Content-Type header ('' when absent). */
  contentType: string;
  /** Inference-Header-Content-Length (v2 binary extension), or -1. */
  inferenceHeaderLength: number;
  /** Accept header ('' when absent): the answer's encoding when it names one we write. */
  accept?: string;
}

/**
 * Body → internal request, for every format but multipart (whose images decode asynchronously;
 * see decodeRequest). The body view is only valid during this call (uWebSockets.js reuses it),
 * so decoders copy what they keep.
 */
export function decodeBody(body: Uint8Array, meta: BodyMeta, sig: ModelSignature): Decoded {
  const format = bodyFormat(meta.contentType, meta.inferenceHeaderLength);
  if (format === 'multipart') throw badRequest('multipart bodies are decoded asynchronously; this path takes every other format', 'UnsupportedFormat');
  return decodeAs(format, replyFormat(meta.accept ?? '', format), body, meta, sig);
}

/** Every format, multipart included: a Promise only where decoding must wait (images, the Arrow codec's first load). */
export function decodeRequest(body: Uint8Array, meta: BodyMeta, sig: ModelSignature): Decoded | Promise<Decoded> {
  const format = bodyFormat(meta.contentType, meta.inferenceHeaderLength);
  const reply = replyFormat(meta.accept ?? '', format);
  if (!arrowCodec() && (isArrow(format) || isArrow(reply))) {
    // The body is the caller's only until this returns.
    const kept = Buffer.from(body);
    return loadArrowCodec().then(() => decodeRequest(kept, meta, sig));
  }
  if (format === 'multipart') return decodeMultipart(body, meta.contentType, sig, reply);
  return decodeAs(format, reply, body, meta, sig);
}

const isArrow = (f: BodyFormat): boolean => f === 'arrow-file' || f === 'arrow-stream';

/** The Arrow codec, loaded by decodeRequest before any Arrow body or answer is needed. */
function arrow(): NonNullable<ReturnType<typeof arrowCodec>> {
  const codec = arrowCodec();
  if (!codec) throw new GatewayError(500, 'Internal', 'the Arrow codec is not loaded');
  return codec;
}

function decodeAs(format: Exclude<BodyFormat, 'multipart'>, reply: WireFormat, body: Uint8Array, meta: BodyMeta, sig: ModelSignature): Decoded {
  switch (format) {
    case 'v2-binary':
      return decodeV2Binary(body, meta.inferenceHeaderLength, sig, reply);
    case 'msgpack':
      return decodeValue(unpackBody(body), sig, reply, null, false);
    case 'json':
      return decodeJson(body, meta.contentType, sig, reply);
    case 'arrow-file':
    case 'arrow-stream':
      return arrow().decodeArrow(body, format, sig, reply);
  }
}

/** A WebSocket message (SPEC §5.5): a text frame is JSON, a binary frame msgpack. */
export function parseMessage(bytes: Uint8Array, binary: boolean): unknown {
  if (binary) return unpackBody(bytes, 'message');
  return parseJson(jsonText(bytes), 'message');
}

/** A parsed message as a request in any JSON shape; answered in the message's own encoding. */
export function decodeMessage(value: unknown, binary: boolean, sig: ModelSignature): Decoded {
  return decodeValue(value, sig, binary ? 'msgpack' : 'json', null, !binary);
}

/** The answer in the encoding the request asked for. */
export function encodeResult(decoded: Decoded, result: InferResult, sig: ModelSignature, by: ServedBy): Encoded {
  if (result.custom !== undefined) return encodeCustom(decoded.reply, result.custom);
  return encodeAs(decoded.reply, decoded, result, sig, by);
}

/** A postprocess hook's own answer is the body, in JSON or msgpack; it has no table form. */
function encodeCustom(format: WireFormat, value: unknown): Encoded {
  if (format === 'msgpack') return { body: packValue(value), contentType: CONTENT_TYPES.msgpack };
  if (format !== 'json') {
    throw new GatewayError(406, 'NotAcceptable', `the model's postprocess hook answers its own JSON value, which has no ${CONTENT_TYPES[format]} form; accept application/json or application/msgpack`);
  }
  return { body: JSON.stringify(value) ?? 'null', contentType: CONTENT_TYPES.json };
}

function encodeAs(format: WireFormat, decoded: Decoded, result: InferResult, sig: ModelSignature, by: ServedBy): Encoded {
  switch (format) {
    case 'json':
      return decoded.codec.encode(decoded, result, sig, by);
    case 'msgpack':
      return { body: packValue(decoded.codec.value(decoded, result, sig, by)), contentType: CONTENT_TYPES.msgpack };
    case 'arrow-file':
    case 'arrow-stream':
      return arrow().encodeArrow(decoded, result, sig, by, format);
  }
}

function decodeJson(body: Uint8Array, contentType: string, sig: ModelSignature, reply: WireFormat): Decoded {
  const text = jsonText(body);
  const json = parseJson(text, 'body');
  const semi = contentType.indexOf(';');
  if (!Array.isArray(json) && semi >= 0 && /format\s*=\s*"?pandas-records/i.test(contentType.slice(semi))) {
    throw badRequest(`Content-Type says format=pandas-records, so the body must be an array of records, got ${describeTop(json)}`, 'WrongShape');
  }
  return decodeValue(json, sig, reply, text, true);
}

/** A JSON shape, parsed from JSON text or msgpack, told apart by its keys (SPEC §5.2). */
function decodeValue(value: unknown, sig: ModelSignature, reply: WireFormat, text: string | null, json: boolean): Decoded {
  if (Array.isArray(value)) return pandasRecords.decode(value, sig, text, reply);
  if (typeof value !== 'object' || value === null || ArrayBuffer.isView(value)) {
    throw badRequest(`expected ${json ? 'a JSON object' : 'a msgpack map'} or an array of records, got ${describeTop(value)}`, 'WrongShape');
  }
  const body = value as Record<string, unknown>;
  if ('inputs' in body) return openInference.decode(body, sig, reply);
  if ('input_data' in body) return watsonMl.decode(body, sig, reply);
  if ('data' in body) return modelArts.decode(body, sig, reply);
  const keys = Object.keys(body).slice(0, 5).map((k) => `'${k}'`).join(', ');
  throw badRequest(
    `unrecognised request shape (keys ${keys || 'none'}); expected {"data": {"req_data": [...]}} (ModelArts), {"input_data": [{"fields", "values"}]} (Watson ML), {"inputs": [...]} (Open Inference Protocol v2) or an array of records (pandas-records)`,
    'UnknownShape',
  );
}

/** `what`: the body, a WebSocket message or a v2 binary request's JSON header, as messages name it. */
function parseJson(text: string, what: 'body' | 'message' | 'JSON header'): unknown {
  if (text.length === 0) throw badRequest(`the request ${what} is empty; send a JSON inference request`, 'Empty');
  try {
    return JSON.parse(text);
  } catch (err) {
    throw badRequest(`the ${what} is not valid JSON: ${(err as Error).message}`, 'BadJson');
  }
}

function describeTop(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v) || ArrayBuffer.isView(v)) return 'an array';
  return typeof v === 'object' ? 'an object' : `a ${typeof v}`;
}

function decodeV2Binary(body: Uint8Array, headerLength: number, sig: ModelSignature, reply: WireFormat): Decoded {
  if (headerLength === 0) {
    throw badRequest(`Inference-Header-Content-Length is 0; it must give the length of the JSON inference header that starts the body`, 'WrongShape');
  }
  if (headerLength > body.length) {
    throw badRequest(`Inference-Header-Content-Length is ${headerLength} but the body has only ${body.length} bytes`, 'WrongShape');
  }
  const text = jsonText(body.subarray(0, headerLength));
  const json = parseJson(text, 'JSON header');
  if (typeof json !== 'object' || json === null || Array.isArray(json) || !('inputs' in json)) {
    throw badRequest(`with Inference-Header-Content-Length the JSON header must be an Open Inference Protocol request with "inputs"`, 'WrongShape');
  }
  return openInference.decode(json as Record<string, unknown>, sig, reply, body.subarray(headerLength));
}
