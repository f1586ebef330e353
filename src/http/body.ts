import type { HttpResponse } from 'uWebSockets.js';
import { GatewayError } from '../errors.js';
import { jsonText } from '../codecs/utf8.js';

/**
 * Reads a whole request body (management API: small JSON, model uploads). Resolves null when
 * the client went away; rejects with 413 past `limit`, after reading the rest so the client
 * sees the answer.
 */
export function readBody(res: HttpResponse, limit: number, aborted: { value: boolean }): Promise<Buffer | null> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let over = false;
    res.onAborted(() => {
      aborted.value = true;
      resolve(null);
    });
    res.onData((chunk, isLast) => {
      size += chunk.byteLength;
      if (size > limit) over = true;
      if (!over) chunks.push(Buffer.from(chunk.slice(0)));
      if (!isLast) return;
      if (over) reject(new GatewayError(413, 'PayloadTooLarge', `the request body is over the limit of ${limit} bytes`));
      else resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks));
    });
  });
}

export function parseJsonObject(body: Buffer, what: string, fields?: readonly string[]): Record<string, unknown> {
  if (body.length === 0) throw new GatewayError(400, 'Empty', `${what}: the body is empty; send a JSON object`);
  let v: unknown;
  try {
    v = JSON.parse(jsonText(body));
  } catch (err) {
    throw new GatewayError(400, 'BadJson', `${what}: the body is not valid JSON: ${(err as Error).message}`);
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new GatewayError(400, 'WrongShape', `${what}: expected a JSON object`);
  if (fields) {
    // A misspelt field would otherwise be dropped without a word.
    const extra = Object.keys(v).find((k) => !fields.includes(k));
    if (extra !== undefined) throw new GatewayError(400, 'BadSpec', `${what}: unknown field '${extra}'; expected ${fields.join(', ')}`);
  }
  return v as Record<string, unknown>;
}
