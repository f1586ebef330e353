// A timed loop served over HTTP, for the baselines that have no HTTP of their own on the measured
// path (ort-bare.ts, worker-rt.ts). Each runs as its own process, like the servers, so the bench
// process never shares its thread:
//   GET /run?seconds=S  runs `step` back to back for S seconds and answers
//   {"runs", "seconds", "rows", "p50_ms", "p99_ms"}.
import { createServer } from 'node:http';

interface LoopResult {
  runs: number;
  seconds: number;
  rows: number;
  p50_ms: number;
  p99_ms: number;
}

async function loop(step: () => Promise<unknown>, seconds: number, rows: number): Promise<LoopResult> {
  const times: number[] = [];
  const start = performance.now();
  const end = start + seconds * 1000;
  let t = start;
  while (t < end) {
    await step();
    const now = performance.now();
    times.push(now - t);
    t = now;
  }
  times.sort((a, b) => a - b);
  const pct = (p: number): number => times[Math.min(times.length - 1, Math.floor((p / 100) * times.length))] ?? NaN;
  return { runs: times.length, seconds: (t - start) / 1000, rows, p50_ms: pct(50), p99_ms: pct(99) };
}

/** Serves `step`'s timed loop on 127.0.0.1:port and prints `listening <port>` when ready. */
export function serveLoop(port: number, rows: number, step: () => Promise<unknown>): void {
  createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    const seconds = Number(url.searchParams.get('seconds') ?? 1);
    if (url.pathname !== '/run' || !(seconds > 0)) {
      res.writeHead(404).end();
      return;
    }
    loop(step, seconds, rows).then((r) => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(r)), (err: unknown) => res.writeHead(500).end(String(err)));
  }).listen(port, '127.0.0.1', () => console.log(`listening ${port}`));
}
