import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { MISCHIEF_HOOK, cueRow, makeModelsDir } from './helpers/fixtures.js';
import { fraudRow, prng, rows, runDirect } from './helpers/direct.js';
import { metric, postJson, startGateway, tempDir, until, type RunningGateway } from './helpers/gateway.js';
import { existsSync } from 'node:fs';
import path from 'node:path';
import ort from 'onnxruntime-node';

const PANDAS = 'application/json; format=pandas-records';
const running = (url: string) => metric(url, 'infergate_batches_running{service="slow",version="0.0.1"}');

function slowModels() {
  return makeModelsDir({
    slow: { from: 'ccfraud', hook: MISCHIEF_HOOK, config: { batching: { max_batch_size: 1, max_queue_delay_us: 0, max_queue_size: 2 } } },
  });
}

describe('overload, failures and shutdown', () => {
  let gw: RunningGateway;
  before(async () => {
    gw = await startGateway({ modelsDir: slowModels() });
  });
  after(async () => {
    await gw.stop();
  });

  const infer = (first: number) => postJson(`${gw.url}/v1/infers/slow`, [{ tensor: cueRow(first) }], PANDAS);

  test('a full queue sheds load with 503 at once and admitted requests still succeed', async () => {
    const sleeper = infer(555);
    await until('the slow batch to run', async () => (await running(gw.url)) === 1);
    const burst = await Promise.all(Array.from({ length: 6 }, () => infer(0.5)));
    const shed = burst.filter((a) => a.status === 503);
    assert.ok(shed.length >= 1, `expected some 503s, got ${burst.map((a) => a.status)}`);
    for (const a of shed) {
      assert.equal(a.json.error_code, 'IG.503.QueueFull');
      assert.match(a.json.error_msg, /queue is full \(2 requests waiting\)/);
    }
    assert.ok(burst.filter((a) => a.status === 200).length >= 2, 'the queued requests are served');
    assert.equal((await sleeper).status, 200);
  });

  test('a worker that throws fails only its request, with 500 and the reason', async () => {
    const a = await infer(777);
    assert.equal(a.status, 500);
    assert.equal(a.json.error_code, 'IG.500.ModelRunFailed');
    assert.match(a.json.error_msg, /hook refused the value 777/);
    assert.doesNotMatch(a.text, /at .*\.js:\d+/, 'no stack trace');
    assert.equal((await infer(0.25)).status, 200);
  });

  test('a worker that dies is replaced; its request fails cleanly and later ones succeed', async () => {
    const a = await infer(666);
    assert.equal(a.status, 503);
    assert.equal(a.json.error_code, 'IG.503.InstanceLost');
    for (let i = 0; i < 5; i++) assert.equal((await infer(0.1 * i)).status, 200);
    const again = await infer(666);
    assert.equal(again.status, 503);
    assert.equal((await infer(0.3)).status, 200);
  });
});

describe('request timeout', () => {
  test('a request over limits.request_timeout_ms gets 504 and the gateway keeps serving', async () => {
    const gw = await startGateway({ modelsDir: slowModels(), config: { limits: { request_timeout_ms: 200 } } });
    try {
      const a = await postJson(`${gw.url}/v1/infers/slow`, [{ tensor: cueRow(555) }], PANDAS);
      assert.equal(a.status, 504);
      assert.equal(a.json.error_code, 'IG.504.Timeout');
      assert.match(a.json.error_msg, /no answer within 200 ms/);
      await until('the abandoned run to finish', async () => (await running(gw.url)) === 0);
      const b = await postJson(`${gw.url}/v1/infers/slow`, [{ tensor: cueRow(0.5) }], PANDAS);
      assert.equal(b.status, 200);
    } finally {
      await gw.stop();
    }
  });
});

