import buffer from 'node:buffer';
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
 * The others wait their turn, in order, up to MAX_WAITING; past that a request is refused (503).
 */
const CONCURRENT = 4;
const MAX_WAITING = 1024;
let running = 0;
/** Each starts its inflation, or answers false when its caller went away meanwhile (it is skipped). */
const waiting: (() => boolean)[] = [];

/** A slot is free: the next waiting inflation that still has a caller takes it. */
function release(): void {
  running--;
  // A loop, not a call chain: thousands of abandoned waiters must not overflow the stack.
  while (running < CONCURRENT && waiting.length > 0) {
    const next = waiting.shift()!;
    running++;
    if (!next()) running--;
  }
}

/** zlib refuses an output limit past the largest Buffer. */
const MAX_OUTPUT = buffer.constants.MAX_LENGTH;

/**
 * A compressed request body (Content-Encoding gzip, deflate or br, as tritonclient and
 * requests-based clients send), decoded off the main thread and bounded: it may not decode to
 * more than `limit` bytes. Rejects with the gateway error to answer: 415 for a coding not taken,
 * 400 for a body that is not what it says, 413 past the limit, 503 when too many wait. `abandoned`:
 * the call went away while it waited for its turn (it is skipped).
 */
export function inflateBody(body: Uint8Array, coding: string, limit: number, abandoned: () => boolean): Promise<Buffer> {
  const name = coding.trim().toLowerCase();
  const inflate = CODINGS[name];
  if (!inflate) {
    return Promise.reject(new GatewayError(415, 'UnsupportedEncoding', `Content-Encoding '${coding}' is not supported; send the body as it is, or gzip, deflate or br`));
  }
  if (running >= CONCURRENT && waiting.length >= MAX_WAITING) {
    return Promise.reject(new GatewayError(503, 'Busy', `${MAX_WAITING} compressed bodies are waiting to be decoded; retry shortly, or send this one uncompressed`, { 'Retry-After': '1' }));
  }
  // Copied: the body is uWebSockets.js' only until the caller returns.
  const input = Buffer.isBuffer(body) ? body : Buffer.from(body);
  return new Promise((resolve, reject) => {
    const run = (): boolean => {
      if (abandoned()) {
        reject(new GatewayError(400, 'Aborted', 'the request went away'));
        return false;
      }
      try {
        inflate(input, { maxOutputLength: Math.min(limit, MAX_OUTPUT) }, (err, out) => {
          release();
          if (!err) return resolve(out);
          if ((err as NodeJS.ErrnoException).code === 'ERR_BUFFER_TOO_LARGE') {
            return reject(new GatewayError(413, 'PayloadTooLarge', `the ${name} body decodes to over the limit of ${limit} bytes (limits.max_body_bytes)`));
          }
          reject(badRequest(`the body is not valid ${name} (Content-Encoding: ${coding}): ${err.message}`, 'BadEncoding'));
        });
      } catch (err) {
        reject(badRequest(`the body could not be decoded (Content-Encoding: ${coding}): ${(err as Error).message}`, 'BadEncoding'));
        return false;
      }
      return true;
    };
    if (running < CONCURRENT) {
      running++;
      if (!run()) release();
    } else {
      waiting.push(run);
    }
  });
}
