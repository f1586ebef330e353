// The benchmark harness (SPEC §14). One run measures every scenario sequentially on this
// machine, one server at a time so they never share the CPU, and writes bench/RESULTS.md.
//
//   npm run bench                              all scenarios, writes bench/RESULTS.md
//   BENCH_ONLY=bare_uws,fastify_ort npm run bench   a subset, writes bench/out/RESULTS.partial.md
//
// Environment: BENCH_SECONDS (default 10), BENCH_WARMUP_SECONDS (2), BENCH_CONNECTIONS (64),
// BENCH_ROUNDS (3: every scenario is measured once per round, rounds one after another; each
// ratio is the median of its per-round ratios, and the Raw table shows each scenario's median round),
// BENCH_ONLY, BENCH_RESULTS (output path override), BENCH_TOOL=autocannon, BENCH_INSTALL=1,
// BENCH_CCFRAUD_MODEL (model for fastify_ort; default models/ccfraud/model.onnx),
// BENCH_INFERGATE_MAIN (the CLI to start; default dist/src/cli/main.js), BENCH_SOAK_SECONDS
// (the memory soak's length; default 600, SPEC §14's ten minutes).
// The Arrow path (ort_bare_10k, infergate_arrow) is counted in rows/s: 10k-row tables through
// infergate against bare onnxruntime-node running the same [10000, 29] batch back to back.
// The proxy scenarios (nginx_proxy, infergate_proxy) need nginx: when it is missing (and
// BENCH_INSTALL=1 as root cannot apt-get it) nginx_proxy is skipped, named in the output.
//
// The memory checks (idle_rss, idle_rss_all, soak; bench/memory.ts) run after the scenarios and
// are chosen by BENCH_ONLY like them.
//
// Adding a scenario: push a Scenario onto SCENARIOS (and a Ratio onto RATIOS if it has a target).
// First, as in the gateway: ONNX Runtime's telemetry off (inherited by the servers this starts).
import '../src/runtime/onnx/telemetry.js';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import os from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ARROW_ROWS, ARROW_STREAM, ccfraudTable, ccfraudValues, checkArrow, killBinaryLoad, runBinaryLoad, runOrtLoop, type Measurement } from './arrow-load.js';
import { detectTool, killLoad, runLoad } from './load.js';
import { MEMORY_CHECKS, memoryTable, type MemoryDeps, type MemoryResult } from './memory.js';
import { aptInstall, onPath } from './tools.js';
import { cpuBoundRate, CpuWindow, totalPerRequest, type CpuPerRequest } from './cpu.js';

/** Repository root: this file runs as dist/bench/run.js. */
const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const DIST_BENCH = join(ROOT, 'dist', 'bench');

// ---------------------------------------------------------------- servers

export interface ServerHandle {
  pid: number;
  port: number;
  /** resolves when the process has exited (after stop() or on its own) */
  exited: Promise<number | null>;
  /** true once the process has exited */
  readonly dead: boolean;
  /** last few KiB of the child's stdout+stderr, for error messages */
  tail(): string;
  /** SIGTERM, wait for exit (SIGKILL after 10 s), then clean up */
  stop(): Promise<void>;
  /** a proxy's upstream, whose CPU is counted beside the proxy's */
  upstreamPid?: number;
}

const live = new Set<ChildProcess>();
process.on('exit', () => {
  killLoad();
  killBinaryLoad();
  for (const c of live) c.kill('SIGKILL');
});
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.on(sig, () => process.exit(130)); // the 'exit' handler kills the children
}

/** A free TCP port on 127.0.0.1 (uWS cannot listen on port 0 and report it). */
export function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', rej);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => (port ? res(port) : rej(new Error('could not get a free port'))));
    });
  });
}

const TAIL_BYTES = 8192;
const START_TIMEOUT_MS = Number(process.env.BENCH_START_TIMEOUT_MS ?? 120_000);

/**
 * Spawns `cmd args` in the repository root and resolves once a line of its stdout or stderr
 * matches `readyRegex`; rejects (with the child's output) if it exits first or never gets ready.
 */
