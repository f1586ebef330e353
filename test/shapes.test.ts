import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { makeModelsDir } from './helpers/fixtures.js';
import { api, metric, postJson, startGateway, type RunningGateway } from './helpers/gateway.js';
import { fixedBatchModel, scalarInputModel, writeModelsDir } from './helpers/models.js';

describe('models that must not be merged', () => {
  let gw: RunningGateway;
  before(async () => {
    gw = await startGateway({ modelsDir: writeModelsDir({ fixed: { proto: fixedBatchModel() }, scaled: { proto: scalarInputModel() } }) });
  });
  after(async () => {
    await gw.stop();
  });

  test('a fixed batch of one takes one record and runs one request at a time', async () => {
    const runsBefore = await metric(gw.url, 'infergate_batch_size_count{service="fixed",version="0.0.1"}');
    const xs = Array.from({ length: 40 }, (_, i) => [i, i + 0.5, -i - 1, 1]);
    const answers = await Promise.all(xs.map((x) => postJson(`${gw.url}/v1/infers/fixed`, { data: { req_data: [{ x }] } })));
    answers.forEach((a, i) => {
      assert.equal(a.status, 200, a.text);
      assert.deepEqual(a.json.data.resp_data, [{ y: xs[i]!.map((v) => v * 2) }]);
    });
    assert.equal((await metric(gw.url, 'infergate_batch_size_count{service="fixed",version="0.0.1"}')) - runsBefore, xs.length);
  });

  test('a fixed batch refuses another number of rows with 400', async () => {
    const a = await postJson(`${gw.url}/v1/infers/fixed`, { data: { req_data: [{ x: [1, 2, 3, 4] }, { x: [1, 2, 3, 4] }] } });
    assert.equal(a.status, 400);
    assert.equal(a.json.error_code, 'IG.400.WrongShape');
    assert.match(a.json.error_msg, /input 'x' has a fixed batch of 1 \(shape \[1,4\]\); send exactly 1 record, got 2/);
  });

  test('an input without a batch dimension keeps concurrent requests apart', async () => {
    const scales = Array.from({ length: 60 }, (_, i) => i - 30);
    const answers = await Promise.all(scales.map((scale) => postJson(`${gw.url}/v2/models/scaled/infer`, {
      inputs: [{ name: 'x', shape: [2, 3], datatype: 'FP32', data: [1, 2, 3, 4, 5, 6] }, { name: 'scale', shape: [], datatype: 'FP32', data: [scale] }],
    })));
    answers.forEach((a, i) => {
      assert.equal(a.status, 200, a.text);
      assert.deepEqual(a.json.outputs[0].data, [1, 2, 3, 4, 5, 6].map((v) => v * scales[i]!));
    });
  });

  test('records for a model with an unbatched input: one record carries it', async () => {
    const one = await postJson(`${gw.url}/v1/infers/scaled`, { data: { req_data: [{ x: [1, 1, 1], scale: 3 }] } });
    assert.equal(one.status, 200, one.text);
    assert.deepEqual(one.json.data.resp_data, [{ y: [3, 3, 3] }]);
    const two = await postJson(`${gw.url}/v1/infers/scaled`, { data: { req_data: [{ x: [1, 1, 1], scale: 3 }, { x: [2, 2, 2], scale: 3 }] } });
    assert.equal(two.status, 400);
    assert.match(two.json.error_msg, /input 'scale' has no batch dimension \(shape \[\]\); send exactly one record, got 2/);
  });
});

describe('execution providers', () => {
  test('provider cuda without the CUDA provider fails the deployment with install instructions; provider_fallback cpu serves', async () => {
    const gw = await startGateway({
      modelsDir: makeModelsDir({ ccfraud: { from: 'ccfraud' } }),
      config: {
        services: [
          { name: 'gpu', auth: 'none', versions: [{ model: 'ccfraud', provider: 'cuda' }] },
          { name: 'gpu-or-cpu', auth: 'none', versions: [{ model: 'ccfraud', provider: 'cuda', provider_fallback: 'cpu', intra_op_threads: 2, batching: { max_batch_size: 8 } }] },
        ],
      },
      env: { INFERGATE_LOG_LEVEL: 'info' },
    });
    try {
      const svc = (await api(gw, 'GET', '/v1/services/gpu')).json as { status: string };
      assert.equal(svc.status, 'failed');
      const events = ((await api(gw, 'GET', '/v1/services/gpu/events')).json as { events: { level: string; message: string }[] }).events;
      const failure = events.find((e) => e.level === 'Abnormal')!;
      assert.match(failure.message, /^Failed to deploy the service\. Error: .*provider "cuda" was asked for but the CUDA execution provider is not installed; on a CUDA 12 host install it with `npm rebuild onnxruntime-node --onnxruntime-node-install=cuda12`, or set provider_fallback: "cpu"/);
      const refused = await postJson(`${gw.url}/v1/infers/gpu`, [{ tensor: new Array(29).fill(0) }]);
      assert.equal(refused.status, 503);
      assert.match(refused.json.error_msg, /service 'gpu' is failed/);
      // The service reads back as it was set.
      assert.deepEqual((await api(gw, 'GET', '/v1/services/gpu-or-cpu')).json.versions, [
        { model: 'ccfraud', version: '0.0.1', weight: 100, instances: 1, provider: 'cuda', provider_fallback: 'cpu', intra_op_threads: 2, batching: { max_batch_size: 8 } },
      ]);
      const served = await postJson(`${gw.url}/v1/infers/gpu-or-cpu`, [{ tensor: new Array(29).fill(0) }]);
      assert.equal(served.status, 200, served.text);
      const log = gw.stderr().split('\n').filter(Boolean).map((l) => (JSON.parse(l) as { msg: string }).msg).join('\n');
      assert.match(log, /running on the CPU \(provider_fallback: "cpu"\)/);
    } finally {
      await gw.stop();
    }
  });
});