describe('graceful shutdown', () => {
  test('SIGTERM stops accepting, finishes the request in flight and exits 0', async () => {
    const gw = await startGateway({ modelsDir: slowModels() });
    const inflight = postJson(`${gw.url}/v1/infers/slow`, [{ tensor: cueRow(555) }], PANDAS);
    await until('the slow batch to run', async () => (await running(gw.url)) === 1);
    gw.proc.kill('SIGTERM');
    const answer = await inflight;
    assert.equal(answer.status, 200);
    assert.equal(answer.json[0].out.dense_1.length, 1);
    assert.equal(await gw.exited, 0);
    await assert.rejects(fetch(`${gw.url}/healthz`), 'the listener is closed');
  });

  test('a run whose client left is let finish before the workers go', async () => {
    const marker = path.join(tempDir('run-marker-'), 'finished');
    // Blocks the worker for a second, then leaves a mark: the run was not cut off by the shutdown.
    const hook = `exports.preprocess = function (feeds) {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1000);
  require('fs').writeFileSync(${JSON.stringify(marker)}, 'done');
  return feeds;
};`;
    const gw = await startGateway({ modelsDir: makeModelsDir({ slow: { from: 'ccfraud', hook, config: { batching: { max_batch_size: 1, max_queue_delay_us: 0, max_queue_size: 2 } } } }) });
    const gone = new AbortController();
    const left = fetch(`${gw.url}/v1/infers/slow`, { method: 'POST', body: JSON.stringify([{ tensor: cueRow(0.5) }]), headers: { 'content-type': PANDAS }, signal: gone.signal }).catch((e: Error) => e);
    await until('the batch to run', async () => (await running(gw.url)) === 1);
    gone.abort();
    assert.ok((await left) instanceof Error);
    gw.proc.kill('SIGTERM');
    assert.equal(await gw.exited, 0);
    assert.ok(existsSync(marker), 'the run finished before the gateway exited');
  });
});

describe('a preprocess hook that changes the rows of a merged batch', () => {
  test('every request of the batch is refused with 500 rather than given another\'s rows', async () => {
    // Keeps only the first row of whatever batch it is given.
    const hook = `exports.preprocess = function (feeds, ctx) {
  const t = feeds.tensor;
  return { tensor: new ctx.Tensor('float32', t.data.slice(0, 29), [1, 29]) };
};`;
    const modelsDir = makeModelsDir({ trim: { from: 'ccfraud', hook, config: { batching: { max_batch_size: 64, max_queue_delay_us: 300_000, max_queue_size: 100 } } } });
    const gw = await startGateway({ modelsDir });
    try {
      const rand = prng(8);
      // The batch waits up to 300 ms to fill: both share one run of two rows.
      const [a, b] = await Promise.all([0, 1].map(() => postJson(`${gw.url}/v1/infers/trim`, [{ tensor: fraudRow(rand) }], PANDAS)));
      for (const x of [a!, b!]) {
        assert.equal(x.status, 500, x.text);
        assert.equal(x.json.error_code, 'IG.500.ModelRunFailed');
        assert.match(x.json.error_msg, /output 'dense_1' has 1 rows for a batch of 2/);
      }
      // Alone, a request's one row stays one row.
      assert.equal((await postJson(`${gw.url}/v1/infers/trim`, [{ tensor: fraudRow(rand) }], PANDAS)).status, 200);
    } finally {
      await gw.stop();
    }
  });
});

describe('a request leaving a merged batch', () => {
  test('the other requests of the batch still get exactly their own rows', async () => {
    const modelsDir = makeModelsDir({
      slow: { from: 'ccfraud', hook: MISCHIEF_HOOK, config: { batching: { max_batch_size: 64, max_queue_delay_us: 300_000, max_queue_size: 100 } } },
    });
    const gw = await startGateway({ modelsDir });
    try {
      const rand = prng(5);
      const b = Array.from({ length: 2 }, () => fraudRow(rand));
      const c = Array.from({ length: 3 }, () => fraudRow(rand));
      const url = `${gw.url}/v1/infers/slow`;
      // The batch waits up to 300 ms to fill, so these three share one run, which the cue blocks for a second.
      const gone = new AbortController();
      const sleeper = postJson(url, [{ tensor: cueRow(555) }], PANDAS);
      const left = fetch(url, { method: 'POST', body: JSON.stringify(b.map((t) => ({ tensor: t }))), headers: { 'content-type': PANDAS }, signal: gone.signal }).catch((e: Error) => e);
      const kept = postJson(url, c.map((t) => ({ tensor: t })), PANDAS);
      await until('the merged batch to run', async () => (await running(gw.url)) === 1);
      assert.equal(await metric(gw.url, 'infergate_batch_size_sum{service="slow",version="0.0.1"}'), 6, 'one batch of 1 + 2 + 3 rows');
      gone.abort();
      assert.ok((await left) instanceof Error);
      const answer = await kept;
      assert.equal(answer.status, 200, answer.text);
      const direct = await runDirect('ccfraud', { tensor: new ort.Tensor('float32', Float32Array.from(c.flat()), [3, 29]) });
      assert.deepEqual(answer.json.map((r: { out: { dense_1: number[] } }) => r.out.dense_1), rows(direct['dense_1']!));
      assert.equal((await sleeper).status, 200);
    } finally {
      await gw.stop();
    }
  });
});
