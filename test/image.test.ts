import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { copyFileSync, existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ADMIN_TOKEN, ROOT, SAMPLE_MODELS, api, postJson, startGateway, tempDir, until, waitForService, type RunningGateway } from './helpers/gateway.js';
import { nextMessages, openWs } from './helpers/ws.js';

const KNOBS = path.join(ROOT, 'test/fixtures/knobs-server');
const PY_SERVER = path.join(ROOT, 'test/fixtures/py-stdlib-server');
const MAX_BODY = 4 * 1024 * 1024;
const TIMEOUT_MS = 2000;

/** A copy of the knobs server package with config.json fields replaced. */
function knobsPackage(config: Record<string, unknown> = {}): string {
  const dir = tempDir('knobs-pkg-');
  copyFileSync(path.join(KNOBS, 'server.mjs'), path.join(dir, 'server.mjs'));
  const base = JSON.parse(readFileSync(path.join(KNOBS, 'config.json'), 'utf8')) as Record<string, unknown>;
  writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ ...base, ...config }));
  return dir;
}

async function deploy(gw: RunningGateway, name: string, pkgDir: string, service: Record<string, unknown> = {}, status = 'running'): Promise<any> {
  const imported = await api(gw, 'POST', '/v1/models', { name, source: { path: pkgDir } });
  assert.equal(imported.status, 201, imported.text);
  const created = await api(gw, 'POST', '/v1/services', { name, auth: 'none', versions: [{ model: name }], ...service });
  assert.equal(created.status, 202, created.text);
  return waitForService(gw, name, status);
}

async function events(gw: RunningGateway, service: string): Promise<string[]> {
  return (await api(gw, 'GET', `/v1/services/${service}/events`)).json.events.map((e: { message: string }) => e.message);
}

async function eventMatching(gw: RunningGateway, service: string, re: RegExp): Promise<string> {
  let found = '';
  await until(`an event of ${service} matching ${re}`, async () => {
    found = (await events(gw, service)).find((m) => re.test(m)) ?? '';
    return found !== '';
  }, 20_000);
  return found;
}

interface Raw { status: number; headers: http.IncomingHttpHeaders; body: Buffer }

/** node:http, not fetch: fetch refuses the hop-by-hop headers these tests send, and cannot send a chunked body. */
function raw(url: string, opts: { method?: string; headers?: Record<string, string>; body?: Buffer | Buffer[] } = {}): Promise<Raw> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: opts.method ?? 'POST', headers: opts.headers ?? {}, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    req.on('error', reject);
    const body = opts.body;
    if (Array.isArray(body)) for (const b of body) req.write(b);
    else if (body) req.write(body);
    req.end();
  });
}

/** The docker tests need an engine and an image with node on its PATH (they run the knobs server in it). */
const DOCKER_IMAGE = process.env['INFERGATE_TEST_DOCKER_IMAGE'];
const DOCKER_SKIP = !DOCKER_IMAGE
  ? 'needs INFERGATE_TEST_DOCKER_IMAGE (an image with node on its PATH, e.g. node:20-slim) and a Docker engine'
  : !process.env['DOCKER_HOST'] && !existsSync('/var/run/docker.sock') ? 'needs a Docker engine: /var/run/docker.sock does not exist and DOCKER_HOST is not set' : false;

/** The knobs server package run in a container of the test image: `command` in /model, which the package is mounted at. */
function dockerPackage(config: Record<string, unknown> = {}, command = ['node', 'server.mjs']): string {
  return knobsPackage({ image: { launcher: 'docker', image: DOCKER_IMAGE, port: 8080, command }, ...config });
}

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

/** Requests counted for a service in /metrics, all codes. */
async function counted(gw: RunningGateway, service: string): Promise<number> {
  const text = await (await fetch(`${gw.url}/metrics`)).text();
  return text.split('\n').filter((l) => l.startsWith(`infergate_requests_total{service="${service}"`)).reduce((n, l) => n + Number(l.split(' ').pop()), 0);
}

