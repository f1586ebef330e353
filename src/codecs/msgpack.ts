import { Packr, Unpackr } from 'msgpackr';
import { badRequest } from '../errors.js';

/**
 * msgpack bodies hold any JSON shape (SPEC §5.2). Typed arrays (msgpackr's extension) and bins
 * (raw little-endian bytes) are accepted wherever tensor data goes. Answers are written as
 * plain msgpack, without msgpackr's record extension, so any msgpack library reads them.
 */
// copyBuffers: bins outlive the body's bytes (records are echoed after the run), so they are copies.
// structuredClone off: msgpackr's reference extension would let a 60-byte body hold an array that
// contains itself (or a small one shared a million times), which no request needs.
const unpackr = new Unpackr({ mapsAsObjects: true, useRecords: false, copyBuffers: true, structuredClone: false });
const packr = new Packr({ useRecords: false, variableMapSize: true });

/** `what`: a request body or a WebSocket message, as messages name it. */
export function unpackBody(body: Uint8Array, what: 'body' | 'message' = 'body'): unknown {
  if (body.length === 0) throw badRequest(`the request ${what} is empty; send a msgpack-encoded inference request`, 'Empty');
  try {
    return unpackr.unpack(body);
  } catch (err) {
    throw badRequest(`the ${what} is not valid msgpack: ${clientWords((err as Error).message)}`, 'BadMsgpack');
  }
}

/** msgpackr's messages speak to a developer using msgpackr; these say what is wrong with the body. */
function clientWords(message: string): string {
  if (message.startsWith('Data read, but end of buffer not reached')) return 'bytes follow its first value (a second value, or trailing garbage); send exactly one msgpack value';
  if (message.startsWith('Invalid property type for record')) return 'a map has a key that is a map or an array; map keys must be strings';
  if (message.startsWith('Offset is outside the bounds') || message.startsWith('Unexpected end of MessagePack')) return 'it ends in the middle of a value (truncated)';
  return message;
}

export function packValue(value: unknown): Uint8Array {
  return packr.pack(value);
}
