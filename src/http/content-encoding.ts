import zlib from 'node:zlib';
import { badRequest, GatewayError } from '../errors.js';

type Inflate = (buf: Buffer, options: zlib.ZlibOptions & zlib.BrotliOptions, cb: (err: Error | null, out: Buffer) => void) => void;

const CODINGS: Record<string, Inflate> = {
  gzip: zlib.gunzip,
  'x-gzip': zlib.gunzip,
  deflate: zlib.inflate,
  br: zlib.brotliDecompress,
};

/** Whether a request's Content-Encoding asks for decoding ('' and identity do not). */
export const isEncoded = (coding: string): boolean => coding !== '' && coding.toLowerCase() !== 'identity';

/**
 * A compressed request body (Content-Encoding gzip, deflate or br, as tritonclient and
 * requests-based clients send), decoded off the main thread and bounded: it may not decode to
 * more than `limit` bytes. Rejects with the gateway error to answer: 415 for a coding not taken,
 * 400 for a body that is not what it says, 413 past the limit.
 */
export function inflateBody(body: Uint8Array, coding: string, limit: number): Promise<Buffer> {
  const name = coding.trim().toLowerCase();
  const inflate = CODINGS[name];
  if (!inflate) {
    return Promise.reject(new GatewayError(415, 'UnsupportedEncoding', `Content-Encoding '${coding}' is not supported; send the body as it is, or gzip, deflate or br`));
  }
  // Copied: the body is uWebSockets.js' only until the caller returns.
  const input = Buffer.from(body);
  return new Promise((resolve, reject) => {
    inflate(input, { maxOutputLength: limit }, (err, out) => {
      if (!err) return resolve(out);
      if ((err as NodeJS.ErrnoException).code === 'ERR_BUFFER_TOO_LARGE') {
        return reject(new GatewayError(413, 'PayloadTooLarge', `the ${name} body decodes to over the limit of ${limit} bytes (limits.max_body_bytes)`));
      }
      reject(badRequest(`the body is not valid ${name} (Content-Encoding: ${coding}): ${err.message}`, 'BadEncoding'));
    });
  });
}