describe('image models (SPEC §8.2)', () => {
  let gw: RunningGateway;

  before(async () => {
    gw = await startGateway({ modelsDir: tempDir('no-models-'), config: { limits: { max_body_bytes: MAX_BODY, request_timeout_ms: TIMEOUT_MS } } });
  });
  after(async () => {
    await gw.stop();
  });

  test('the sample iris-server runs through the process launcher and answers through the gateway', async () => {
    await deploy(gw, 'iris-server', path.join(SAMPLE_MODELS, 'iris-server'));
    const body = { data: { req_data: [{ sepal_length: 5.1, sepal_width: 3.5, petal_length: 1.4, petal_width: 0.2 }, { sepal_length: 6.3, sepal_width: 3.3, petal_length: 6.0, petal_width: 2.5 }] } };
    const a = await postJson(`${gw.url}/v1/infers/iris-server`, body);
    assert.equal(a.status, 200, a.text);
    assert.deepEqual(a.json.result.map((r: { predict: string }) => r.predict), ['setosa', 'virginica']);
    assert.equal(a.headers.get('x-model-version'), 'iris-server@0.0.1');
    const p = await postJson(`${gw.url}/v1/infers/iris-server/predict`, [[6.4, 3.2, 4.5, 1.5]]);
    assert.equal(p.json.result[0].predict, 'versicolor');
    // The model server's own refusals reach the client as it wrote them.
    const bad = await postJson(`${gw.url}/v1/infers/iris-server`, { data: { req_data: [{ sepal_length: 'x' }] } });
    assert.equal(bad.status, 400);
    assert.match(bad.json.error_msg, /sepal_length: expected a finite number/);
    const meta = (await fetch(`${gw.url}/v2/models/iris-server`).then((r) => r.json())) as { platform: string };
    assert.equal(meta.platform, 'custom_image');
  });

  test('a process instance that listens on ::1 only (\'localhost\' where it resolves to ::1) is found there and served', async (t) => {
    const v6 = await new Promise<boolean>((resolve) => {
      const s = net.createServer().once('error', () => resolve(false));
      s.listen(0, '::1', () => s.close(() => resolve(true)));
    });
    if (!v6) return t.skip('this machine has no IPv6 loopback');
    const pkg = knobsPackage({ image: { command: ['node', 'server.mjs'], env: { HOST: '::1' } } });
    await deploy(gw, 'knobs-v6', pkg);
    const instances = (await api(gw, 'GET', '/v1/services/knobs-v6/instances')).json.instances;
    assert.match(instances[0].address, /^http:\/\/\[::1\]:\d+$/);
    const a = await postJson(`${gw.url}/v1/infers/knobs-v6`, { x: 1 });
    assert.equal(a.status, 200, a.text);
  });

  test('image.max_concurrency: an instance is sent that many requests at a time, the rest wait in the gateway', async () => {
    await deploy(gw, 'knobs-cap', knobsPackage({ image: { command: ['node', 'server.mjs'], max_concurrency: 2 } }));
    await postJson(`${gw.url}/v1/infers/knobs-cap/peak`, {});
    const answers = await Promise.all(Array.from({ length: 8 }, () => postJson(`${gw.url}/v1/infers/knobs-cap/slow?ms=150`, {})));
    assert.deepEqual(answers.map((a) => a.status), Array(8).fill(200));
    assert.equal((await postJson(`${gw.url}/v1/infers/knobs-cap/peak`, {})).json.peak, 2, 'two at a time, never more');
    // Two slower than the request timeout (2 s here) hold both places: a third waits, and says so when it times out.
    const three = await Promise.all(Array.from({ length: 3 }, () => postJson(`${gw.url}/v1/infers/knobs-cap/slow?ms=5000`, {})));
    assert.deepEqual(three.map((a) => a.status), [504, 504, 504]);
    assert.deepEqual(three.map((a) => a.json.error_msg).sort(), [
      'knobs-cap@0.0.1 did not answer within 2000 ms (limits.request_timeout_ms)',
      'knobs-cap@0.0.1 did not answer within 2000 ms (limits.request_timeout_ms)',
      'knobs-cap@0.0.1: no instance had room within 2000 ms (limits.request_timeout_ms); each takes image.max_concurrency = 2 requests at a time',
    ]);
    // A request that waits with a body over the limit, while the instance frees up: 413, and its place is given back
    // (the gateway crashed here when the over-limit request, still queued, was woken).
    const holders = Promise.all([0, 1].map(() => postJson(`${gw.url}/v1/infers/knobs-cap/slow?ms=300`, {})));
    const over = await new Promise<{ status: number; text: string }>((resolve, reject) => {
      const req = http.request({ host: '127.0.0.1', port: gw.port, path: '/v1/infers/knobs-cap/echo', method: 'POST', headers: { 'content-type': 'application/octet-stream', 'transfer-encoding': 'chunked' } }, (res) => {
        let text = '';
        res.on('data', (d: Buffer) => (text += d.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
      });
      req.on('error', reject);
      const piece = Buffer.alloc(256 * 1024, 7);
      for (let sent = 0; sent <= MAX_BODY; sent += piece.length) req.write(piece);
      // The last piece only once the instance is free: the request has waited with its body over the limit.
      void holders.then(() => req.end(piece));
    });
    assert.equal(over.status, 413, over.text);
    assert.match(JSON.parse(over.text).error_msg, /over the limit of \d+ bytes/);
    const after = await Promise.all([0, 1, 2].map(() => postJson(`${gw.url}/v1/infers/knobs-cap/slow?ms=10`, {})));
    assert.deepEqual(after.map((a) => a.status), [200, 200, 200], 'no place on the instance was lost');
    // A request still sending its body when it times out waiting: its answer closes the connection
    // (the rest of its body waits unread in it), and does so at once.
    const slow = [0, 1].map(() => postJson(`${gw.url}/v1/infers/knobs-cap/slow?ms=3000`, {}));
    const unfinished = await new Promise<{ status: number; connection: string | undefined; closedAfterMs: number }>((resolve, reject) => {
      const req = http.request({ host: '127.0.0.1', port: gw.port, path: '/v1/infers/knobs-cap/echo', method: 'POST', headers: { 'content-type': 'application/octet-stream', 'transfer-encoding': 'chunked' } }, (res) => {
        res.resume();
        const answered = performance.now();
        req.socket!.once('close', () => resolve({ status: res.statusCode ?? 0, connection: res.headers.connection, closedAfterMs: performance.now() - answered }));
      });
      req.on('error', reject);
      req.write(Buffer.alloc(1000, 1));
    });
    assert.equal(unfinished.status, 504);
    assert.equal(unfinished.connection, 'close');
    assert.ok(unfinished.closedAfterMs < 1000, `the connection closed ${unfinished.closedAfterMs} ms after the answer`);
    await Promise.all(slow);
    const bad = await api(gw, 'POST', '/v1/models', { name: 'knobs-badcap', source: { path: knobsPackage({ image: { command: ['node', 'server.mjs'], max_concurrency: -1 } }) } });
    assert.equal(bad.status, 400);
    assert.match(bad.json.error_msg, /image\.max_concurrency must be an integer from 1 to 100000 \(requests one instance is sent at a time\), or 0 for no limit, got -1/);
  });

  test('a Python model server speaking HTTP/1.0, with and without Content-Length, serves concurrent requests intact', async (t) => {
    if (spawnSync('python3', ['--version']).status !== 0) return t.skip('python3 is not on PATH');
    for (const [name, env] of [['py-length', {}], ['py-until-close', { NO_LENGTH: '1' }]] as const) {
      const dir = tempDir('py-pkg-');
      copyFileSync(path.join(PY_SERVER, 'server.py'), path.join(dir, 'server.py'));
      const config = JSON.parse(readFileSync(path.join(PY_SERVER, 'config.json'), 'utf8')) as { image: Record<string, unknown> };
      // The package's own max_concurrency (4) is what lets it take 120 at once: Python's server listens
      // with a backlog of 5, and more connections at once are dropped and retried a second later.
      assert.equal(config.image['max_concurrency'], 4);
      writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ ...config, image: { ...config.image, env } }));
      await deploy(gw, name, dir);
      const answers = await Promise.all(Array.from({ length: 120 }, (_, i) =>
        postJson(`${gw.url}/v1/infers/${name}/score?n=${i}`, { data: { req_data: [{ a: i, b: 0.5 }, { a: 1 }] } }, undefined, { 'x-request-id': `py-${i}` })));
      answers.forEach((a, i) => {
        assert.equal(a.status, 200, a.text);
        assert.deepEqual(a.json, { result: [{ sum: i + 0.5 }, { sum: 1 }], path: `/score?n=${i}`, request_id: `py-${i}` });
      });
      const bad = await postJson(`${gw.url}/v1/infers/${name}`, { rows: [] });
      assert.equal(bad.status, 400);
      assert.match(bad.json.error, /^expected \{"data": \{"req_data"/);
    }
  });

  test('headers: X-Request-Id and rule settings added, hop-by-hop headers and credentials dropped, api path and query forwarded', async () => {
    await deploy(gw, 'knobs-h', knobsPackage(), {
      auth: 'token',
      rules: [{ condition: "#HEADER_tier == 'gold'", version: '0.0.1', setting_name: 'x-model-setting', setting_value: 'fast' }],
    });
    const a = await raw(`${gw.url}/v1/infers/knobs-h/headers?a=1&b=two`, {
      headers: {
        'x-auth-token': ADMIN_TOKEN, 'x-request-id': 'req-abc', connection: 'keep-alive, x-hop', 'x-hop': 'one hop only',
        'keep-alive': 'timeout=5', te: 'trailers', tier: 'gold', 'x-custom': 'kept', 'content-type': 'application/json',
      },
      body: Buffer.from('{"x":1}'),
    });
    assert.equal(a.status, 200, a.body.toString());
    const seen = JSON.parse(a.body.toString());
    assert.equal(seen.url, '/headers?a=1&b=two');
    assert.equal(seen.headers['x-request-id'], 'req-abc');
    assert.equal(seen.headers['x-model-setting'], 'fast');
    assert.equal(seen.headers['x-custom'], 'kept');
    assert.equal(seen.headers['content-type'], 'application/json');
    assert.equal(seen.bytes, 7);
    for (const h of ['x-auth-token', 'x-hop', 'keep-alive', 'te']) assert.equal(seen.headers[h], undefined, `${h} must not reach the model server`);
    assert.equal(a.headers['x-request-id'], 'req-abc');
    assert.equal(a.headers['x-model-version'], 'knobs-h@0.0.1');
    // No rule matched: no setting header.
    const plain = await raw(`${gw.url}/v1/infers/knobs-h/headers`, { headers: { 'x-auth-token': ADMIN_TOKEN } });
    assert.equal(JSON.parse(plain.body.toString()).headers['x-model-setting'], undefined);
    const anonymous = await raw(`${gw.url}/v1/infers/knobs-h/headers`);
    assert.equal(anonymous.status, 401);
    assert.match(JSON.parse(anonymous.body.toString()).error_msg, /token/i);
  });

  test('each answer keeps its own status, headers and framing when one instance\'s answers alternate', async () => {
    await deploy(gw, 'knobs-heads', knobsPackage());
    const body = Buffer.from('{"x":1}');
    // Twice over, in the same second: repeated heads are parsed once and must still not leak into other answers.
    for (let round = 0; round < 2; round++) {
      const teapot = await raw(`${gw.url}/v1/infers/knobs-heads/status?code=418`);
      assert.equal(teapot.status, 418);
      assert.equal(teapot.headers['x-upstream'], undefined);
      const echo = await raw(`${gw.url}/v1/infers/knobs-heads/echo`, { headers: { 'content-type': 'text/plain' }, body });
      assert.equal(echo.status, 200);
      assert.equal(echo.headers['x-upstream'], 'knobs');
      assert.equal(echo.headers['content-type'], 'text/plain');
      assert.equal(echo.body.toString(), '{"x":1}');
      const chunked = await raw(`${gw.url}/v1/infers/knobs-heads/echo-chunked`, { body });
      assert.equal(chunked.status, 200);
      assert.equal(chunked.headers['content-type'], 'application/octet-stream');
      assert.equal(chunked.headers['x-upstream'], undefined);
      assert.equal(chunked.body.toString(), '{"x":1}');
      const created = await raw(`${gw.url}/v1/infers/knobs-heads/status?code=201`);
      assert.equal(created.status, 201);
      assert.deepEqual(JSON.parse(created.body.toString()), { error: 'as asked' });
    }
  });

  test('an answer head with a bare LF inside a line is refused with 502, not passed on; 204 goes out without a length', async () => {
    await deploy(gw, 'knobs-split', knobsPackage());
    const a = await raw(`${gw.url}/v1/infers/knobs-split/split`);
    assert.equal(a.status, 502);
    assert.equal(a.headers['set-cookie'], undefined);
    assert.match(JSON.parse(a.body.toString()).error_msg, /not valid HTTP\/1\.1: a bare CR, LF or NUL inside the response head/);
    const empty = await raw(`${gw.url}/v1/infers/knobs-split/status?code=204`);
    assert.equal(empty.status, 204);
    assert.equal(empty.headers['content-length'], undefined);
    // A rule's setting travels as a header: it must be one.
    const bad = await api(gw, 'POST', '/v1/services', {
      name: 'knobs-badsetting', auth: 'none', versions: [{ model: 'knobs-split' }],
      rules: [{ condition: "#HEADER_a == 'b'", version: '0.0.1', setting_name: 'x-a\r\nx-b', setting_value: 'v' }],
    });
    assert.equal(bad.status, 400);
    assert.match(bad.json.error_msg, /rules\[0\]\.setting_name must be a header name/);
    const badValue = await api(gw, 'POST', '/v1/services', {
      name: 'knobs-badsetting', auth: 'none', versions: [{ model: 'knobs-split' }],
      rules: [{ condition: "#HEADER_a == 'b'", version: '0.0.1', setting_name: 'x-a', setting_value: 'v\nx-b: 1' }],
    });
    assert.equal(badValue.status, 400);
    assert.match(badValue.json.error_msg, /rules\[0\]\.setting_value must be one line/);
  });

  test('bodies up to the limit pass unchanged both ways, with and without a length; over it is 413', async () => {
    await deploy(gw, 'knobs-big', knobsPackage());
    const big = randomBytes(MAX_BODY);
    const echoed = await raw(`${gw.url}/v1/infers/knobs-big/echo`, { headers: { 'content-type': 'application/octet-stream' }, body: big });
    assert.equal(echoed.status, 200);
    assert.equal(echoed.headers['content-length'], String(MAX_BODY));
    assert.equal(echoed.headers['x-upstream'], 'knobs');
    assert.equal(sha(echoed.body), sha(big));
    // A chunked request body and a chunked answer.
    const pieces = Array.from({ length: 40 }, () => randomBytes(50_000));
    const chunked = await raw(`${gw.url}/v1/infers/knobs-big/echo-chunked`, { headers: { 'transfer-encoding': 'chunked' }, body: pieces });
    assert.equal(chunked.status, 200);
    assert.equal(chunked.headers['content-length'], undefined);
    assert.equal(sha(chunked.body), sha(Buffer.concat(pieces)));
    const over = await raw(`${gw.url}/v1/infers/knobs-big/echo`, { body: randomBytes(MAX_BODY + 1) });
    assert.equal(over.status, 413);
    assert.match(JSON.parse(over.body.toString()).error_msg, new RegExp(`over the limit of ${MAX_BODY} bytes \\(limits.max_body_bytes\\)`));
    // Upstream status codes pass through.
    const teapot = await raw(`${gw.url}/v1/infers/knobs-big/status?code=418`);
    assert.equal(teapot.status, 418);
  });

  test('the inference log keeps what an image model was sent and answered', async () => {
    await deploy(gw, 'knobs-log', knobsPackage());
    const send = (path: string, id: string, body: Buffer | undefined, type?: string): Promise<Raw> =>
      raw(`${gw.url}/v1/infers/knobs-log${path}`, { headers: { 'x-request-id': id, ...(type ? { 'content-type': type } : {}) }, body });
    const sent = { data: { req_data: [{ sepal_length: 5.1, label: 'a' }] } };
    assert.equal((await send('/echo', 'log-json', Buffer.from(JSON.stringify(sent)), 'application/json')).status, 200);
    assert.equal((await send('/echo', 'log-text', Buffer.from('plain words'), 'text/plain')).status, 200);
    const binary = Buffer.from([0xff, 0xfe, 0x00, 0x01]);
    assert.equal((await send('/echo', 'log-binary', binary, 'application/octet-stream')).status, 200);
    // Over logs.max_record_bytes (64 KiB by default): served whole, not kept, and the record says so.
    const big = randomBytes(100_000);
    const bigAnswer = await send('/echo-chunked', 'log-big', big, 'application/octet-stream');
    assert.equal(sha(bigAnswer.body), sha(big));
    assert.equal((await send('/status?code=503', 'log-503', undefined)).status, 503);
    assert.equal((await send(`/slow?ms=${TIMEOUT_MS + 1000}`, 'log-504', undefined)).status, 504);
    const page = await raw(`${gw.url}/v1/services/knobs-log/logs`, { headers: { 'x-auth-token': ADMIN_TOKEN, 'content-type': 'application/json' }, body: Buffer.from('{"order":"Asc"}') });
    assert.equal(page.status, 200, page.body.toString());
    assert.equal(page.headers['x-iteration-status'], 'All');
    const records = JSON.parse(page.body.toString()) as any[];
    const byId = new Map(records.map((r) => [r.metadata.request_id, r]));
    assert.deepEqual([...byId.keys()], ['log-json', 'log-text', 'log-binary', 'log-big', 'log-503', 'log-504']);
    const json = byId.get('log-json');
    assert.deepEqual(json.in, { body: sent });
    assert.deepEqual(json.out, { body: sent });
    assert.equal(json.metadata.status, 200);
    assert.equal(json.metadata.pipeline_version, 'knobs-log-0.0.1');
    assert.equal(JSON.parse(json.metadata.last_model).model_name, 'knobs-log');
    assert.ok(json.metadata.elapsed[1] > 0);
    assert.deepEqual(byId.get('log-text').in, { body: 'plain words' });
    assert.deepEqual(byId.get('log-binary').out, { body: { base64: binary.toString('base64') } });
    assert.deepEqual(byId.get('log-big').in, {});
    assert.deepEqual(byId.get('log-big').metadata.dropped, ['in.body', 'out.body']);
    assert.equal(byId.get('log-503').metadata.status, 503);
    assert.deepEqual(byId.get('log-503').out, { body: { error: 'as asked' } });
    const timedOut = byId.get('log-504');
    assert.equal(timedOut.metadata.status, 504);
    assert.match(timedOut.metadata.error, new RegExp(`did not answer within ${TIMEOUT_MS} ms`));
    assert.equal(timedOut.out.body.error_code, 'IG.504.UpstreamTimeout');
    // The same page as Arrow: one column per body.
    const arrow = await raw(`${gw.url}/v1/services/knobs-log/logs`, { headers: { 'x-auth-token': ADMIN_TOKEN, accept: 'application/vnd.apache.arrow.file', 'content-type': 'application/json' }, body: Buffer.from('{}') });
    assert.equal(arrow.status, 200, arrow.body.toString());
    const { tableFromIPC } = await import('apache-arrow');
    const table = tableFromIPC(arrow.body);
    assert.equal(table.numRows, 6);
    assert.ok(table.schema.fields.some((f) => f.name === 'in.body'));
  });

  test('a slow upstream is answered 504, and the service keeps serving', async () => {
    await deploy(gw, 'knobs-slow', knobsPackage());
    const slow = await postJson(`${gw.url}/v1/infers/knobs-slow/slow?ms=${TIMEOUT_MS * 3}`, {});
    assert.equal(slow.status, 504);
    assert.equal(slow.json.error_code, 'IG.504.UpstreamTimeout');
    assert.match(slow.json.error_msg, new RegExp(`knobs-slow@0.0.1 did not answer within ${TIMEOUT_MS} ms \\(limits.request_timeout_ms\\)`));
    assert.equal((await postJson(`${gw.url}/v1/infers/knobs-slow/slow?ms=1`, {})).status, 200);
  });

  test('a refused connection is retried on another instance; an instance failing in a row is ejected', async () => {
    const servers = await Promise.all(['A', 'B'].map((who) => new Promise<http.Server>((resolve) => {
      const s = http.createServer((req, res) => {
        req.resume();
        req.on('end', () => res.end(JSON.stringify({ who })));
      });
      s.listen(0, '127.0.0.1', () => resolve(s));
    })));
    const [a, b] = servers.map((s) => `http://127.0.0.1:${(s.address() as AddressInfo).port}`);
    try {
      const pkg = knobsPackage({ image: { endpoints: [a, b] }, health: { check_method: 'HTTP', url: '/health', period_seconds: 60, timeout_seconds: 1, failure_threshold: 3 } });
      await deploy(gw, 'two-static', pkg);
      const instances = (await api(gw, 'GET', '/v1/services/two-static/instances')).json.instances;
      assert.deepEqual(instances.map((i: { launcher: string; address: string }) => [i.launcher, i.address]), [['static', a], ['static', b]]);
      // A stops listening; the gateway's health check is a minute away, so only requests find out.
      await new Promise((resolve) => servers[0]!.close(resolve));
      const answers = [];
      for (let i = 0; i < 40; i++) answers.push(await postJson(`${gw.url}/v1/infers/two-static`, {}));
      assert.deepEqual([...new Set(answers.map((x) => `${x.status} ${x.text}`))], ['200 {"who":"B"}']);
      await eventMatching(gw, 'two-static', /^Instance 0 of service two-static \(two-static@0.0.1\) was taken out of load balancing for 10 s after failing requests in a row\.$/);
      // B goes too: the retry meets A's closed port as well, and the client hears so.
      await new Promise((resolve) => servers[1]!.close(resolve));
      for (let i = 0; i < 30; i++) {
        const none = await postJson(`${gw.url}/v1/infers/two-static`, {});
        assert.equal(none.status, 502);
        assert.equal(none.json.error_code, 'IG.502.UpstreamError');
        assert.match(none.json.error_msg, /^two-static@0\.0\.1: cannot connect to 127\.0\.0\.1:\d+ \(ECONNREFUSED\)$/);
      }
      // A, already out, is not ejected again for failing there (its time doubled to 300 s within
      // milliseconds before), and B, the last in rotation, is not ejected at all.
      const ejections = (await events(gw, 'two-static')).filter((m) => /taken out of load balancing/.test(m));
      assert.deepEqual(ejections, ['Instance 0 of service two-static (two-static@0.0.1) was taken out of load balancing for 10 s after failing requests in a row.']);
    } finally {
      servers[1]!.close();
    }
  });

  test('a refused connection with no other instance to retry on is 502, naming the address', async () => {
    const server = await new Promise<http.Server>((resolve) => {
      const s = http.createServer((_req, res) => res.end('{}'));
      s.listen(0, '127.0.0.1', () => resolve(s));
    });
    const port = (server.address() as AddressInfo).port;
    await deploy(gw, 'one-static', knobsPackage({ image: { endpoints: [`http://127.0.0.1:${port}`] }, health: { check_method: 'HTTP', url: '/health', period_seconds: 60, timeout_seconds: 1, failure_threshold: 3 } }));
    await new Promise((resolve) => server.close(resolve));
    const r = await postJson(`${gw.url}/v1/infers/one-static`, {});
    assert.equal(r.status, 502);
    assert.equal(r.json.error_msg, `one-static@0.0.1: cannot connect to 127.0.0.1:${port} (ECONNREFUSED)`);
  });

  test('an instance killed under load: no request hangs, only requests in flight on it fail, and it is replaced', { timeout: 60_000 }, async () => {
    await deploy(gw, 'knobs-kill', knobsPackage(), { versions: [{ model: 'knobs-kill', instances: 2 }] });
    const statuses: number[] = [];
    let stop = false;
    const WORKERS = 6;
    const worker = async (): Promise<void> => {
      while (!stop) statuses.push((await postJson(`${gw.url}/v1/infers/knobs-kill/slow?ms=20`, {})).status);
    };
    const load = Array.from({ length: WORKERS }, worker);
    await until('load to run', async () => statuses.length >= 30);
    const victim = (await postJson(`${gw.url}/v1/infers/knobs-kill/pid`, {})).json.pid as number;
    process.kill(victim, 'SIGKILL');
    await eventMatching(gw, 'knobs-kill', /was restarted and is healthy/);
    const after = statuses.length;
    await until('load to go on after the restart', async () => statuses.length >= after + 30);
    stop = true;
    await Promise.all(load);
    const failed = statuses.filter((s) => s !== 200);
    assert.ok(failed.every((s) => s === 502), `only 502s, got ${JSON.stringify([...new Set(failed)])}`);
    assert.ok(failed.length <= WORKERS, `at most the requests in flight fail: ${failed.length}`);
    const evs = await events(gw, 'knobs-kill');
    assert.ok(evs.some((m) => /^Instance \d of service knobs-kill \(knobs-kill@0.0.1\) was killed by SIGKILL; restarting it\./.test(m)), evs.join('\n'));
    assert.ok(evs.includes('Service knobs-kill is in alarm: 1 instance(s) failing health checks or restarting.'), evs.join('\n'));
    assert.equal((await waitForService(gw, 'knobs-kill', 'running')).status, 'running');
    const instances = (await api(gw, 'GET', '/v1/services/knobs-kill/instances')).json.instances;
    assert.deepEqual(instances.map((i: { restarts: number }) => i.restarts).sort(), [0, 1]);
    const pids = new Set<number>();
    for (let i = 0; i < 20; i++) pids.add((await postJson(`${gw.url}/v1/infers/knobs-kill/pid`, {})).json.pid);
    assert.ok(!pids.has(victim), 'the killed instance no longer answers');
  });

  test('health failing after start: alarm, the instance is restarted, running again', async () => {
    await deploy(gw, 'knobs-sick', knobsPackage());
    const before = (await postJson(`${gw.url}/v1/infers/knobs-sick/pid`, {})).json.pid;
    assert.equal((await postJson(`${gw.url}/v1/infers/knobs-sick/sick`, {})).status, 200);
    await eventMatching(gw, 'knobs-sick', /^Instance 0 of service knobs-sick \(knobs-sick@0.0.1\) failed its health check 2 times in a row \(GET http:\/\/127.0.0.1:\d+\/health answered 500\); restarting it\./);
    await eventMatching(gw, 'knobs-sick', /^Service knobs-sick is in alarm/);
    await eventMatching(gw, 'knobs-sick', /^Service knobs-sick is running again: every instance passes its health check\.$/);
    await waitForService(gw, 'knobs-sick', 'running');
    const now = (await postJson(`${gw.url}/v1/infers/knobs-sick/pid`, {})).json.pid;
    assert.notEqual(now, before);
    const logs = await fetch(`${gw.url}/v1/services/knobs-sick/instances/0/logs`, { headers: { 'x-auth-token': ADMIN_TOKEN } }).then((r) => r.text());
    assert.match(logs, /--- the instance it replaced ---\nknobs-server listening on 127.0.0.1:\d+\n--- this instance ---\nknobs-server listening/);
  });

  test('EXEC health: a command run in the instance\'s environment; failing after start restarts it, too slow at start fails it', async () => {
    const markers = tempDir('exec-health-');
    const health = { check_method: 'EXEC', command: ['sh', '-c', 'test ! -e "$MARKERS/sick-$PORT"'], initial_delay_seconds: 0, timeout_seconds: 2, period_seconds: 0.2, failure_threshold: 2 };
    await deploy(gw, 'knobs-exec', knobsPackage({ image: { command: ['node', 'server.mjs'], env: { MARKERS: markers } }, health }));
    const port = (await postJson(`${gw.url}/v1/infers/knobs-exec/pid`, {})).json.port as number;
    writeFileSync(path.join(markers, `sick-${port}`), '');
    await eventMatching(gw, 'knobs-exec', /^Instance 0 of service knobs-exec \(knobs-exec@0\.0\.1\) failed its health check 2 times in a row \(health command exited with code 1\); restarting it\./);
    rmSync(path.join(markers, `sick-${port}`));
    await eventMatching(gw, 'knobs-exec', /^Service knobs-exec is running again: every instance passes its health check\.$/);
    assert.equal((await postJson(`${gw.url}/v1/infers/knobs-exec/pid`, {})).status, 200);
    // An exit code that reads like a real-time signal's (128 + 34) is still a failing code.
    const odd = { check_method: 'EXEC', command: ['sh', '-c', 'exit 162'], initial_delay_seconds: 0, timeout_seconds: 1, period_seconds: 0.1, failure_threshold: 2 };
    await deploy(gw, 'knobs-exec-162', knobsPackage({ health: odd }), {}, 'failed');
    assert.ok((await events(gw, 'knobs-exec-162')).some((m) => /failed its health check for [\d.]+ s after starting: health command exited with code 162/.test(m)));
    const slow = { check_method: 'EXEC', command: ['sleep', '5'], initial_delay_seconds: 0, timeout_seconds: 0.3, period_seconds: 0.1, failure_threshold: 2 };
    await deploy(gw, 'knobs-exec-slow', knobsPackage({ health: slow }), {}, 'failed');
    const evs = await events(gw, 'knobs-exec-slow');
    assert.ok(evs.some((m) => /^Failed to deploy the service\. Error: instance 0 of service knobs-exec-slow \(knobs-exec-slow@0\.0\.1\) failed its health check for [\d.]+ s after starting: health command did not finish within 0\.3 s/.test(m)), evs.join('\n'));
  });

  test('a service deleted while its deployment fails is gone: its name is not left routed as failed', async () => {
    const imported = await api(gw, 'POST', '/v1/models', { name: 'ghost', source: { path: knobsPackage({ image: { command: ['sleep', '30'] } }) } });
    assert.equal(imported.status, 201, imported.text);
    assert.equal((await api(gw, 'POST', '/v1/services', { name: 'ghost', auth: 'none', versions: [{ model: 'ghost' }] })).status, 202);
    assert.equal((await api(gw, 'DELETE', '/v1/services/ghost')).status, 202);
    // The row goes after the deployment's own step (which fails: the instance never answers its health check).
    await until('the service to be deleted', async () => (await api(gw, 'GET', '/v1/services/ghost')).status === 404, 20_000);
    const a = await postJson(`${gw.url}/v1/infers/ghost`, {});
    assert.equal(a.status, 404, a.text);
    assert.equal(a.json.error_code, 'IG.404.ServiceNotFound');
  });

  test('failing at start is failed, with the reason and the instance\'s last output', async () => {
    await deploy(gw, 'knobs-nohealth', knobsPackage({ health: { check_method: 'HTTP', url: '/status?code=503', period_seconds: 0.1, failure_threshold: 2, timeout_seconds: 0.5 } }), {}, 'failed');
    const unhealthy = await events(gw, 'knobs-nohealth');
    assert.ok(unhealthy.some((m) => /^Failed to deploy the service\. Error: instance 0 of service knobs-nohealth \(knobs-nohealth@0.0.1\) failed its health check for 0.7 s after starting: GET http:\/\/127.0.0.1:\d+\/status\?code=503 answered 503/.test(m)), unhealthy.join('\n'));
    await deploy(gw, 'knobs-crash', knobsPackage({ image: { command: ['node', '-e', "console.error('no weights in ' + process.env.MODEL_PATH); process.exit(3)"] } }), {}, 'failed');
    const evs = await events(gw, 'knobs-crash');
    assert.ok(evs.some((m) => /^Failed to deploy the service\. Error: instance 0 of service knobs-crash \(knobs-crash@0.0.1\) exited with code 3 before it became healthy; its last output:\nno weights in \/.+/.test(m)), evs.join('\n'));
    const missing = await deploy(gw, 'knobs-nocmd', knobsPackage({ image: { command: ['no-such-binary-here'] } }), {}, 'failed');
    assert.equal(missing.status, 'failed');
    assert.ok((await events(gw, 'knobs-nocmd')).some((m) => /could not start `no-such-binary-here`: spawn no-such-binary-here ENOENT/.test(m)));
  });

  test('the docker launcher without an engine fails the deployment saying so', async (t) => {
    const socket = process.env['DOCKER_HOST'] ? null : '/var/run/docker.sock';
    if (!socket || existsSync(socket)) return t.skip('a Docker engine may be present here (DOCKER_HOST set or /var/run/docker.sock exists): the no-engine path is not testable');
    await deploy(gw, 'dockerized', knobsPackage({ image: { image: 'example.com/model:1.0', port: 8080 } }), {}, 'failed');
    const evs = await events(gw, 'dockerized');
    assert.ok(evs.some((m) => m.includes('no Docker engine here: /var/run/docker.sock does not exist (start Docker, set DOCKER_HOST, or give the package image.command to run it with the process launcher)')), evs.join('\n'));
  });

  test('the docker launcher: a container runs the package\'s command in /model, answers, and shows its output while running', { skip: DOCKER_SKIP }, async () => {
    await deploy(gw, 'docker-run', dockerPackage());
    const a = await postJson(`${gw.url}/v1/infers/docker-run/pid`, {});
    assert.equal(a.status, 200, a.text);
    assert.equal(a.json.port, 8080, 'PORT is the package\'s image.port inside the container');
    const instances = (await api(gw, 'GET', '/v1/services/docker-run/instances')).json.instances;
    assert.equal(instances[0].launcher, 'docker');
    const logs = await fetch(`${gw.url}/v1/services/docker-run/instances/0/logs`, { headers: { 'x-auth-token': ADMIN_TOKEN } }).then((r) => r.text());
    assert.match(logs, /knobs-server listening on 0\.0\.0\.0:8080/);
  });

  test('the docker launcher: EXEC health runs in the container, passing and failing', { skip: DOCKER_SKIP }, async () => {
    const health = (code: number) => ({ check_method: 'EXEC', command: ['node', '-e', `process.exit(${code})`], initial_delay_seconds: 0, timeout_seconds: 5, period_seconds: 0.2, failure_threshold: 2 });
    await deploy(gw, 'docker-exec-ok', dockerPackage({ health: health(0) }));
    await deploy(gw, 'docker-exec-3', dockerPackage({ health: health(3) }), {}, 'failed');
    const evs = await events(gw, 'docker-exec-3');
    assert.ok(evs.some((m) => /failed its health check for [\d.]+ s after starting: health command exited with code 3/.test(m)), evs.join('\n'));
  });

  test('the docker launcher: an EXEC health command past its timeout is killed in the container, not left running', { skip: DOCKER_SKIP }, async () => {
    // The first check passes; every later one hangs until the check's timeout.
    const script = "const fs=require('fs');const f='/tmp/health-checks';const n=fs.existsSync(f)?fs.readFileSync(f,'utf8').length:0;fs.appendFileSync(f,'x');if(n>0)setInterval(()=>{},1000)";
    const health = { check_method: 'EXEC', command: ['node', '-e', script], initial_delay_seconds: 0, timeout_seconds: 0.3, period_seconds: 0.1, failure_threshold: 1000 };
    await deploy(gw, 'docker-exec-hang', dockerPackage({ health }));
    let seen = { count: -1, file: '' };
    await until('four checks started, three of them timed out', async () => {
      seen = (await postJson(`${gw.url}/v1/infers/docker-exec-hang/procs?match=/tmp/health-checks&file=/tmp/health-checks`, {})).json;
      return (seen.file ?? '').length >= 4;
    }, 30_000);
    // At most the check running now; before, every timed-out check stayed, one more each period.
    assert.ok(seen.count <= 1, `health commands still running: ${seen.count} after ${seen.file.length} checks`);
  });

  test('the docker launcher: an image that cannot be pulled fails the deployment saying why', { skip: DOCKER_SKIP }, async () => {
    await deploy(gw, 'docker-nopull', knobsPackage({ image: { image: 'infergate-test/no-such-image', port: 8080 } }), {}, 'failed');
    const evs = await events(gw, 'docker-nopull');
    assert.ok(evs.some((m) => /^Failed to deploy the service\. Error: .*Docker could not pull infergate-test\/no-such-image: ./.test(m)), evs.join('\n'));
  });

  test('the docker launcher: a container that cannot start fails the deployment and is not left behind', { skip: DOCKER_SKIP }, async () => {
    await deploy(gw, 'docker-nocmd', dockerPackage({}, ['no-such-binary-here']), {}, 'failed');
    const evs = await events(gw, 'docker-nocmd');
    // The engine's init says why in the container's output, which the event quotes.
    assert.ok(evs.some((m) => /^Failed to deploy the service\. Error: .*exited with code 127[\s\S]*its last output:\n.*no-such-binary-here/.test(m)), evs.join('\n'));
    assert.deepEqual(await containersLabelled('infergate.instance=infergate-docker-nocmd-0.0.1'), []);
  });

  test('bad image packages are refused at import, naming the field', async () => {
    const cases: [Record<string, unknown>, RegExp][] = [
      [{ image: undefined }, /config\.json: an Image package needs an "image" object with "command" \(run as a process\), "endpoints" \(servers already running\) or "image" \(a Docker image\)/],
      [{ image: { command: [] } }, /image\.command: must be a command: an array of strings such as \["node", "server.js"\], or one shell string/],
      [{ image: { endpoints: ['ftp://10.0.0.1:21'] } }, /image\.endpoints\[0\] 'ftp:\/\/10.0.0.1:21': only http:\/\/ upstreams are proxied/],
      [{ image: { command: ['node'], extra: 1 } }, /image: unknown field 'extra'; expected command, port, endpoints, image, env, launcher/],
      [{ health: { check_method: 'PING' } }, /health\.check_method must be "HTTP" or "EXEC", got "PING"/],
      [{ health: { check_method: 'EXEC' } }, /health\.check_method "EXEC" needs health\.command/],
      [{ health: { period_seconds: -1 } }, /health\.period_seconds must be a number ≥ 0.05, got -1/],
    ];
    for (const [config, re] of cases) {
      const a = await api(gw, 'POST', '/v1/models', { name: 'bad-image', source: { path: knobsPackage(config) } });
      assert.equal(a.status, 400, JSON.stringify(config));
      assert.match(a.json.error_msg, re);
    }
  });

  test('a service does not mix ONNX and image versions, and shadows are for ONNX services', async () => {
    await api(gw, 'POST', '/v1/models', { name: 'onnx-iris', source: { path: path.join(SAMPLE_MODELS, 'iris') } });
    await api(gw, 'POST', '/v1/models', { name: 'knobs-mix', source: { path: knobsPackage() } });
    await api(gw, 'POST', '/v1/models', { name: 'knobs-mix', version: '0.0.2', source: { path: knobsPackage() } });
    const mixed = await api(gw, 'POST', '/v1/services', { name: 'mixed', versions: [{ model: 'onnx-iris', weight: 50 }, { model: 'knobs-mix', version: '0.0.1', weight: 50 }] });
    assert.equal(mixed.status, 400);
    assert.match(mixed.json.error_msg, /a service runs one kind of model: knobs-mix@0.0.1 is an Image model and onnx-iris@0.0.1 is ONNX; deploy them as two services/);
    const shadow = await api(gw, 'POST', '/v1/services', { name: 'shadowed', versions: [{ model: 'knobs-mix', version: '0.0.1', weight: 100 }, { model: 'knobs-mix', version: '0.0.2', weight: 0 }], shadow: [{ version: '0.0.2' }] });
    assert.equal(shadow.status, 400);
    assert.match(shadow.json.error_msg, /'shadow' is for ONNX services/);
  });

  test('instances and their logs; unknown instances are 404', async () => {
    await deploy(gw, 'knobs-logs', knobsPackage(), { versions: [{ model: 'knobs-logs', instances: 1, env: { KNOB: 'turned' } }] });
    const inst = (await api(gw, 'GET', '/v1/services/knobs-logs/instances')).json.instances;
    assert.equal(inst.length, 1);
    assert.equal(inst[0].status, 'running');
    assert.match(inst[0].address, /^http:\/\/127.0.0.1:\d+$/);
    assert.equal((await postJson(`${gw.url}/v1/infers/knobs-logs/pid`, {})).json.env, 'turned', 'the version\'s env reaches the instance');
    assert.deepEqual((await api(gw, 'GET', '/v1/services/knobs-logs')).json.versions[0].env, { KNOB: '(hidden)' }, 'env values are not shown to readers');
    const logs = await fetch(`${gw.url}/v1/services/knobs-logs/instances/0/logs`, { headers: { 'x-auth-token': ADMIN_TOKEN } });
    assert.equal(logs.status, 200);
    assert.match(await logs.text(), new RegExp(`knobs-server listening on ${inst[0].address.slice('http://'.length)}`));
    const missing = await api(gw, 'GET', '/v1/services/knobs-logs/instances/9/logs');
    assert.equal(missing.status, 404);
    assert.match(missing.json.error_msg, /service 'knobs-logs' version 0.0.1 has no instance '9'; its instances are 0/);
  });

  test('high-speed channel: image services list their instances\' own addresses', async () => {
    await deploy(gw, 'knobs-fast', knobsPackage(), { high_speed: true, auth: 'token' });
    const eps = await api(gw, 'GET', '/v1/services/knobs-fast/predict/endpoints?type=host_endpoints');
    assert.equal(eps.status, 200, eps.text);
    const [ep] = eps.json.endpoints;
    assert.deepEqual(Object.keys(ep).sort(), ['instance', 'ip', 'port', 'schema', 'version']);
    assert.equal(ep.version, '0.0.1');
    const direct = await postJson(`http://${ep.ip}:${ep.port}/pid`, {});
    assert.equal(direct.status, 200);
  });
});

describe('the docker launcher where no engine runs (DOCKER_HOST set by the test)', () => {
  test('no socket: a docker deployment fails saying so; a socket nobody listens on: the start is quiet and the deployment fails with the engine\'s error', async () => {
    const dir = tempDir('no-engine-');
    const missing = path.join(dir, 'missing.sock');
    let gw = await startGateway({ modelsDir: tempDir('no-models-'), env: { DOCKER_HOST: `unix://${missing}`, INFERGATE_LOG_LEVEL: 'info' } });
    try {
      await deploy(gw, 'dockerized', knobsPackage({ image: { image: 'example.com/model:1.0', port: 8080 } }), {}, 'failed');
      const evs = await events(gw, 'dockerized');
      assert.ok(evs.some((m) => m.includes(`no Docker engine here: ${missing} does not exist (start Docker, set DOCKER_HOST, or give the package image.command to run it with the process launcher)`)), evs.join('\n'));
    } finally {
      await gw.stop();
    }
    // Docker installed but stopped: its socket is there and refuses. No container of it can be running.
    const refusing = path.join(dir, 'refusing.sock');
    writeFileSync(refusing, '');
    gw = await startGateway({ modelsDir: tempDir('no-models-'), env: { DOCKER_HOST: `unix://${refusing}`, INFERGATE_LOG_LEVEL: 'info' } });
    try {
      await deploy(gw, 'dockerized', knobsPackage({ image: { image: 'example.com/model:1.0', port: 8080 } }), {}, 'failed');
      const evs = await events(gw, 'dockerized');
      assert.ok(evs.some((m) => m.includes(`Docker Engine API at ${refusing}: connect ECONNREFUSED ${refusing}`)), evs.join('\n'));
      // Logged (if at all) before the listening line, long before the deployment's events.
      assert.doesNotMatch(gw.stderr(), /could not look for Docker containers/, 'a stopped engine is no news at every start');
    } finally {
      await gw.stop();
    }
  });
});

describe('high-speed channel for ONNX services (SPEC §5.6)', () => {
  let gw: RunningGateway;
  before(async () => {
    gw = await startGateway({ modelsDir: tempDir('no-models-'), config: { services: [] } });
    await api(gw, 'POST', '/v1/models', { name: 'iris', source: { path: path.join(SAMPLE_MODELS, 'iris') } });
  });
  after(async () => {
    await gw.stop();
  });

  test('a direct listener answers like the routed path, without auth, and is not counted', async () => {
    const created = await api(gw, 'POST', '/v1/services', { name: 'fast-iris', auth: 'token', high_speed: true, versions: [{ model: 'iris' }] });
    assert.equal(created.status, 202, created.text);
    await waitForService(gw, 'fast-iris', 'running');
    const eps = await api(gw, 'GET', '/v1/services/fast-iris/predict/endpoints?type=host_endpoints');
    assert.equal(eps.status, 200, eps.text);
    assert.equal(eps.json.endpoints.length, 1);
    const ep = eps.json.endpoints[0];
    assert.equal(ep.schema, 'http');
    assert.equal(ep.ip, '127.0.0.1');
    assert.ok(ep.port >= 31000 && ep.port <= 31999, `port ${ep.port} from server.direct_ports`);
    const body = { data: { req_data: [{ sepal_length: 5.1, sepal_width: 3.5, petal_length: 1.4, petal_width: 0.2 }, { sepal_length: 6.3, sepal_width: 3.3, petal_length: 6.0, petal_width: 2.5 }] } };
    const routed = await postJson(`${gw.url}/v1/infers/fast-iris`, body, 'application/json', { 'x-auth-token': ADMIN_TOKEN });
    assert.equal(routed.status, 200);
    const countedBefore = await counted(gw, 'fast-iris');
    const direct = await postJson(`http://127.0.0.1:${ep.port}/`, body);
    assert.equal(direct.status, 200);
    assert.equal(direct.text, routed.text);
    const v2 = { inputs: [{ name: 'input', shape: [1, 4], datatype: 'FP32', data: [5.1, 3.5, 1.4, 0.2] }] };
    assert.equal((await postJson(`http://127.0.0.1:${ep.port}/`, v2)).text, (await postJson(`${gw.url}/v2/models/fast-iris/infer`, v2, 'application/json', { 'x-auth-token': ADMIN_TOKEN })).text);
    assert.equal(await counted(gw, 'fast-iris'), countedBefore + 1, 'only the routed v2 call is counted');
    // The listener takes WebSocket too (SPEC §5.6), without a token, answering as the HTTP path does.
    const sock = await openWs(`ws://127.0.0.1:${ep.port}/`);
    const answers = nextMessages(sock, 1);
    sock.send(JSON.stringify(body));
    assert.deepEqual((await answers)[0], routed.json);
    sock.close();
    assert.equal(await counted(gw, 'fast-iris'), countedBefore + 1, 'nor are direct WebSocket messages');
    const plainGet = await fetch(`http://127.0.0.1:${ep.port}/`);
    assert.equal(plainGet.status, 426);
    assert.equal(plainGet.headers.get('upgrade'), 'websocket');
    assert.match(((await plainGet.json()) as { error_msg: string }).error_msg, /^GET on the high-speed listener \(\/\) opens a WebSocket: send Upgrade: websocket, or POST the request$/);
    const wrong = await fetch(`http://127.0.0.1:${ep.port}/`, { method: 'PUT', body: '{}' });
    assert.equal(wrong.status, 405);
    assert.equal(wrong.headers.get('allow'), 'GET, POST');
    assert.match(((await wrong.json()) as { error_msg: string }).error_msg, /^PUT is not allowed on the high-speed listener \(\/\); use POST, or GET with Upgrade: websocket$/);
    // Turned off: the listener closes and the endpoints API says why.
    assert.equal((await api(gw, 'PATCH', '/v1/services/fast-iris', { high_speed: false })).status, 202);
    await waitForService(gw, 'fast-iris', 'running');
    await until('the listener to close', async () => fetch(`http://127.0.0.1:${ep.port}/`, { method: 'POST' }).then(() => false, () => true));
    const off = await api(gw, 'GET', '/v1/services/fast-iris/predict/endpoints');
    assert.equal(off.status, 409);
    assert.match(off.json.error_msg, /service 'fast-iris' does not have the high-speed channel; PATCH it with \{"high_speed": true\}/);
    const badType = await api(gw, 'GET', '/v1/services/fast-iris/predict/endpoints?type=vpc');
    assert.equal(badType.status, 400);
    assert.match(badType.json.error_msg, /type must be 'host_endpoints'/);
  });
});

/** Whether a process runs (a zombie waiting for its parent to reap it does not). */
function running(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    return readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /s, '')[0] !== 'Z';
  } catch {
    return false;
  }
}

