// Bare onnxruntime-node at a fixed batch size: the baseline of SPEC §14's Arrow target
// ("≥ 0.5 × the rows/s of bare ONNX Runtime at the same batch size"). One session, intraOpNumThreads
// 1 (as infergate's worker has it), the ccfraud model, one [rows, 29] float32 input run back to
// back, nothing else: no HTTP on the measured path, no copies, the same tensor every run.
//
// Served by loop.ts: GET /run?seconds=S runs it back to back for S seconds.
// Usage: node dist/bench/servers/ort-bare.js <port> [rows]   (rows default 10000)
// Model: $BENCH_CCFRAUD_MODEL, default models/ccfraud/model.onnx. Prints `listening <port>` when ready.
// First, as in the gateway: ONNX Runtime's telemetry off, so both sides run the same library.
import '../../src/runtime/onnx/telemetry.js';
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import ort from 'onnxruntime-node';
import { serveLoop } from './loop.js';

const port = Number(process.argv[2] ?? process.env.PORT ?? 9004);
const rows = Number(process.argv[3] ?? 10_000);
if (!Number.isInteger(port) || port <= 0 || port > 65535 || !Number.isInteger(rows) || rows <= 0) {
  console.error(`ort-bare: usage: ort-bare.js <port> [rows]`);
  process.exit(2);
}
const modelPath = resolve(process.env.BENCH_CCFRAUD_MODEL ?? 'models/ccfraud/model.onnx');
if (!existsSync(modelPath)) {
  console.error(`ort-bare: model not found: ${modelPath}`);
  process.exit(1);
}

const session = await ort.InferenceSession.create(modelPath, { intraOpNumThreads: 1, interOpNumThreads: 1, graphOptimizationLevel: 'all' });
const input = session.inputNames[0]!;
// The same deterministic values as the bench's Arrow body (a fixed LCG in [-2, 2]).
const data = new Float32Array(rows * 29);
let s = 42;
for (let i = 0; i < data.length; i++) {
  s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
  data[i] = (s / 2 ** 32) * 4 - 2;
}
const feeds = { [input]: new ort.Tensor('float32', data, [rows, 29]) };
await session.run(feeds);

serveLoop(port, rows, () => session.run(feeds));
