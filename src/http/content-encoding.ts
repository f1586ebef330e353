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
 * Inflations running at once (libuv's thread pool has 4 threads): each may grow to the body limit,
 * so this bounds the memory compressed bodies can take (a 27-byte brotli body decodes to 12 MiB).
 * The others wait their turn, in order.
 */
const CONCURRENT = 4;
/** Inflations running or waiting; the waiting ones are in `waiting`. */
let taken = 0;
const waiting: (() => void)[] = [];

function release(): void {
  taken--;
  waiting.shift()?.();
}

/**
 * A compressed request body (Content-Encoding gzip, deflate or br, as tritonclient and
 * requests-based clients send), decoded off the main thread and bounded: it may not decode to
 * more than `limit` bytes. Rejects with the gateway error to answer: 415 for a coding not taken,
 * 400 for a body that is not what it says, 413 past the limit. `abandoned`: the call went away
 * while it waited for its turn (it is skipped).
 */
export function inflateBody(body: Uint8Array, coding: string, limit: number, abandoned: () => boolean): Promise<Buffer> {
  const name = coding.trim().toLowerCase();
  const inflate = CODINGS[name];
  if (!inflate) {
    return Promise.reject(new GatewayError(415, 'UnsupportedEncoding', `Content-Encoding '${coding}' is not supported; send the body as it is, or gzip, deflate or br`));
  }
  // Copied: the body is uWebSockets.js' only until the caller returns.
  const input = Buffer.isBuffer(body) ? body : Buffer.from(body);
  return new Promise((resolve, reject) => {
    const run = (): void => {
      if (abandoned()) {
        reject(new GatewayError(400, 'Aborted', 'the request went away'));
        release();
        return;
      }
      inflate(input, { maxOutputLength: limit }, (err, out) => {
        release();
        if (!err) return resolve(out);
        if ((err as NodeJS.ErrnoException).code === 'ERR_BUFFER_TOO_LARGE') {
          return reject(new GatewayError(413, 'PayloadTooLarge', `the ${name} body decodes to over the limit of ${limit} bytes (limits.max_body_bytes)`));
        }
        reject(badRequest(`the body is not valid ${name} (Content-Encoding: ${coding}): ${err.message}`, 'BadEncoding'));
      });
    };
    taken++;
    if (taken <= CONCURRENT) run();
    else waiting.push(run);
  });
}