export function startServer(
  cmd: string,
  args: string[],
  readyRegex: RegExp,
  port: number,
  opts: { env?: NodeJS.ProcessEnv; cleanup?: () => void } = {},
): Promise<ServerHandle> {
  const child = spawn(cmd, args, {
    cwd: ROOT,
    env: { ...process.env, ...opts.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  live.add(child);
  let out = '';
  let dead = false;
  const keep = (d: string): void => {
    out += d;
    if (out.length > 4 * TAIL_BYTES) out = out.slice(-TAIL_BYTES);
  };
  const tail = (): string => out.slice(-TAIL_BYTES);
  const exited = new Promise<number | null>((res) => {
    child.on('exit', (code, signal) => {
      dead = true;
      live.delete(child);
      opts.cleanup?.();
      res(code ?? (signal ? -1 : null));
    });
  });

  const show = (a: string): string => (a.startsWith(ROOT + '/') ? relative(ROOT, a) : a);
  const cmdline = [cmd === process.execPath ? 'node' : cmd, ...args].map(show).join(' ');
  return new Promise<ServerHandle>((res, rej) => {
    let ready = false;
    let lineBuf = '';
    const onData = (d: string): void => {
      keep(d);
      if (ready) return;
      lineBuf += d;
      const lines = lineBuf.split('\n');
      lineBuf = lines.pop() ?? '';
      for (const line of lines) {
        if (readyRegex.test(line)) {
          ready = true;
          clearTimeout(timer);
          lineBuf = '';
          res(handle);
          return;
        }
      }
    };
    child.stdout.setEncoding('utf8').on('data', onData);
    child.stderr.setEncoding('utf8').on('data', onData);
    child.on('error', (err) => {
      if (!ready) rej(new Error(`could not start ${cmdline}: ${err.message}`));
    });
    void exited.then((code) => {
      if (!ready) {
        clearTimeout(timer);
        rej(new Error(`${cmdline} exited (code ${String(code)}) before it was ready; its output:\n${tail()}`));
      }
    });
    const timer = setTimeout(() => {
      if (ready) return;
      child.kill('SIGKILL');
      rej(new Error(`${cmdline} printed no line matching ${readyRegex} in ${START_TIMEOUT_MS} ms; its output:\n${tail()}`));
    }, START_TIMEOUT_MS);

    const handle: ServerHandle = {
      pid: child.pid ?? -1,
      port,
      exited,
      get dead() {
        return dead;
      },
      tail,
      async stop() {
        if (dead) return;
        child.kill('SIGTERM');
        const killer = setTimeout(() => {
          console.error(`bench: ${cmdline} ignored SIGTERM for 10 s; SIGKILL`);
          child.kill('SIGKILL');
        }, 10_000);
        await exited;
        clearTimeout(killer);
      },
    };
  });
}

function benchServer(script: string, port: number, args: string[] = []): Promise<ServerHandle> {
  const file = join(DIST_BENCH, 'servers', script);
  if (!existsSync(file)) throw new Error(`${file} is missing: run \`npm run build\` first`);
  return startServer(process.execPath, [file, String(port), ...args], /^listening (\d+)/, port);
}

// ---------------------------------------------------------------- bodies and checks

/** 29 deterministic floats in [-2, 2] (a fixed LCG), as a ccfraud `tensor` row. */
export function ccfraudRow(seed = 42): number[] {
  let s = seed >>> 0;
  const row: number[] = [];
  for (let i = 0; i < 29; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    row.push(Math.round(((s / 2 ** 32) * 4 - 2) * 1e6) / 1e6);
  }
  return row;
}

const PANDAS_RECORDS = 'application/json; format=pandas-records';
const CCFRAUD_BATCH1 = JSON.stringify([{ tensor: ccfraudRow() }]);

/** One request; the answer must be a 200 pandas-records array whose first record has out.dense_1. */
async function checkDense1(port: number, path: string, body: string, contentType: string): Promise<void> {
  const url = `http://127.0.0.1:${port}${path}`;
  let status = 0;
  let text = '';
  try {
    const r = await fetch(url, { method: 'POST', body, headers: { 'content-type': contentType } });
    status = r.status;
    text = await r.text();
  } catch (err) {
    throw new Error(`check: POST ${url} failed: ${String(err)}`);
  }
  let ok = false;
  try {
    const j = JSON.parse(text) as unknown;
    const first = Array.isArray(j) ? (j[0] as { out?: { dense_1?: unknown } } | undefined) : undefined;
    ok = Array.isArray(first?.out?.dense_1);
  } catch {
    ok = false;
  }
  if (status !== 200 || !ok) {
    throw new Error(
      `check: POST ${url} (${contentType}) should answer 200 with records carrying out.dense_1; ` +
        `got ${status}: ${text.slice(0, 500)}`,
    );
  }
}

// ---------------------------------------------------------------- scenarios

export interface Scenario {
  /** short id, used by BENCH_ONLY and in the tables */
  name: string;
  /** one line for the output and RESULTS.md */
  description: string;
  start(): Promise<ServerHandle>;
  path: string;
  body: string;
  contentType: string;
  /** extra request headers; a check may fill them in (a token it obtained) */
  headers?: Record<string, string>;
  /** connections for this scenario; default BENCH_CONNECTIONS (64) */
  connections?: number;
  /** optional sanity request before warm-up; throws to abort the run */
  check?(server: ServerHandle): Promise<void>;
  /** why this scenario cannot run on this machine (a tool is missing), or undefined: it runs */
  unavailable?(): string | undefined;
  /** rows each request carries: the scenario is also reported (and its ratios taken) in rows/s */
  rowsPerRequest?: number;
  /** a load of its own instead of wrk/autocannon on `body` (binary bodies, a loop without HTTP) */
  load?(server: ServerHandle, seconds: number, connections: number): Promise<Measurement>;
}

export interface Ratio {
  numerator: string;
  denominator: string;
  /** None: a ratio shown for context (how far a ceiling is), judged against nothing. */
  target?: number;
  /** where the target comes from, or what the ratio shows */
  source: string;
}

const BENCH_ADMIN = 'bench-admin-token-not-for-production';

/**
 * `infergate serve` on the sample models (or on `opts.modelsDir`), with an optional gateway
 * config (JSON); `opts.cleanup` runs when the process has exited.
 */
async function startInfergate(
  config: Record<string, unknown> | null,
  opts: { modelsDir?: string; cleanup?: () => void } = {},
): Promise<ServerHandle> {
  const port = await freePort();
  // BENCH_INFERGATE_MAIN lets one point the bench at another build of the CLI.
  const main = resolve(ROOT, process.env.BENCH_INFERGATE_MAIN ?? join('dist', 'src', 'cli', 'main.js'));
  if (!existsSync(main)) throw new Error(`${main} is missing: run \`npm run build\` first`);
  const dataDir = mkdtempSync(join(os.tmpdir(), 'infergate-bench-data-'));
  const modelsDir = opts.modelsDir ?? 'models';
  const args = [main, 'serve', '--host', '127.0.0.1', '--port', String(port), '--models-dir', modelsDir, '--data-dir', dataDir];
  if (config) {
    const file = join(dataDir, 'gateway.json');
    writeFileSync(file, JSON.stringify(config));
    args.push('--config', file);
  }
  return startServer(process.execPath, args, /infergate listening on http:\/\/\S+:\d+/, port, {
    env: { INFERGATE_ADMIN_TOKEN: BENCH_ADMIN },
    cleanup: () => {
      rmSync(dataDir, { recursive: true, force: true });
      opts.cleanup?.();
    },
  });
}

/**
 * The same ccfraud path with everything a production service turns on: a JWT checked per
 * request (from the verified-token cache), routing rules evaluated, a traffic limit counted.
 */
const SECURED: Scenario = {
  name: 'infergate_secured',
  description: 'infergate with auth: token (a JWT per request), 3 routing rules and a traffic_limit, same model and body',
  start: () => startInfergate({
    services: [{
      name: 'secured', auth: 'token', traffic_limit: 10_000_000,
      rules: [
        { condition: "#HEADER_x-canary == 'yes'", version: '0.0.1' },
        { condition: "#USER_NAME matches 'beta-.*'", version: '0.0.1' },
        { condition: '#HEADER_uid.hashCode() % 100 < 10', version: '0.0.1' },
      ],
      versions: [{ model: 'ccfraud' }],
    }],
  }),
  path: '/v1/infers/secured',
  body: CCFRAUD_BATCH1,
  contentType: PANDAS_RECORDS,
  async check(s) {
    // A real user with a real JWT, as a client would have.
    const base = `http://127.0.0.1:${s.port}`;
    const admin = { 'x-auth-token': BENCH_ADMIN, 'content-type': 'application/json' };
    const user = (await (await fetch(`${base}/v1/users`, { method: 'POST', headers: admin, body: JSON.stringify({ username: 'bench-user', password: 'bench-password' }) })).json()) as { id: string };
    const projects = (await (await fetch(`${base}/v1/projects`, { headers: admin })).json()) as { projects: { id: string }[] };
    await fetch(`${base}/v1/projects/${projects.projects[0]!.id}/members`, { method: 'POST', headers: admin, body: JSON.stringify({ user_id: user.id, role: 'invoker' }) });
    const tokens = (await (await fetch(`${base}/v1/auth/tokens`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username: 'bench-user', password: 'bench-password' }) })).json()) as { access_token: string };
    SECURED.headers = { 'x-auth-token': tokens.access_token, uid: 'user-42' };
    const r = await fetch(`${base}/v1/infers/secured`, { method: 'POST', body: CCFRAUD_BATCH1, headers: { 'content-type': PANDAS_RECORDS, ...SECURED.headers } });
    if (r.status !== 200) throw new Error(`check: the secured service answered ${r.status}: ${await r.text()}`);
  },
};

