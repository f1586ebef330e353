// The Arrow path of SPEC §14 ("Arrow path, 10k-row tables: ≥ 0.5 × the rows/s of bare ONNX Runtime
// at the same batch size"): the 10k-row ccfraud table, its check, and a load generator for binary
// bodies (wrk with the body read from a file by its Lua script; an in-process keep-alive client
// when wrk is missing), and the bare ONNX Runtime loop's measurement.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { Agent, request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Field, FixedSizeList, Float32, Table, makeData, makeVector, tableFromIPC, tableToIPC } from 'apache-arrow';
import { detectTool, parseWrk, type LoadResult } from './load.js';

/** A measured rate with the program that produced it (wrk, autocannon, the node client, the ORT loop). */
export type Measurement = Omit<LoadResult, 'tool'> & { tool: string };

export const ARROW_ROWS = 10_000;
export const ARROW_STREAM = 'application/vnd.apache.arrow.stream';

/** `rows` × 29 deterministic floats in [-2, 2] (a fixed LCG), as bench/servers/ort-bare.ts makes them. */
export function ccfraudValues(rows: number): Float32Array {
  const data = new Float32Array(rows * 29);
  let s = 42;
  for (let i = 0; i < data.length; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    data[i] = (s / 2 ** 32) * 4 - 2;
  }
  return data;
}

/** The request body: one `tensor` column of FixedSizeList<Float32>[29] (numpy [N, 29] float32 through pyarrow), an IPC stream. */
export function ccfraudTable(rows: number): Uint8Array {
  const child = makeData({ type: new Float32(), length: rows * 29, data: ccfraudValues(rows) });
  const col = makeData({ type: new FixedSizeList(29, new Field('item', new Float32(), true)), length: rows, child });
  return tableToIPC(new Table({ tensor: makeVector(col) }), 'stream');
}

/**
 * One request, checked: 200, an Arrow stream of `rows` rows whose out.dense_1 equals what
 * `expected` (a direct ONNX Runtime run of the same rows) gives, and in.tensor as sent.
 */
export async function checkArrow(port: number, path: string, body: Uint8Array, rows: number, expected: Float32Array): Promise<void> {
  const url = `http://127.0.0.1:${port}${path}`;
  const r = await fetch(url, { method: 'POST', body, headers: { 'content-type': ARROW_STREAM } });
  const bytes = new Uint8Array(await r.arrayBuffer());
  const type = r.headers.get('content-type');
  if (r.status !== 200 || type !== ARROW_STREAM) {
    throw new Error(`check: POST ${url} should answer 200 ${ARROW_STREAM}; got ${r.status} ${type}: ${Buffer.from(bytes.subarray(0, 300)).toString()}`);
  }
  const t = tableFromIPC(bytes);
  const out = t.getChild('out.dense_1');
  if (t.numRows !== rows || !out || !t.getChild('in.tensor') || !t.getChild('time') || !t.getChild('check_failures')) {
    throw new Error(`check: the answer has ${t.numRows} rows and columns ${t.schema.fields.map((f) => f.name).join(', ')}; expected ${rows} rows of time, in.tensor, out.dense_1, check_failures`);
  }
  for (let i = 0; i < rows; i++) {
    const got = (out.get(i) as { get(k: number): number }).get(0);
    if (got !== expected[i]) throw new Error(`check: row ${i}: out.dense_1 is ${got}, a direct run gives ${expected[i]}`);
  }
}

// ---------------------------------------------------------------- load

export interface BinaryLoad {
  port: number;
  path: string;
  body: Uint8Array;
  contentType: string;
  seconds: number;
  connections: number;
}

export function runBinaryLoad(opts: BinaryLoad): Promise<Measurement> {
  return detectTool().tool === 'wrk' ? wrkBinary(opts) : nodeClient(opts);
}

const liveWrk = new Set<ChildProcess>();

/** Kills a running wrk (for the harness's exit handler). */
export function killBinaryLoad(): void {
  for (const c of liveWrk) c.kill('SIGKILL');
  liveWrk.clear();
}

