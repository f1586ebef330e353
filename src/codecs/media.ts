import { GatewayError } from '../errors.js';
import type { WireFormat } from './types.js';

/** What a request body is, by its Content-Type (SPEC §5.2). */
export type BodyFormat = WireFormat | 'multipart' | 'v2-binary';

export const SUPPORTED_MEDIA =
  'application/json (ModelArts, Watson ML, Open Inference Protocol v2, pandas-records), application/msgpack, ' +
  'application/vnd.apache.arrow.file, application/vnd.apache.arrow.stream, multipart/form-data, ' +
  'or application/octet-stream with Inference-Header-Content-Length';

const BY_MEDIA: ReadonlyMap<string, WireFormat | 'multipart'> = new Map([
  ['', 'json'],
  ['application/json', 'json'],
  // Wallaroo's own Content-Type, exactly as its clients send it: found without parsing.
  ['application/json; format=pandas-records', 'json'],
  ['text/json', 'json'],
  ['application/msgpack', 'msgpack'],
  ['application/x-msgpack', 'msgpack'],
  ['application/vnd.msgpack', 'msgpack'],
  ['application/vnd.apache.arrow.file', 'arrow-file'],
  ['application/vnd.apache.arrow.stream', 'arrow-stream'],
  ['multipart/form-data', 'multipart'],
] as const);

export const CONTENT_TYPES: Readonly<Record<WireFormat, string>> = {
  json: 'application/json',
  msgpack: 'application/msgpack',
  'arrow-file': 'application/vnd.apache.arrow.file',
  'arrow-stream': 'application/vnd.apache.arrow.stream',
};

/** The media type of a Content-Type or Accept entry, lower case, without parameters. */
export function mediaOf(contentType: string): string {
  const semi = contentType.indexOf(';');
  return (semi < 0 ? contentType : contentType.slice(0, semi)).trim().toLowerCase();
}

/** The body's format; 415 naming what is supported when the Content-Type is none of them. */
export function bodyFormat(contentType: string, inferenceHeaderLength: number): BodyFormat {
  if (inferenceHeaderLength >= 0) return 'v2-binary';
  // The common headers need no parsing.
  const known = BY_MEDIA.get(contentType);
  if (known) return known;
  const media = mediaOf(contentType);
  const f = BY_MEDIA.get(media) ?? (media.endsWith('+json') ? 'json' : undefined);
  if (!f) throw new GatewayError(415, 'UnsupportedMediaType', `Content-Type '${media}' is not supported; send ${SUPPORTED_MEDIA}`);
  return f;
}

/**
 * The encoding of the answer: the most preferred one Accept names among JSON, msgpack and Arrow,
 * else the request's own (JSON for multipart and v2 binary requests). Accept naming only other
 * types (a browser's text/html, …) is not refused: the answer comes in the request's encoding.
 */
export function replyFormat(accept: string, body: BodyFormat): WireFormat {
  const own: WireFormat = body === 'multipart' || body === 'v2-binary' ? 'json' : body;
  if (accept === '' || accept === '*/*') return own;
  let best: WireFormat | null = null;
  let bestQ = 0;
  for (const entry of accept.split(',')) {
    const media = mediaOf(entry);
    const f = media === '*/*' || media === 'application/*' ? own : BY_MEDIA.get(media);
    if (!f || f === 'multipart' || media === '') continue;
    const q = /;\s*q\s*=\s*([0-9.]+)/i.exec(entry);
    const weight = q ? Number(q[1]) : 1;
    if (weight > bestQ) {
      best = f;
      bestQ = weight;
    }
  }
  return best ?? own;
}
