// Plain Fastify 5 + onnxruntime-node server answering Wallaroo pandas-records for the ccfraud
// model in-process, written the straightforward way a user would: parse JSON, build a tensor,
// await session.run per request, serialise the records back. The "≥ 4×" baseline of SPEC §14.
//
// Usage: node dist/bench/servers/fastify-ort.js <port>   (or PORT=<port>)
// Model: $BENCH_CCFRAUD_MODEL, default models/ccfraud/model.onnx (relative to the cwd):
//   input `tensor` [N,29] float32 -> output `dense_1` [N,1] float32.
// Prints `listening <port>` on stdout when ready.
// First, as in the gateway: ONNX Runtime's telemetry off, so both sides run the same library.
import '../../src/runtime/onnx/telemetry.js';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import Fastify from 'fastify';
import ort from 'onnxruntime-node';

const FEATURES = 29;

const port = Number(process.argv[2] ?? process.env.PORT ?? 9002);
if (!Number.isInteger(port) || port <= 0 || port > 65535) {
  console.error(`fastify-ort: bad port ${String(process.argv[2] ?? process.env.PORT)}`);
  process.exit(2);
}
const modelPath = resolve(process.env.BENCH_CCFRAUD_MODEL ?? 'models/ccfraud/model.onnx');
if (!existsSync(modelPath)) {
  console.error(`fastify-ort: model not found: ${modelPath} (set BENCH_CCFRAUD_MODEL to a ccfraud-shaped .onnx)`);
  process.exit(1);
}

const session = await ort.InferenceSession.create(modelPath, {
  intraOpNumThreads: 1,
  interOpNumThreads: 1,
});

interface PandasRecord {
  tensor: number[];
}

// Fastify's built-in JSON parser already accepts `application/json; format=pandas-records`
// (parameters after the media type are ignored when matching), so no custom parser is needed.
const LAST_MODEL = JSON.stringify({ model_name: 'ccfraud', model_sha: createHash('sha256').update(readFileSync(modelPath)).digest('hex') });

const app = Fastify({ logger: false });

async function infer(body: unknown): Promise<unknown[] | string> {
  if (!Array.isArray(body) || body.length === 0) return 'body must be a non-empty array of records';
  const rows = body as PandasRecord[];
  const n = rows.length;
  const data = new Float32Array(n * FEATURES);
  for (let i = 0; i < n; i++) {
    const t = rows[i]?.tensor;
    if (!Array.isArray(t) || t.length !== FEATURES) return `record ${i}: tensor must be ${FEATURES} numbers`;
    for (let j = 0; j < FEATURES; j++) data[i * FEATURES + j] = Number(t[j]);
  }
  const t0 = process.hrtime.bigint();
  const result = await session.run({ tensor: new ort.Tensor('float32', data, [n, FEATURES]) });
  const runNs = Number(process.hrtime.bigint() - t0);
  const out = result.dense_1!.data as Float32Array;
  const now = Date.now();
  return rows.map((r, i) => ({
    time: now,
    in: { tensor: r.tensor },
    out: { dense_1: [out[i]] },
    check_failures: [],
    // The same metadata infergate answers with, so both serialise the same records.
    metadata: { last_model: LAST_MODEL, pipeline_version: 'ccfraud-0.0.1', elapsed: [0, runNs] },
  }));
}

const handler = async (req: { body: unknown }, reply: { code(c: number): unknown }): Promise<unknown> => {
  const answer = await infer(req.body);
  if (typeof answer === 'string') {
    reply.code(400);
    return { error: answer };
  }
  return answer;
};

app.post('/infer', handler);
app.post('/*', handler);

try {
  await app.listen({ host: '127.0.0.1', port });
} catch (err) {
  console.error(`fastify-ort: could not listen on 127.0.0.1:${port}: ${String(err)}`);
  process.exit(1);
}
console.log(`listening ${port}`);

const stop = (): void => {
  void app.close().then(() => process.exit(0));
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
