import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after } from 'node:test';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
export const MAIN = path.join(ROOT, 'dist/src/cli/main.js');
export const SAMPLE_MODELS = path.join(ROOT, 'models');
/** Every test gateway accepts this admin token (INFERGATE_ADMIN_TOKEN), unless a test says otherwise. */
export const ADMIN_TOKEN = 'test-admin-token-0123456789';

export interface RunningGateway {
  url: string;
  dataDir: string;
  port: number;
  proc: ChildProcess;
  stdout(): string;
  stderr(): string;
  /** SIGTERM and wait for the exit code. */
  stop(): Promise<number | null>;
  exited: Promise<number | null>;
}

export interface GatewayOptions {
  modelsDir?: string;
  /** gateway.yaml contents (as an object, written as JSON). */
  config?: Record<string, unknown>;
  env?: Record<string, string>;
  /** Reuse a data directory (restart tests); a fresh one otherwise. */
  dataDir?: string;
  /** Variables of the test's environment the gateway must not see. */
  unsetEnv?: string[];
}

/** Gateways still running when a test file ends (a failed test skipped its stop) are killed then. */
const running = new Set<ChildProcess>();
/** Folders made by tempDir, removed when the test file ends (after its gateways are gone). */
const made: string[] = [];
after(async () => {
  const live = [...running].filter((p) => p.exitCode === null && p.signalCode === null);
  const exits = live.map((p) => new Promise((resolve) => p.once('exit', resolve)));
  for (const p of live) p.kill('SIGKILL');
  await Promise.all(exits);
  for (const dir of made) rmSync(dir, { recursive: true, force: true, maxRetries: 3 });
});

export function tempDir(prefix = 'infergate-test-'): string {
  const dir = mkdtempSync(path.join(tmpdir(), prefix));
  made.push(dir);
  return dir;
}

/** Starts the real gateway binary on an ephemeral port and resolves once it prints its listening line. */
export async function startGateway(opts: GatewayOptions = {}): Promise<RunningGateway> {
  const dataDir = opts.dataDir ?? tempDir('infergate-data-');
  const args = [MAIN, 'serve', '--port', '0', '--data-dir', dataDir, '--models-dir', opts.modelsDir ?? SAMPLE_MODELS];
  if (opts.config) {
    const file = path.join(dataDir, 'gateway.json');
    writeFileSync(file, JSON.stringify(opts.config));
    args.push('--config', file);
  }
  const env: NodeJS.ProcessEnv = { ...process.env, INFERGATE_LOG_LEVEL: 'warn', INFERGATE_ADMIN_TOKEN: ADMIN_TOKEN, ...opts.env };
  for (const name of opts.unsetEnv ?? []) delete env[name];
  const proc = spawn(process.execPath, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  proc.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
  running.add(proc);
  void exited.then(() => running.delete(proc));
  const port = await new Promise<number>((resolve, reject) => {
    proc.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /infergate listening on http:\/\/[^:]+:(\d+)/.exec(out);
      if (m) resolve(Number(m[1]));
    });
    void exited.then((code) => reject(new Error(`gateway exited with ${code} before listening:\n${err}`)));
  });
  const url = `http://127.0.0.1:${port}`;
  return {
    url,
    dataDir,
    port,
    proc,
    exited,
    stdout: () => out,
    stderr: () => err,
    async stop() {
      if (proc.exitCode === null) proc.kill('SIGTERM');
      return exited;
    },
  };
}

export interface Answer {
  status: number;
  /** The reason phrase of the status line. */
  statusText: string;
  headers: Headers;
  text: string;
  json: any;
}

export const post = (url: string, body: string | Uint8Array, contentType = 'application/json', headers: Record<string, string> = {}): Promise<Answer> =>
  request(url, { method: 'POST', body, headers: { 'content-type': contentType, ...headers } });

/** fetch with any method and body, read as an Answer. */
export async function request(url: string, init: RequestInit): Promise<Answer> {
  const res = await fetch(url, init);
  const text = await res.text();
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: res.status, statusText: res.statusText, headers: res.headers, text, json };
}

export const postJson = (url: string, value: unknown, contentType?: string, headers?: Record<string, string>): Promise<Answer> =>
  post(url, JSON.stringify(value), contentType, headers);

/** Polls a condition on the running gateway (e.g. a metric) until it holds; bounded. */
export async function until(what: string, check: () => Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** The value of one Prometheus sample line, e.g. metric('infergate_batches_running{service="x",version="0.0.1"}'). */
export async function metric(url: string, sample: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(sample + ' '));
  return line ? Number(line.slice(sample.length + 1)) : 0;
}

/** A management API call with a JSON body (or none). */
export function api(gw: RunningGateway, method: string, path: string, body?: unknown, token: string | null = ADMIN_TOKEN): Promise<Answer> {
  const auth: Record<string, string> = token ? { 'x-auth-token': token } : {};
  return request(`${gw.url}${path}`, body === undefined ? { method, headers: auth } : { method, body: JSON.stringify(body), headers: { 'content-type': 'application/json', ...auth } });
}

/** Waits until a service reaches `status` (and is not mid-update); fails fast on an unexpected final status. */
export async function waitForService(gw: RunningGateway, key: string, status: string, timeoutMs = 30_000): Promise<any> {
  let last: any;
  await until(`service ${key} to be ${status}`, async () => {
    const a = await api(gw, 'GET', `/v1/services/${key}`);
    last = a.json;
    if (a.status === 200 && last.status === 'failed' && status !== 'failed') throw new Error(`service ${key} failed: ${JSON.stringify(last)}`);
    return a.status === 200 && last.status === status && !last.updating;
  }, timeoutMs);
  return last;
}

/** Uploads a model file (.onnx, .tar.gz, .zip) as multipart, the way a user's client does. */
export function upload(gw: RunningGateway, metadata: Record<string, unknown>, filename: string, data: Uint8Array): Promise<Answer> {
  const form = new FormData();
  form.append('metadata', JSON.stringify(metadata));
  form.append('file', new Blob([data]), filename);
  return request(`${gw.url}/v1/models`, { method: 'POST', body: form, headers: { 'x-auth-token': ADMIN_TOKEN } });
}
