import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { ServedBy } from '../src/codecs/types.js';
import { buildSignature } from '../src/runtime/onnx/signature.js';
import { ServiceLog } from '../src/telemetry/inference-log.js';

/**
 * The inference log read while requests keep coming: a record whose body decodes asynchronously
 * (here the Arrow codec's first load; a multipart body's images in general) lets newer records
 * overwrite the slots a page has yet to read. Its own process: the codec must not be loaded yet.
 */
test('a page read while records are written over holds no record in another\'s place', async () => {
  const sig = buildSignature([{ name: 'x', isTensor: true, type: 'float32', shape: ['N', 2] }], [{ name: 'y', isTensor: true, type: 'float32', shape: ['N', 1] }], { features: null });
  const log = new ServiceLog({ sample_rate: 1, records_per_service: 4, max_records_per_second: 1e9, bytes_per_service: 1 << 20, max_record_bytes: 1 << 16 }, 1);
  const by = { modelName: 'm', modelSha: 's', modelVersion: '1', serviceVersion: 'm-1', label: 'm@1', pandasMetadataPrefix: '', modelSplit: '' } satisfies ServedBy;
  const put = (id: string, contentType: string, text: string, error: string | null = null): void => {
    const body = Buffer.from(text);
    const at = log.keepBody(body);
    const result = { outputs: [{ type: 'float32' as const, dims: [1, 1], data: new Float32Array([1]) }], whole: false, offset: 0, queueNs: 0, runNs: 0 };
    log.commit(id, at, body.length, contentType, -1, by, sig, error ? 400 : 200, error ? null : result, 1, error, null);
  };
  const json = '{"inputs":[{"name":"x","shape":[1,2],"datatype":"FP32","data":[1,2]}]}';
  put('r0', 'application/vnd.apache.arrow.stream', 'not an Arrow stream');
  put('r1', 'application/json', json);
  put('r2', 'application/json', json);
  put('r3', 'application/json', json);
  const reading = log.query({ start: 0, end: Infinity, order: 'Asc', pageSize: 100, cursor: null });
  // Traffic while r0 waits for its codec: r1's slot (and r0's) now hold newer records.
  put('n4', 'application/json', json);
  put('e5', 'application/json', json, 'refused');
  const page = await reading;
  const records = JSON.parse(page.body) as { metadata: { request_id: string; error?: string } }[];
  assert.deepEqual(records.map((r) => [r.metadata.request_id, r.metadata.error ?? null]), [['r0', null], ['r2', null], ['r3', null]]);
  const newest = JSON.parse((await log.query({ start: 0, end: Infinity, order: 'Desc', pageSize: 100, cursor: null })).body) as { metadata: { request_id: string } }[];
  assert.deepEqual(newest.map((r) => r.metadata.request_id), ['e5', 'n4', 'r3', 'r2']);
});
