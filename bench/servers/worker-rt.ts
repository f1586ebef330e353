// One worker-thread round trip, as the gateway's ONNX path makes one per batch: a piscina pool of
// one worker set up as the gateway's runner sets it up (two tasks per worker), a [1, 29] float32
// row moved to it and moved back, nothing run. At one request at a time this is the part of the
// gateway-added latency that is the hand-off between threads (waking one, then being woken).
//
// Served by loop.ts: GET /run?seconds=S runs it back to back for S seconds.
// Usage: node dist/bench/servers/worker-rt.js <port>. Prints `listening <port>` when ready.
import { Piscina } from 'piscina';
import { serveLoop } from './loop.js';

const port = Number(process.argv[2] ?? process.env.PORT ?? 9005);
if (!Number.isInteger(port) || port <= 0 || port > 65535) {
  console.error('worker-rt: usage: worker-rt.js <port>');
  process.exit(2);
}
const pool = new Piscina({
  filename: new URL('./worker-echo.js', import.meta.url).href,
  minThreads: 1,
  maxThreads: 1,
  concurrentTasksPerWorker: 2,
  idleTimeout: Number.POSITIVE_INFINITY,
});
const roundTrip = (): Promise<unknown> => {
  const data = new Float32Array(29);
  return pool.run({ data }, { transferList: [data.buffer] });
};
await roundTrip();
serveLoop(port, 1, roundTrip);