async function wrkBinary(opts: BinaryLoad): Promise<Measurement> {
  const dir = mkdtempSync(join(tmpdir(), 'infergate-bench-arrow-'));
  try {
    // A Lua string holds any bytes; the body is read from a file, not escaped into the script.
    writeFileSync(join(dir, 'body.bin'), opts.body);
    writeFileSync(join(dir, 'post.lua'), [
      'wrk.method = "POST"',
      `local f = assert(io.open(${JSON.stringify(join(dir, 'body.bin'))}, "rb"))`,
      'wrk.body = f:read("*a")',
      'f:close()',
      `wrk.headers["Content-Type"] = ${JSON.stringify(opts.contentType)}`,
      '',
    ].join('\n'));
    const args = ['-t1', `-c${opts.connections}`, `-d${Math.max(1, Math.round(opts.seconds))}s`, '--latency', '-s', join(dir, 'post.lua'), `http://127.0.0.1:${opts.port}${opts.path}`];
    const { code, out } = await new Promise<{ code: number | null; out: string }>((res, rej) => {
      const child = spawn('wrk', args, { stdio: ['ignore', 'pipe', 'pipe'] });
      liveWrk.add(child);
      let out = '';
      child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
      child.stderr.setEncoding('utf8').on('data', (d: string) => (out += d));
      child.on('error', rej);
      child.on('close', (c) => {
        liveWrk.delete(child);
        res({ code: c, out });
      });
    });
    if (code !== 0) throw new Error(`wrk ${args.join(' ')} exited ${String(code)}:\n${out}`);
    return { tool: 'wrk', ...parseWrk(out) };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Without wrk: `connections` keep-alive loops in this process, each one request in flight. */
async function nodeClient(opts: BinaryLoad): Promise<Measurement> {
  const agent = new Agent({ keepAlive: true, maxSockets: opts.connections });
  const latencies: number[] = [];
  let non2xx = 0;
  let errors = 0;
  const start = performance.now();
  const end = start + opts.seconds * 1000;
  const one = (): Promise<void> => new Promise((res) => {
    const t0 = performance.now();
    const req = request({ host: '127.0.0.1', port: opts.port, path: opts.path, method: 'POST', agent, headers: { 'content-type': opts.contentType, 'content-length': opts.body.length } }, (r) => {
      r.on('data', () => undefined);
      r.on('end', () => {
        if ((r.statusCode ?? 0) >= 300) non2xx++;
        latencies.push(performance.now() - t0);
        res();
      });
    });
    req.on('error', () => {
      errors++;
      res();
    });
    req.end(opts.body);
  });
  await Promise.all(Array.from({ length: opts.connections }, async () => {
    while (performance.now() < end) await one();
  }));
  agent.destroy();
  const duration = (performance.now() - start) / 1000;
  latencies.sort((a, b) => a - b);
  const pct = (p: number): number => latencies[Math.min(latencies.length - 1, Math.floor((p / 100) * latencies.length))] ?? NaN;
  return { tool: 'node http client (wrk missing)', rps: latencies.length / duration, p50_ms: pct(50), p99_ms: pct(99), non2xx, errors, duration_s: duration };
}

/** The bare ONNX Runtime loop (bench/servers/ort-bare.ts) for `seconds`: runs/s as requests/s. */
export async function runOrtLoop(port: number, seconds: number): Promise<Measurement> {
  const r = await fetch(`http://127.0.0.1:${port}/run?seconds=${seconds}`);
  if (r.status !== 200) throw new Error(`ort-bare answered ${r.status}: ${await r.text()}`);
  const m = (await r.json()) as { runs: number; seconds: number; p50_ms: number; p99_ms: number };
  return { tool: 'onnxruntime-node loop', rps: m.runs / m.seconds, p50_ms: m.p50_ms, p99_ms: m.p99_ms, non2xx: 0, errors: 0, duration_s: m.seconds };
}
