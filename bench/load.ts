// Load-generator wrapper for the benchmarks: wrk when present (preferred: C, one thread, leaves
// the other core to the server under test), else autocannon (in-process JS, slower: it can be
// the bottleneck for the fastest servers, so numbers are not comparable with wrk runs).
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { aptInstall, onPath } from './tools.js';

export type LoadTool = 'wrk' | 'autocannon';

export interface LoadResult {
  tool: LoadTool;
  /** completed requests per second over the measured window */
  rps: number;
  p50_ms: number;
  p99_ms: number;
  /** responses that were not 2xx (wrk counts "non-2xx or 3xx") */
  non2xx: number;
  /** socket errors: connect, read, write and timeouts */
  errors: number;
  duration_s: number;
}

export interface LoadOptions {
  port: number;
  /** request path, with or without the leading slash */
  path: string;
  body: string;
  contentType: string;
  /** extra request headers (e.g. X-Auth-Token) */
  headers?: Record<string, string>;
  seconds: number;
  connections?: number;
  host?: string;
}

export interface ToolInfo {
  tool: LoadTool;
  /** e.g. "wrk 4.1.0 [epoll]" or "autocannon 9.0.0" */
  version: string;
  /** how the tool was chosen, for the output (installed, fell back, ...) */
  note: string;
}

const DEFAULT_CONNECTIONS = 64;

function wrkVersion(): string {
  // `wrk -v` prints its banner and exits non-zero; we only want the first line.
  const r = spawnSync('wrk', ['-v'], { encoding: 'utf8' });
  const line = `${r.stdout ?? ''}${r.stderr ?? ''}`.split('\n')[0] ?? '';
  // "wrk debian/4.1.0-3+b2 [epoll] Copyright (C) 2012 Will Glozer" -> "wrk debian/4.1.0-3+b2 [epoll]"
  return line.replace(/\s*Copyright.*$/i, '').trim() || 'wrk';
}

function autocannonVersion(): string {
  try {
    const req = createRequire(import.meta.url);
    const pkg = req('autocannon/package.json') as { version: string };
    return `autocannon ${pkg.version}`;
  } catch {
    return 'autocannon';
  }
}

let chosen: ToolInfo | undefined;

/** Picks the load tool once per process. `BENCH_TOOL=autocannon` forces the fallback. */
export function detectTool(): ToolInfo {
  if (chosen) return chosen;
  if (process.env.BENCH_TOOL === 'autocannon') {
    chosen = { tool: 'autocannon', version: autocannonVersion(), note: 'forced by BENCH_TOOL=autocannon' };
  } else if (onPath('wrk')) {
    chosen = { tool: 'wrk', version: wrkVersion(), note: 'found on PATH' };
  } else if (aptInstall('wrk', 'wrk')) {
    chosen = { tool: 'wrk', version: wrkVersion(), note: 'installed with apt-get' };
  } else {
    chosen = {
      tool: 'autocannon',
      version: autocannonVersion(),
      note:
        'autocannon FALLBACK: wrk not found (apt-get install wrk, or BENCH_INSTALL=1 as root); ' +
        'autocannon runs in-process in JS and may cap the fastest servers, so these numbers are not comparable with wrk runs',
    };
  }
  return chosen;
}

export async function runLoad(opts: LoadOptions): Promise<LoadResult> {
  const info = detectTool();
  return info.tool === 'wrk' ? runWrk(opts) : runAutocannon(opts);
}

// ---------------------------------------------------------------- wrk

function luaString(s: string): string {
  let out = '"';
  for (const ch of Buffer.from(s, 'utf8')) {
    if (ch === 0x22) out += '\\"';
    else if (ch === 0x5c) out += '\\\\';
    else if (ch >= 0x20 && ch < 0x7f) out += String.fromCharCode(ch);
    else out += `\\${ch.toString().padStart(3, '0')}`;
  }
  return `${out}"`;
}

export function wrkScript(body: string, contentType: string, headers: Record<string, string> = {}): string {
  return [
    'wrk.method = "POST"',
    `wrk.body = ${luaString(body)}`,
    `wrk.headers["Content-Type"] = ${luaString(contentType)}`,
    ...Object.entries(headers).map(([k, v]) => `wrk.headers[${luaString(k)}] = ${luaString(v)}`),
    '',
  ].join('\n');
}

/** wrk prints latencies as e.g. `412.00us`, `1.23ms`, `2.01s`, `1.00m`. */
function toMs(value: string, unit: string): number {
  const v = Number(value);
  switch (unit) {
    case 'us':
      return v / 1000;
    case 'ms':
      return v;
    case 's':
      return v * 1000;
    case 'm':
      return v * 60_000;
    case 'h':
      return v * 3_600_000;
    default:
      throw new Error(`wrk: unknown latency unit ${unit}`);
  }
}