// ---------------------------------------------------------------- proxy path (SPEC §14)
//
// nginx (one worker, keep-alive upstream) and infergate's proxy for Image models, measured in
// the same run against the same upstream process: bench/servers/upstream-uws.ts, started once
// for both and stopped when the run ends. Both get the ccfraud body on /v1/infers/proxied and
// forward it to the upstream's `/`.

/** What upstream-uws.ts answers every POST with; each proxy must pass it through unchanged. */
const UPSTREAM_ANSWER = '{"result":[{"predict":1}]}';
const PROXIED_PATH = '/v1/infers/proxied';
/** How long a proxy may take to answer its first request with the upstream's body. */
const PROXY_READY_MS = Math.min(START_TIMEOUT_MS, 60_000);

let upstream: Promise<ServerHandle> | undefined;

/** The one upstream both proxy scenarios forward to, started on first use. */
async function sharedUpstream(): Promise<ServerHandle> {
  upstream ??= freePort().then((port) => benchServer('upstream-uws.js', port));
  const up = await upstream;
  // Dead since the last scenario: fail here, with its output, not as 502s under load.
  if (up.dead) throw new Error(`the proxy upstream (pid ${up.pid}) has exited; its output:\n${up.tail()}`);
  return up;
}

async function stopSharedUpstream(): Promise<void> {
  const up = upstream;
  upstream = undefined;
  await up?.then((s) => s.stop(), () => undefined);
}

/**
 * The proxy's handle, counted dead when either the proxy or its upstream dies: a proxy answering
 * 502 because its upstream is gone must not pass for a measurement. stop() stops only the proxy;
 * the upstream stays up for the next proxy scenario.
 */
function behind(proxy: ServerHandle, up: ServerHandle): ServerHandle {
  return {
    pid: proxy.pid,
    port: proxy.port,
    upstreamPid: up.pid,
    exited: proxy.exited,
    get dead() {
      return proxy.dead || up.dead;
    },
    tail: () => (up.dead ? `${proxy.tail()}\n--- the upstream (pid ${up.pid}) exited; its output:\n${up.tail()}` : proxy.tail()),
    stop: () => proxy.stop(),
  };
}

/**
 * Polls POST `path` until it answers 200 with the upstream's constant body: the proxy is ready
 * (infergate marks an Image service healthy only after its first health check passes).
 */