describe('instances do not outlive the gateway', () => {
  test('a gateway killed with SIGKILL takes its process instances with it; their own exits still read as before', { skip: process.platform === 'win32' && 'process groups and /bin/sh are POSIX' }, async () => {
    const gw = await startGateway({ modelsDir: tempDir('no-models-') });
    let pids = new Set<number>();
    try {
      await deploy(gw, 'orphans', knobsPackage(), { versions: [{ model: 'orphans', instances: 2 }] });
      await until('both instances to answer', async () => {
        pids.add((await postJson(`${gw.url}/v1/infers/orphans/pid`, {})).json.pid as number);
        return pids.size === 2;
      });
      // The watchdog shell in between passes a signal's death on as the same signal.
      const [first] = pids;
      process.kill(first!, 'SIGKILL');
      await eventMatching(gw, 'orphans', /^Instance \d of service orphans \(orphans@0\.0\.1\) was killed by SIGKILL; restarting it\./);
      await eventMatching(gw, 'orphans', /was restarted and is healthy/);
      // Nor does the shell add words of its own ("Killed") to the output the events and logs show.
      const logs = await Promise.all(['0', '1'].map((i) => fetch(`${gw.url}/v1/services/orphans/instances/${i}/logs`, { headers: { 'x-auth-token': ADMIN_TOKEN } }).then((r) => r.text())));
      assert.ok(logs.some((l) => l.includes('--- the instance it replaced ---')), logs.join('\n'));
      assert.doesNotMatch(logs.join('\n'), /Killed|Terminated|infergate-instance/);
      pids = new Set();
      await until('both instances to answer again', async () => {
        pids.add((await postJson(`${gw.url}/v1/infers/orphans/pid`, {})).json.pid as number);
        return pids.size === 2;
      });
      assert.ok([...pids].every(running), 'the instances run before the gateway dies');
    } finally {
      gw.proc.kill('SIGKILL');
      await gw.exited;
    }
    await until('the instances to stop after the gateway died', async () => ![...pids].some(running), 15_000);
  });

  test('containers a gateway killed with SIGKILL left running are removed at its next start', { skip: DOCKER_SKIP }, async () => {
    const gw = await startGateway({ modelsDir: tempDir('no-models-') });
    const owner = readFileSync(path.join(gw.dataDir, 'gateway-id'), 'utf8').trim();
    let before: string[];
    try {
      await deploy(gw, 'docker-orphans', dockerPackage());
      before = await containersOf(owner);
      assert.equal(before.length, 1, 'one container, labelled with the gateway\'s id');
    } finally {
      gw.proc.kill('SIGKILL');
      await gw.exited;
    }
    assert.deepEqual(await containersOf(owner), before, 'the engine keeps it: nobody stopped it');
    const again = await startGateway({ modelsDir: tempDir('no-models-'), dataDir: gw.dataDir });
    try {
      assert.match(again.stderr(), new RegExp(`removed 1 Docker container\\(s\\) a previous run of this gateway left running: infergate-docker-orphans-0\\.0\\.1-0-`));
      await waitForService(again, 'docker-orphans', 'running');
      const now = await containersOf(owner);
      assert.equal(now.length, 1);
      assert.notEqual(now[0], before[0], 'the old container went; the recovered service runs a new one');
      assert.equal((await postJson(`${again.url}/v1/infers/docker-orphans`, {})).status, 200);
    } finally {
      await again.stop();
    }
    assert.deepEqual(await containersOf(owner), [], 'a graceful stop removes its containers');
  });
});

