import assert from 'node:assert/strict';
import ort from 'onnxruntime-node';
import { after, before, describe, test } from 'node:test';
import { WML_FIELDS, WML_VALUES, creditRiskFeeds, fraudRow, prng, rows, runDirect } from './helpers/direct.js';
import { metric, postJson, startGateway, type RunningGateway } from './helpers/gateway.js';

/**
 * The dynamic batcher merges rows of concurrent requests into one model run; every request must
 * get back exactly its own rows, in order, equal to running the model on them alone.
 */
describe('batching correctness under concurrency', () => {
  let gw: RunningGateway;
  before(async () => {
    gw = await startGateway();
  });
  after(async () => {
    await gw.stop();
  });

  test('400 concurrent ccfraud requests of 1–50 rows in three formats each get their own rows', async () => {
    const rand = prng(2026);
    const requests = Array.from({ length: 400 }, (_, i) => {
      const n = 1 + Math.floor(rand() * 50);
      return { i, rows: Array.from({ length: n }, () => fraudRow(rand)) };
    });
    const before = await metric(gw.url, 'infergate_batch_size_count{service="ccfraud",version="0.0.1"}');
    const answers = await Promise.all(requests.map(async ({ i, rows: data }) => {
      switch (i % 3) {
        case 0: {
          const a = await postJson(`${gw.url}/v1/api/pipelines/infer/ccfraud`, data.map((t) => ({ tensor: t })), 'application/json; format=pandas-records');
          assert.equal(a.status, 200, a.text);
          return a.json.map((r: { out: { dense_1: number[] } }) => r.out.dense_1[0]);
        }
        case 1: {
          const a = await postJson(`${gw.url}/v2/models/ccfraud/infer`, { id: String(i), inputs: [{ name: 'tensor', shape: [data.length, 29], datatype: 'FP32', data: data.flat() }] });
          assert.equal(a.status, 200, a.text);
          assert.equal(a.json.id, String(i));
          assert.deepEqual(a.json.outputs[0].shape, [data.length, 1]);
          return a.json.outputs[0].data;
        }
        default: {
          const a = await postJson(`${gw.url}/v1/infers/ccfraud`, { meta: { uuid: `u${i}` }, data: { req_data: data.map((t) => ({ tensor: t })) } });
          assert.equal(a.status, 200, a.text);
          assert.equal(a.json.meta.uuid, `u${i}`);
          return a.json.data.resp_data.map((r: { dense_1: number }) => r.dense_1);
        }
      }
    }));
    const session = await ort.InferenceSession.create('models/ccfraud/model.onnx');
    for (const { i, rows: data } of requests) {
      const out = await session.run({ tensor: new ort.Tensor('float32', Float32Array.from(data.flat()), [data.length, 29]) });
      assert.deepEqual(answers[i], Array.from(out['dense_1']!.data as Float32Array), `request ${i} (${data.length} rows)`);
    }
    const runs = (await metric(gw.url, 'infergate_batch_size_count{service="ccfraud",version="0.0.1"}')) - before;
    assert.ok(runs < requests.length, `requests were merged: ${requests.length} requests in ${runs} model runs`);
  });

  test('string inputs merge too: 200 concurrent credit-risk requests', async () => {
    const rand = prng(99);
    const requests = Array.from({ length: 200 }, () => Array.from({ length: 1 + Math.floor(rand() * 5) }, () => WML_VALUES[Math.floor(rand() * WML_VALUES.length)]!));
    const answers = await Promise.all(requests.map(async (values) => {
      const a = await postJson(`${gw.url}/ml/v4/deployments/credit-risk/predictions`, { input_data: [{ fields: WML_FIELDS, values }] });
      assert.equal(a.status, 200, a.text);
      return a.json.predictions[0].values;
    }));
    for (let i = 0; i < requests.length; i++) {
      const out = await runDirect('credit-risk', creditRiskFeeds(requests[i]!));
      const labels = Array.from(out['prediction']!.data as string[]);
      const probs = rows(out['probability']!);
      assert.deepEqual(answers[i], labels.map((l, k) => [l, probs[k]]), `request ${i}`);
    }
  });
});