async function checkProxied(s: ServerHandle, path: string): Promise<void> {
  const url = `http://127.0.0.1:${s.port}${path}`;
  const deadline = Date.now() + PROXY_READY_MS;
  let last = '';
  for (;;) {
    try {
      const r = await fetch(url, { method: 'POST', body: CCFRAUD_BATCH1, headers: { 'content-type': PANDAS_RECORDS } });
      const text = await r.text();
      if (r.status === 200 && sameJson(text, UPSTREAM_ANSWER)) return;
      last = `${r.status}: ${text.slice(0, 500)}`;
    } catch (err) {
      last = String(err);
    }
    if (s.dead) throw new Error(`check: the server exited; its output:\n${s.tail()}`);
    if (Date.now() > deadline) {
      throw new Error(`check: POST ${url} did not answer 200 ${UPSTREAM_ANSWER} within ${PROXY_READY_MS} ms; last answer ${last}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
}

function sameJson(text: string, expected: string): boolean {
  try {
    return JSON.stringify(JSON.parse(text)) === expected;
  } catch {
    return false;
  }
}

// root's PATH has the sbin directories; a user's often has not, and Debian puts nginx there.
const SBIN = ['/usr/sbin', '/usr/local/sbin', '/sbin'];
let nginxBin: string | null | undefined;

/** nginx on PATH or in sbin, else installed when BENCH_INSTALL=1 as root; looked up once. */
function findNginx(): string | undefined {
  nginxBin ??= onPath('nginx', SBIN) ?? aptInstall('nginx', 'nginx', SBIN) ?? null;
  return nginxBin ?? undefined;
}

/** e.g. "nginx/1.22.1", for RESULTS.md (`nginx -v` writes to stderr). */
function nginxVersion(bin: string): string {
  const r = spawnSync(bin, ['-v'], { encoding: 'utf8' });
  return /nginx\/\S+/.exec(`${r.stderr ?? ''}${r.stdout ?? ''}`)?.[0] ?? 'nginx';
}

/**
 * The nginx.conf of nginx_proxy: one worker, foreground, a keep-alive upstream pool, and every
 * path nginx writes (pid, temp files) under `dir`, so it runs as any user. keepalive_requests is
 * raised on both sides so neither connection pool is recycled during the run (nginx's default
 * closes a connection after 1000 requests): the baseline is nginx at its best.
 */
export function nginxConf(dir: string, port: number, upstreamPort: number): string {
  return `# infergate bench: nginx_proxy (SPEC §14, proxy path)
worker_processes 1;
daemon off;
pid ${dir}/nginx.pid;
# notice level: the master's "start worker processes" line is the harness's readiness signal
error_log stderr notice;
events {
    worker_connections 1024;
}
http {
    access_log off;
    client_body_temp_path ${dir}/client_body;
    proxy_temp_path ${dir}/proxy;
    fastcgi_temp_path ${dir}/fastcgi;
    uwsgi_temp_path ${dir}/uwsgi;
    scgi_temp_path ${dir}/scgi;
    keepalive_requests 1000000;
    upstream infer_upstream {
        server 127.0.0.1:${upstreamPort};
        keepalive 64;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:${port};
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        # the same mapping as infergate's: the service path goes to the upstream's /
        location = ${PROXIED_PATH} {
            proxy_pass http://infer_upstream/;
        }
        location / {
            proxy_pass http://infer_upstream;
        }
    }
}
`;
}

async function startNginxProxy(): Promise<ServerHandle> {
  const bin = findNginx();
  if (!bin) throw new Error('nginx is missing'); // unavailable() said so before the run
  const up = await sharedUpstream();
  const port = await freePort();
  const dir = mkdtempSync(join(os.tmpdir(), 'infergate-bench-nginx-'));
  // As root nginx's worker runs as nobody and must reach its temp dirs under this one.
  chmodSync(dir, 0o755);
  const conf = join(dir, 'nginx.conf');
  writeFileSync(conf, nginxConf(dir, port, up.port));
  // -e stderr: the log nginx opens before it reads the config (/var/log/nginx as built).
  const proxy = await startServer(bin, ['-p', `${dir}/`, '-e', 'stderr', '-c', conf], /start worker process/, port, {
    cleanup: () => rmSync(dir, { recursive: true, force: true }),
  });
  return behind(proxy, up);
}

/** The package infergate_proxy deploys: an Image model served by the static launcher. */
export function proxiedPackage(upstreamPort: number): Record<string, unknown> {
  return {
    model_type: 'Image',
    image: { endpoints: [`http://127.0.0.1:${upstreamPort}`] },
    health: { check_method: 'HTTP', url: '/health', period_seconds: 5, timeout_seconds: 2, failure_threshold: 3 },
  };
}

async function startInfergateProxy(): Promise<ServerHandle> {
  const up = await sharedUpstream();
  // A models dir of its own: every package there becomes a service of its folder's name, auth none.
  const modelsDir = mkdtempSync(join(os.tmpdir(), 'infergate-bench-models-'));
  mkdirSync(join(modelsDir, 'proxied'));
  writeFileSync(join(modelsDir, 'proxied', 'config.json'), JSON.stringify(proxiedPackage(up.port), null, 2));
  const proxy = await startInfergate(null, {
    modelsDir,
    cleanup: () => rmSync(modelsDir, { recursive: true, force: true }),
  });
  return behind(proxy, up);
}

const NGINX_PROXY: Scenario = {
  name: 'nginx_proxy',
  description: 'nginx, one worker, keep-alive upstream pool (keepalive 64), proxying to the shared bare-uWS upstream (the proxy baseline)',
  start: startNginxProxy,
  path: PROXIED_PATH,
  body: CCFRAUD_BATCH1,
  contentType: PANDAS_RECORDS,
  check: (s) => checkProxied(s, PROXIED_PATH),
  unavailable: () => (findNginx() ? undefined : 'nginx not found; apt-get install -y nginx, or run with BENCH_INSTALL=1 as root'),
};

const INFERGATE_PROXY: Scenario = {
  name: 'infergate_proxy',
  description: 'infergate serve, an Image model (static launcher, image.endpoints) proxied to the same upstream, auth none, inference log on',
  start: startInfergateProxy,
  path: PROXIED_PATH,
  body: CCFRAUD_BATCH1,
  contentType: PANDAS_RECORDS,
  check: (s) => checkProxied(s, PROXIED_PATH),
};

// ---------------------------------------------------------------- Arrow path (SPEC §14)
//
// 10k-row tables: infergate answering Arrow streams (in.tensor passed through, out.dense_1,
// time, check_failures) against bare onnxruntime-node running the same [10000, 29] float32 batch
// back to back in a process of its own. Both are counted in rows/s; each infergate request is one
// model run of 10,000 rows (ccfraud's max_batch_size is 64, so a 10k-row request runs alone), the
// batch size the bare loop runs.

const ARROW_PATH = '/v1/api/pipelines/infer/ccfraud';
let arrowBody: Uint8Array | undefined;
const tableBody = (): Uint8Array => (arrowBody ??= ccfraudTable(ARROW_ROWS));

/** dense_1 of a direct run of the table's rows, with the worker's session options. */
async function ccfraudDirect(rows: number): Promise<Float32Array> {
  const { default: ort } = await import('onnxruntime-node');
  const model = resolve(ROOT, process.env.BENCH_CCFRAUD_MODEL ?? 'models/ccfraud/model.onnx');
  const session = await ort.InferenceSession.create(model, { intraOpNumThreads: 1, interOpNumThreads: 1, graphOptimizationLevel: 'all' });
  const out = await session.run({ [session.inputNames[0]!]: new ort.Tensor('float32', ccfraudValues(rows), [rows, 29]) });
  return out[session.outputNames[0]!]!.data as Float32Array;
}

const ORT_BARE_10K: Scenario = {
  name: 'ort_bare_10k',
  description: 'bare onnxruntime-node, one session (intraOpNumThreads 1), ccfraud [10000, 29] float32 run back to back in its own process (the Arrow baseline)',
  start: async () => benchServer('ort-bare.js', await freePort(), [String(ARROW_ROWS)]),
  path: '(in-process loop)',
  body: '',
  contentType: '',
  connections: 1,
  rowsPerRequest: ARROW_ROWS,
  load: (s, seconds) => runOrtLoop(s.port, seconds),
};

const BARE_UWS_ARROW: Scenario = {
  name: 'bare_uws_arrow',
  description: `bare uWebSockets.js: reads the ${ARROW_ROWS.toLocaleString('en-US')}-row table, answers a constant Arrow stream of the size infergate answers (the transport ceiling)`,
  start: async () => benchServer('bare-uws-arrow.js', await freePort(), [String(ARROW_ROWS)]),
  path: '/infer',
  body: '',
  contentType: ARROW_STREAM,
  connections: 4,
  rowsPerRequest: ARROW_ROWS,
  load: (s, seconds, connections) => runBinaryLoad({ port: s.port, path: '/infer', body: tableBody(), contentType: ARROW_STREAM, seconds, connections }),
};

const INFERGATE_ARROW: Scenario = {
  name: 'infergate_arrow',
  description: `infergate serve, ccfraud, ${ARROW_ROWS.toLocaleString('en-US')}-row Arrow IPC streams (tensor as FixedSizeList<Float32>[29]) in and out, 4 requests in flight, inference log on`,
  start: () => startInfergate(null),
  path: ARROW_PATH,
  body: '',
  contentType: ARROW_STREAM,
  connections: 4,
  rowsPerRequest: ARROW_ROWS,
  async check(s) {
    await checkArrow(s.port, ARROW_PATH, tableBody(), ARROW_ROWS, await ccfraudDirect(ARROW_ROWS));
  },
  load: (s, seconds, connections) => runBinaryLoad({ port: s.port, path: ARROW_PATH, body: tableBody(), contentType: ARROW_STREAM, seconds, connections }),
};

// ---------------------------------------------------------------- latency at low load (SPEC §14)
//
// One connection, one request at a time: what the gateway adds to a request that waits for
// nothing else. Its p50 is set against one bare model run of the same single row.

const ORT_BARE_1: Scenario = {
  name: 'ort_bare_1',
  description: 'bare onnxruntime-node, ccfraud [1, 29] float32 run back to back in its own process (one request\'s model run, as `await session.run`, which defers the native run by a setImmediate that the gateway\'s worker skips)',
  start: async () => benchServer('ort-bare.js', await freePort(), ['1']),
  path: '(in-process loop)',
  body: '',
  contentType: '',
  connections: 1,
  load: (s, seconds) => runOrtLoop(s.port, seconds),
};

const WORKER_RT_1: Scenario = {
  name: 'worker_rt_1',
  description: 'one worker-thread round trip, as the gateway makes one per batch: a [1, 29] float32 row moved to a piscina worker (set up as the gateway sets its runners up) and back, nothing run, one at a time, in its own process',
  start: async () => benchServer('worker-rt.js', await freePort()),
  path: '(in-process loop)',
  body: '',
  contentType: '',
  connections: 1,
  load: (s, seconds) => runOrtLoop(s.port, seconds),
};

const BARE_UWS: Scenario = {
  name: 'bare_uws',
  description: 'bare uWebSockets.js: reads the POST body, answers a constant JSON (the ceiling)',
  start: async () => benchServer('bare-uws.js', await freePort()),
  path: '/infer',
  body: CCFRAUD_BATCH1,
  contentType: PANDAS_RECORDS,
};

const INFERGATE: Scenario = {
  name: 'infergate',
  description: 'infergate serve, ONNX path, ccfraud, batch-1 pandas-records (inference log on, every request)',
  start: () => startInfergate(null),
  path: '/v1/infers/ccfraud',
  body: CCFRAUD_BATCH1,
  contentType: PANDAS_RECORDS,
  check: (s) => checkDense1(s.port, '/v1/infers/ccfraud', CCFRAUD_BATCH1, PANDAS_RECORDS),
};

export const SCENARIOS: Scenario[] = [
  BARE_UWS,
  {
    name: 'fastify_ort',
    description: 'Fastify 5 + onnxruntime-node in-process, ccfraud, pandas-records in and out',
    start: async () => benchServer('fastify-ort.js', await freePort()),
    path: '/infer',
    body: CCFRAUD_BATCH1,
    contentType: PANDAS_RECORDS,
    check: (s) => checkDense1(s.port, '/infer', CCFRAUD_BATCH1, PANDAS_RECORDS),
  },
  INFERGATE,
  {
    name: 'infergate_unlogged',
    description: 'the same with the inference log off (logs.sample_rate 0), to price the log',
    start: () => startInfergate({ logs: { sample_rate: 0 } }),
    path: '/v1/infers/ccfraud',
    body: CCFRAUD_BATCH1,
    contentType: PANDAS_RECORDS,
    check: (s) => checkDense1(s.port, '/v1/infers/ccfraud', CCFRAUD_BATCH1, PANDAS_RECORDS),
  },
  SECURED,
  ORT_BARE_1,
  WORKER_RT_1,
  { ...BARE_UWS, name: 'bare_uws_1c', description: 'bare_uws with one connection: the HTTP round trip over loopback alone', connections: 1 },
  { ...INFERGATE, name: 'infergate_1c', description: 'infergate with one connection, one request at a time (inference log on)', connections: 1 },
  ORT_BARE_10K,
  BARE_UWS_ARROW,
  INFERGATE_ARROW,
  // The proxy pair last and adjacent: the shared upstream runs from the first to the end.
  NGINX_PROXY,
  INFERGATE_PROXY,
];

export const RATIOS: Ratio[] = [
  { numerator: 'infergate', denominator: 'bare_uws', target: 0.6, source: 'SPEC §14, ONNX path' },
  { numerator: 'infergate', denominator: 'fastify_ort', target: 4, source: 'SPEC §14, ONNX path' },
  { numerator: 'infergate_secured', denominator: 'infergate', target: 0.9, source: 'issue 4: auth + rules + limit on cost ≤ 10 %' },
  { numerator: 'infergate', denominator: 'infergate_unlogged', target: 0.95, source: 'SPEC §10: logging costs a few percent at most' },
  { numerator: 'infergate_proxy', denominator: 'nginx_proxy', target: 0.8, source: 'SPEC §14, proxy path' },
  { numerator: 'infergate_arrow', denominator: 'ort_bare_10k', target: 0.5, source: 'SPEC §14, Arrow path (rows/s)' },
  { numerator: 'bare_uws_arrow', denominator: 'ort_bare_10k', source: 'context: the ceiling of the Arrow target, HTTP alone moving the same bytes' },
  { numerator: 'infergate_arrow', denominator: 'bare_uws_arrow', source: 'context: the Arrow path against its transport ceiling' },
];

/** A latency the gateway adds: `from`'s p50 less the p50s of `minus`, against a limit in ms. */
export interface Added {
  name: string;
  from: string;
  minus: string[];
  limitMs?: number;
  source: string;
}

export const ADDED: Added[] = [
  { name: 'gateway-added p50', from: 'infergate_1c', minus: ['ort_bare_1'], limitMs: 0.1, source: 'SPEC §14: p50 ≤ 100 µs over the bare model run' },
  { name: 'of which HTTP over loopback', from: 'bare_uws_1c', minus: [], source: 'context: the round trip of a bare server that runs nothing' },
  { name: 'gateway-added p50 beyond HTTP', from: 'infergate_1c', minus: ['bare_uws_1c', 'ort_bare_1'], source: 'context: less the bare round trip and the model run' },
  { name: 'of which one worker-thread round trip', from: 'worker_rt_1', minus: [], source: 'context: the hand-off to a worker and back, which the design makes once per batch' },
  { name: 'gateway-added p50 beyond HTTP and the hand-off', from: 'infergate_1c', minus: ['bare_uws_1c', 'ort_bare_1', 'worker_rt_1'], source: 'context: what the gateway\'s own code adds' },
];

function addedLines(rows: Measured[]): { added: Added; valueMs: number | undefined; verdict: string }[] {
  const byName = new Map(rows.map((m) => [m.scenario.name, m.result]));
  return ADDED.map((added) => {
    const results = [added.from, ...added.minus].map((n) => byName.get(n));
    if (results.some((r) => r === undefined)) return { added, valueMs: undefined, verdict: 'n/a' };
    // autocannon reports latency in whole milliseconds: differences of microseconds mean nothing.
    if (results.some((r) => r!.tool === 'autocannon')) return { added, valueMs: undefined, verdict: 'n/a (autocannon: ms resolution)' };
    const parts = results.map((r) => r!.p50_ms);
    const valueMs = parts.reduce((a, b, i) => (i === 0 ? b! : a! - b!), 0)!;
    const verdict = added.limitMs === undefined ? 'context' : valueMs <= added.limitMs ? 'PASS' : 'MISS';
    return { added, valueMs, verdict };
  });
}

function addedTable(rows: Measured[]): string[] {
  return [
    '| latency | µs | limit | verdict | from |',
    '|---|---:|---:|---|---|',
    ...addedLines(rows).map(({ added, valueMs, verdict }) =>
      `| ${added.name} | ${valueMs === undefined ? 'n/a' : Math.round(valueMs * 1000)} | ${added.limitMs === undefined ? '—' : `≤ ${added.limitMs * 1000}`} | ${verdict} | ${added.source} |`),
  ];
}

// ---------------------------------------------------------------- run

interface Measured {
  scenario: Scenario;
  result: Measurement;
  /** CPU µs per request during the measured window (Linux) */
  cpu: CpuPerRequest;
  /** The scenario's rate (rate()) in each round, in round order; `result` is the median one. */
  perRound: number[];
}

/** One scenario's measurements, a round each: the median round stands for it, the others are kept for the ratios. */
function medianRound(scenario: Scenario, rounds: Omit<Measured, 'scenario' | 'perRound'>[]): Measured {
  const perRound = rounds.map((r) => rateOf(scenario, r.result));
  const order = perRound.map((_v, i) => i).sort((a, b) => perRound[a]! - perRound[b]!);
  return { scenario, ...rounds[order[(order.length - 1) >> 1]!]!, perRound };
}

/** The median (the lower middle of an even count, so a value that was measured). */
function median(xs: number[]): number {
  const sorted = [...xs].sort((a, b) => a - b);
  return sorted[(sorted.length - 1) >> 1]!;
}

function envNumber(name: string, dflt: number): number {
  const v = process.env[name];
  if (v === undefined || v === '') return dflt;
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) throw new Error(`${name}=${v} is not a positive number`);
  return n;
}

const fmt = {
  rps: (n: number): string => Math.round(n).toLocaleString('en-US'),
  ms: (n: number): string => (Number.isFinite(n) ? n.toFixed(3) : '-'),
  ratio: (n: number): string => n.toFixed(2),
};

/** What a scenario's ratios compare: rows/s for scenarios that count rows, else requests/s. */
const rateOf = (s: Scenario, r: Measurement): number => r.rps * (s.rowsPerRequest ?? 1);
const rate = (m: Measured): number => rateOf(m.scenario, m.result);

const us = (n: number | undefined): string => (n === undefined ? '-' : n.toFixed(1));

function cpuText(c: CpuPerRequest): string {
  return `server ${us(c.server)} µs (busiest thread ${us(c.serverThread)})${c.upstream !== undefined ? `, upstream ${us(c.upstream)}` : ''}${c.load !== undefined ? `, wrk ${us(c.load)}` : ''}`;
}

function table(rows: Measured[]): string[] {
  const head = ['scenario', 'path', 'req/s', 'rows/s', 'p50 ms', 'p99 ms', 'non-2xx', 'socket errors', 'CPU µs/req: server (busiest thread)', 'upstream', 'wrk'];
  const body = rows.map(({ scenario: s, result: r, cpu }) => [
    s.name,
    s.path,
    fmt.rps(r.rps),
    s.rowsPerRequest ? fmt.rps(r.rps * s.rowsPerRequest) : '-',
    fmt.ms(r.p50_ms),
    fmt.ms(r.p99_ms),
    String(r.non2xx),
    String(r.errors),
    cpu.server === undefined ? '-' : `${us(cpu.server)} (${us(cpu.serverThread)})`,
    us(cpu.upstream),
    us(cpu.load),
  ]);
  return [
    `| ${head.join(' | ')} |`,
    `|${head.map((_h, i) => (i >= 2 ? '---:' : '---')).join('|')}|`,
    ...body.map((r) => `| ${r.join(' | ')} |`),
  ];
}

interface RatioLine {
  ratio: Ratio;
  value: number | undefined;
  /** The ratio within each round (both scenarios measured minutes apart at most). */
  perRound: number[];
  verdict: 'PASS' | 'MISS' | 'n/a' | 'context';
}

/**
 * Each ratio is taken within each round, so both sides were measured close together on a VM whose
 * speed drifts, and the median of those is the value judged.
 */
function ratios(rows: Measured[]): RatioLine[] {
  const byName = new Map(rows.map((m) => [m.scenario.name, m.perRound]));
  return RATIOS.map((ratio) => {
    const a = byName.get(ratio.numerator);
    const b = byName.get(ratio.denominator);
    const perRound = a && b ? a.slice(0, b.length).map((x, i) => x / b[i]!).filter((x) => Number.isFinite(x)) : [];
    if (!perRound.length) return { ratio, value: undefined, perRound, verdict: 'n/a' as const };
    const value = median(perRound);
    if (ratio.target === undefined) return { ratio, value, perRound, verdict: 'context' as const };
    return { ratio, value, perRound, verdict: value >= ratio.target ? ('PASS' as const) : ('MISS' as const) };
  });
}

const roundsText = (l: RatioLine): string => (l.perRound.length > 1 ? l.perRound.map(fmt.ratio).join(', ') : '-');

/**
 * What the CPU columns say about each target: the ratio the numerator would reach at its present
 * CPU per request were every core busy (threads alone cannot pass it), and the ratio its busiest
 * thread allows on its own (where that is lower, that thread is the limit and the idle cores are
 * what more threads could use).
 */
function cpuBoundTable(rows: Measured[]): string[] {
  const byName = new Map(rows.map((m) => [m.scenario.name, m]));
  // "measured" is the value the ratios table judges; the bounds come from the median rounds' CPU.
  const judged = new Map(ratios(rows).map((l) => [l.ratio, l.value]));
  const lines: string[] = [];
  for (const ratio of RATIOS) {
    if (ratio.target === undefined) continue;
    const num = byName.get(ratio.numerator);
    const den = byName.get(ratio.denominator);
    const total = totalPerRequest(num?.cpu);
    if (!num || !den || total === undefined || num.cpu.serverThread === undefined || rate(den) === 0) continue;
    const rowsEach = num.scenario.rowsPerRequest ?? 1;
    const allCores = (cpuBoundRate(total) * rowsEach) / rate(den);
    const oneThread = ((1e6 / num.cpu.serverThread) * rowsEach) / rate(den);
    lines.push(`| ${ratio.numerator}/${ratio.denominator} | ${fmt.ratio(judged.get(ratio)!)} | ${fmt.ratio(oneThread)} | ${fmt.ratio(allCores)} | ≥ ${ratio.target} |`);
  }
  if (!lines.length) return [];
  return [
    '| ratio | measured | its busiest thread alone allows | every core busy at this CPU per request allows | target |',
    '|---|---:|---:|---:|---:|',
    ...lines,
  ];
}

function ratioText(l: RatioLine): string {
  const name = `${l.ratio.numerator}/${l.ratio.denominator}`;
  const target = l.ratio.target === undefined ? 'no target' : `target ≥ ${l.ratio.target}`;
  return l.value === undefined
    ? `${name}: n/a (needs both scenarios; ${target})`
    : `${name}: ${fmt.ratio(l.value)}  (${target}) ${l.verdict}${l.perRound.length > 1 ? `  rounds: ${roundsText(l)}` : ''}`;
}

async function measure(s: Scenario, seconds: number, warmup: number, defaultConnections: number, round: string): Promise<Omit<Measured, 'scenario' | 'perRound'>> {
  const connections = s.connections ?? defaultConnections;
  console.log(`\n== ${s.name}${round}: ${s.description}`);
  const server = await s.start();
  console.log(`   started pid ${server.pid} on port ${server.port}`);
  try {
    if (s.check) {
      await s.check(server);
      console.log('   check: ok');
    }
    const load = { port: server.port, path: s.path, body: s.body, contentType: s.contentType, headers: s.headers ?? {}, connections };
    const run = (secs: number): Promise<Measurement> => (s.load ? s.load(server, secs, connections) : runLoad({ ...load, seconds: secs }));
    console.log(`   warm-up ${warmup} s`);
    await run(warmup);
    if (server.dead) throw new Error(`${s.name} died during warm-up; its output:\n${server.tail()}`);
    console.log(`   measuring ${seconds} s, ${connections} connections`);
    const window = await CpuWindow.open(server.pid, server.upstreamPid ?? null);
    const result = await run(seconds);
    if (server.dead) throw new Error(`${s.name} died during the measurement; its output:\n${server.tail()}`);
    const cpu = window.finish(result.rps * result.duration_s);
    // Only wrk runs as a child of this process; another load's time is not in the children's total.
    if (!result.tool.startsWith('wrk')) delete cpu.load;
    console.log(
      `   ${fmt.rps(result.rps)} req/s${s.rowsPerRequest ? ` (${fmt.rps(result.rps * s.rowsPerRequest)} rows/s)` : ''}  ` +
        `p50 ${fmt.ms(result.p50_ms)} ms  p99 ${fmt.ms(result.p99_ms)} ms  non-2xx ${result.non2xx}  errors ${result.errors}`,
    );
    if (result.non2xx > 0 || result.errors > 0) {
      console.log(`   WARNING: ${s.name} had ${result.non2xx} non-2xx answers and ${result.errors} socket errors`);
    }
    if (cpu.server !== undefined) console.log(`   CPU per request: ${cpuText(cpu)}`);
    return { result, cpu };
  } finally {
    await server.stop();
  }
}

/** Settings that change what is measured, named in RESULTS.md so a run can be told apart. */
function overrides(): string[] {
  return ['BENCH_CCFRAUD_MODEL', 'BENCH_INFERGATE_MAIN', 'BENCH_TOOL']
    .filter((k) => process.env[k])
    .map((k) => `${k}=${process.env[k]}`);
}

/** A scenario that could not run here, and why (a missing tool). */
interface NotRun {
  name: string;
  why: string;
}

/** Header lines naming the programs the measured scenarios ran, beyond node and the load tool. */
function programs(rows: Measured[]): string[] {
  const nginx = rows.some((m) => m.scenario === NGINX_PROXY) ? findNginx() : undefined;
  const proxies = rows.some((m) => m.scenario === NGINX_PROXY || m.scenario === INFERGATE_PROXY);
  return [
    ...(nginx ? [`- nginx: ${nginxVersion(nginx)} (${nginx})`] : []),
    ...(proxies
      ? ['- Proxy scenarios: one upstream process (`bench/servers/upstream-uws.ts`) shared by both, running beside the proxy under test']
      : []),
  ];
}

function resultsMarkdown(
  rows: Measured[],
  memory: MemoryResult[],
  skipped: string[],
  notRun: NotRun[],
  opts: { seconds: number; warmup: number; connections: number; rounds: number; tool: string; toolNote: string; started: Date },
): string {
  const cpus = os.cpus();
  const cpuBounds = cpuBoundTable(rows);
  const lines = [
    '# Benchmark results',
    '',
    `- Date: ${opts.started.toISOString()}`,
    `- Machine: ${cpus[0]?.model.trim() ?? 'unknown CPU'} × ${cpus.length} logical CPUs, ` +
      `${Math.round(os.totalmem() / 2 ** 30)} GiB RAM, ${os.type()} ${os.release()} (${os.arch()})`,
    `- Node: ${process.version}`,
    `- Load tool: ${opts.tool} (${opts.toolNote})`,
    `- Load: ${opts.connections} connections, ${opts.tool.startsWith('wrk') ? '1 wrk thread' : 'autocannon in the bench process (latency in whole ms)'}, ${opts.warmup} s warm-up then ${opts.seconds} s measured per scenario and round, ${opts.rounds} round${opts.rounds > 1 ? 's' : ''}; ` +
      'batch-1 pandas-records body (`[{"tensor":[29 floats]}]`, `application/json; format=pandas-records`); ' +
      'servers run one at a time on 127.0.0.1, the load generator on the same machine',
    ...(rows.some((m) => m.scenario.rowsPerRequest)
      ? ['- Arrow path: 10,000-row ccfraud tables (an IPC stream, `tensor` as FixedSizeList<Float32>[29], 1.16 MB) with the connections each scenario names; ' +
          '`ort_bare_10k` is an onnxruntime-node loop without HTTP (its "requests" are model runs). Ratios of scenarios that count rows are taken in rows/s']
      : []),
    ...programs(rows),
    ...(overrides().length ? [`- Overrides: ${overrides().join(', ')}`] : []),
    '',
    ...(skipped.length
      ? [`**Partial run: skipped scenarios: ${skipped.join(', ')}.** Ratios that need them are n/a.`, '']
      : []),
    ...(notRun.length
      ? [`**Not measured on this machine: ${notRun.map((n) => `${n.name}: ${n.why}`).join('; ')}.** Ratios that need them are n/a.`, '']
      : []),
    '## Raw',
    '',
    ...table(rows),
    '',
    '## Ratios (SPEC §14 targets)',
    '',
    '| ratio | value (median of the rounds) | per round | target | verdict |',
    '|---|---:|---|---:|---|',
    ...ratios(rows).map(
      (l) =>
        `| ${l.ratio.numerator}/${l.ratio.denominator} | ${l.value === undefined ? 'n/a' : fmt.ratio(l.value)} | ${roundsText(l)} | ` +
        `${l.ratio.target === undefined ? '—' : `≥ ${l.ratio.target}`} | ${l.verdict} |`,
    ),
    '',
    '## Latency at low load (SPEC §14)',
    '',
    ...addedTable(rows),
    '',
    ...(cpuBounds.length
      ? [
          '## What the CPU allows',
          '',
          `CPU time per request (the Raw table's last columns, from /proc, of each scenario's median round) bounds each ratio twice: by the server's busiest thread at 100 % (the limit while it runs on one thread), and by all ${os.availableParallelism()} cores busy with the server, its upstream and wrk at their present CPU per request (the limit any number of threads meets; beyond it only less work per request helps).`,
          '',
          ...cpuBounds,
          '',
        ]
      : []),
    'Scenarios:',
    '',
    ...rows.map((m) => `- \`${m.scenario.name}\`: ${m.scenario.description}`),
    '',
    ...(memory.length
      ? ['## Memory (SPEC §14)', '', ...memoryTable(memory), '', ...memory.map((r) => `- \`${r.name}\`: ${r.description}`), '']
      : []),
    `These numbers are from one run of ${opts.rounds} round${opts.rounds > 1 ? 's' : ''} (each round measures every scenario once, one after another; ` +
      'the Raw table shows each scenario\'s median round, and each ratio is the median of the ratios within the rounds). ' +
      'Absolute requests/s drift between runs and machines; the ratios are what the targets are about.',
    '',
  ];
  return lines.join('\n');
}

async function main(): Promise<void> {
  const started = new Date();
  const seconds = envNumber('BENCH_SECONDS', 10);
  const warmup = envNumber('BENCH_WARMUP_SECONDS', 2);
  const connections = Math.round(envNumber('BENCH_CONNECTIONS', 64));
  const rounds = Math.round(envNumber('BENCH_ROUNDS', 3));
  const only = (process.env.BENCH_ONLY ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  const known = [...SCENARIOS.map((s) => s.name), ...MEMORY_CHECKS.map((c) => c.name)];
  const unknown = only.filter((n) => !known.includes(n));
  if (unknown.length) {
    throw new Error(`BENCH_ONLY names unknown scenarios: ${unknown.join(', ')} (known: ${known.join(', ')})`);
  }
  const wanted = only.length ? SCENARIOS.filter((s) => only.includes(s.name)) : SCENARIOS;
  const memoryChecks = only.length ? MEMORY_CHECKS.filter((c) => only.includes(c.name)) : MEMORY_CHECKS;
  const skipped = known.filter((n) => !wanted.some((s) => s.name === n) && !memoryChecks.some((c) => c.name === n));

  const tool = detectTool();
  console.log(`bench: load tool ${tool.version} — ${tool.note}`);
  // Missing tools are looked up (and installed, with BENCH_INSTALL=1) before anything is measured.
  const notRun: NotRun[] = [];
  const chosen = wanted.filter((s) => {
    const why = s.unavailable?.();
    if (why) notRun.push({ name: s.name, why });
    return !why;
  });
  for (const n of notRun) console.log(`bench: SKIPPING ${n.name}: ${n.why}`);
  console.log(`bench: scenarios ${chosen.map((s) => s.name).join(', ')}${skipped.length ? ` (skipped: ${skipped.join(', ')})` : ''}`);

  const measured = new Map<Scenario, Omit<Measured, 'scenario' | 'perRound'>[]>(chosen.map((s) => [s, []]));
  const soFar = (): Measured[] => chosen.filter((s) => measured.get(s)!.length).map((s) => medianRound(s, measured.get(s)!));
  try {
    for (let round = 1; round <= rounds; round++) {
      for (const s of chosen) {
        try {
          measured.get(s)!.push(await measure(s, seconds, warmup, connections, rounds > 1 ? ` (round ${round}/${rounds})` : ''));
        } catch (err) {
          console.error(`\nbench: ABORTED in scenario ${s.name}: ${err instanceof Error ? err.message : String(err)}`);
          const partial = soFar();
          if (partial.length) console.error(['', 'measured before the abort (not written to RESULTS.md):', ...table(partial)].join('\n'));
          process.exitCode = 1;
          return;
        }
      }
    }
  } finally {
    await stopSharedUpstream();
  }
  const rows = soFar();
  const memory: MemoryResult[] = [];
  const deps: MemoryDeps = {
    root: ROOT,
    startInfergate,
    runLoad,
    load: { path: '/v1/infers/ccfraud', body: CCFRAUD_BATCH1, contentType: PANDAS_RECORDS, connections },
    soakSeconds: envNumber('BENCH_SOAK_SECONDS', 600),
  };
  for (const c of memoryChecks) {
    console.log(`\n== ${c.name}: ${c.description}`);
    try {
      const r = await c.run(deps);
      memory.push(r);
      console.log(`   ${memoryTable([r])[2]}`);
    } catch (err) {
      // The throughput scenarios measured before stay: the failed check is named as not measured.
      const why = err instanceof Error ? err.message : String(err);
      console.error(`\nbench: memory check ${c.name} FAILED: ${why}`);
      notRun.push({ name: c.name, why: `failed: ${why.split('\n')[0]}` });
      process.exitCode = 1;
    }
  }

  console.log(['', ...table(rows), ''].join('\n'));
  for (const l of ratios(rows)) console.log(ratioText(l));
  console.log(['', ...addedTable(rows)].join('\n'));
  const cpuBounds = cpuBoundTable(rows);
  if (cpuBounds.length) console.log(['', ...cpuBounds].join('\n'));
  if (memory.length) console.log(['', ...memoryTable(memory)].join('\n'));

  // A run missing a scenario, by choice or for want of a tool, never overwrites the full results.
  const partial = skipped.length > 0 || notRun.length > 0;
  const outFile = process.env.BENCH_RESULTS
    ? resolve(process.env.BENCH_RESULTS)
    : partial
      ? join(ROOT, 'bench', 'out', 'RESULTS.partial.md')
      : join(ROOT, 'bench', 'RESULTS.md');
  mkdirSync(dirname(outFile), { recursive: true });
  writeFileSync(
    outFile,
    resultsMarkdown(rows, memory, skipped, notRun, { seconds, warmup, connections, rounds, tool: tool.version, toolNote: tool.note, started }),
  );
  console.log(`\nbench: wrote ${relative(process.cwd(), outFile) || outFile}${partial ? ' (partial run)' : ''}`);
  for (const n of notRun) console.log(`bench: NOT MEASURED: ${n.name}: ${n.why}`);
}

// Run only as the program, so a script can import nginxConf or proxiedPackage to reproduce a
// scenario by hand.
if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((err: unknown) => {
    console.error(`bench: ${err instanceof Error ? err.message : String(err)}`);
    process.exitCode = 1;
  });
}