/** Ids of the containers (running or not) labelled as this gateway's, from the Docker Engine API. */
const containersOf = (owner: string): Promise<string[]> => containersLabelled(`infergate.gateway=${owner}`);

async function containersLabelled(label: string): Promise<string[]> {
  const host = process.env['DOCKER_HOST'];
  const filters = encodeURIComponent(JSON.stringify({ label: [label] }));
  const target = host?.startsWith('tcp://') ? { host: new URL(host.replace(/^tcp:/, 'http:')).hostname, port: Number(new URL(host.replace(/^tcp:/, 'http:')).port || 2375) } : { socketPath: host?.startsWith('unix://') ? host.slice(7) : '/var/run/docker.sock' };
  const body = await new Promise<string>((resolve, reject) => {
    http.get({ ...target, path: `/v1.41/containers/json?all=1&filters=${filters}` }, (res) => {
      let text = '';
      res.on('data', (c: Buffer) => (text += c.toString()));
      res.on('end', () => resolve(text));
    }).on('error', reject);
  });
  return (JSON.parse(body) as { Id: string }[]).map((c) => c.Id).sort();
}

describe('health checks and the gateway\'s own stalls', () => {
  test('an instance that answered while the gateway\'s event loop was blocked past the timeout passes its check', async () => {
    const { probe } = await import('../src/runtime/image/health.js');
    const server = http.createServer((_req, res) => res.end('ok'));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as AddressInfo).port;
    // The server answers from another process, as an instance does: its answer waits in the kernel while this one is busy.
    const { spawn } = await import('node:child_process');
    server.close();
    const child = spawn(process.execPath, [path.join(KNOBS, 'server.mjs')], { env: { ...process.env, PORT: String(port) }, stdio: ['ignore', 'pipe', 'inherit'] });
    try {
      await new Promise<void>((resolve) => child.stdout!.once('data', () => resolve()));
      const inst = { host: '127.0.0.1', port } as Parameters<typeof probe>[1];
      const health = (method: 'HTTP' | 'TCP') => ({ check_method: method, url: '/health', protocol: 'http' as const, command: null, initial_delay_seconds: 0, timeout_seconds: 0.1, period_seconds: 1, failure_threshold: 1 });
      for (const method of ['HTTP', 'TCP'] as const) {
        const verdict = probe(health(method), inst);
        // A stall of the gateway's own making (a huge body decoding): four times the timeout.
        const until = Date.now() + 400;
        while (Date.now() < until) { /* blocked */ }
        assert.equal(await verdict, null, `${method}: the answer came in time; only the gateway was late to read it`);
      }
      // A server that does not answer still fails on time.
      const silent = net.createServer(() => undefined);
      await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
      const quiet = { host: '127.0.0.1', port: (silent.address() as AddressInfo).port } as Parameters<typeof probe>[1];
      assert.match((await probe(health('HTTP'), quiet))!, /GET http:\/\/127\.0\.0\.1:\d+\/health failed: no answer within 0\.1 s/);
      silent.close();
    } finally {
      child.kill();
    }
  });
});