export function parseWrk(output: string): Omit<LoadResult, 'tool'> {
  const rps = /^Requests\/sec:\s+([\d.]+)/m.exec(output);
  if (!rps) throw new Error(`could not parse wrk output:\n${output}`);
  const pct = (p: string): number => {
    const m = new RegExp(`^\\s+${p}%\\s+([\\d.]+)(us|ms|s|m|h)\\s*$`, 'm').exec(output);
    if (!m) throw new Error(`wrk output has no ${p}% latency line (was --latency passed?):\n${output}`);
    return toMs(m[1]!, m[2]!);
  };
  const dur = /requests in ([\d.]+)(us|ms|s|m|h),/.exec(output);
  const sock = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(output);
  const non2xx = /Non-2xx or 3xx responses: (\d+)/.exec(output);
  return {
    rps: Number(rps[1]),
    p50_ms: pct('50'),
    p99_ms: pct('99'),
    non2xx: non2xx ? Number(non2xx[1]) : 0,
    errors: sock ? sock.slice(1, 5).reduce((a, b) => a + Number(b), 0) : 0,
    duration_s: dur ? toMs(dur[1]!, dur[2]!) / 1000 : NaN,
  };
}

const liveWrk = new Set<{ child: ChildProcess; dir: string }>();

/** Kills any running load generator and removes its temp files (for signal handlers). */
export function killLoad(): void {
  for (const w of liveWrk) {
    w.child.kill('SIGKILL');
    rmSync(w.dir, { recursive: true, force: true });
  }
  liveWrk.clear();
}

async function runWrk(opts: LoadOptions): Promise<LoadResult> {
  const dir = mkdtempSync(join(tmpdir(), 'infergate-bench-wrk-'));
  const script = join(dir, 'post.lua');
  writeFileSync(script, wrkScript(opts.body, opts.contentType, opts.headers));
  const path = opts.path.startsWith('/') ? opts.path : `/${opts.path}`;
  const url = `http://${opts.host ?? '127.0.0.1'}:${opts.port}${path}`;
  const args = [
    '-t1',
    `-c${opts.connections ?? DEFAULT_CONNECTIONS}`,
    `-d${Math.max(1, Math.round(opts.seconds))}s`,
    '--latency',
    '-s',
    script,
    url,
  ];
  try {
    const { code, stdout, stderr } = await new Promise<{ code: number | null; stdout: string; stderr: string }>(
      (resolveRun, rejectRun) => {
        const child = spawn('wrk', args, { stdio: ['ignore', 'pipe', 'pipe'] });
        const entry = { child, dir };
        liveWrk.add(entry);
        child.on('close', () => liveWrk.delete(entry));
        let stdout = '';
        let stderr = '';
        child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
        child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
        child.on('error', rejectRun);
        child.on('close', (c) => resolveRun({ code: c, stdout, stderr }));
      },
    );
    if (code !== 0) throw new Error(`wrk ${args.join(' ')} exited ${String(code)}:\n${stderr}${stdout}`);
    return { tool: 'wrk', ...parseWrk(stdout) };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------- autocannon

interface AutocannonResult {
  requests: { total: number; average: number };
  latency: { p50: number; p99: number };
  non2xx: number;
  errors: number;
  timeouts: number;
  duration: number;
}
type Autocannon = (opts: Record<string, unknown>) => Promise<AutocannonResult>;

async function runAutocannon(opts: LoadOptions): Promise<LoadResult> {
  // autocannon ships no types; load it through require and describe the little we use.
  const autocannon = createRequire(import.meta.url)('autocannon') as Autocannon;
  const path = opts.path.startsWith('/') ? opts.path : `/${opts.path}`;
  const r = await autocannon({
    url: `http://${opts.host ?? '127.0.0.1'}:${opts.port}${path}`,
    method: 'POST',
    body: opts.body,
    headers: { 'content-type': opts.contentType, ...opts.headers },
    connections: opts.connections ?? DEFAULT_CONNECTIONS,
    pipelining: 1,
    duration: opts.seconds,
  });
  const duration = r.duration > 0 ? r.duration : opts.seconds;
  return {
    tool: 'autocannon',
    rps: r.requests.total / duration,
    p50_ms: r.latency.p50,
    p99_ms: r.latency.p99,
    non2xx: r.non2xx,
    errors: r.errors, // autocannon's errors already include its timeouts
    duration_s: duration,
  };
}
