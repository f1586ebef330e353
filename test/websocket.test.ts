import assert from 'node:assert/strict';
import { copyFileSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { Packr, unpack } from 'msgpackr';
import { after, before, describe, test } from 'node:test';
import ort from 'onnxruntime-node';
import { fraudRow, prng } from './helpers/direct.js';
import { ADMIN_TOKEN, ROOT, api, metric, startGateway, tempDir, until, waitForService, type RunningGateway } from './helpers/gateway.js';
import { NeverReader, closed, nextMessages, openWs } from './helpers/ws.js';

/** WebSocket streaming (SPEC §5.5) against the real gateway, with clients that are not the gateway's code. */

const SILERO = path.join(ROOT, 'node_modules/@ricky0123/vad-web/dist/silero_vad_v5.onnx');
const CCFRAUD = path.join(ROOT, 'models/ccfraud/model.onnx');
const CHUNK = 512;
const plain = new Packr({ useRecords: false });

/** A package of Silero VAD whose state the gateway keeps per connection. */
function sileroPackage(): string {
  const dir = tempDir('silero-pkg-');
  copyFileSync(SILERO, path.join(dir, 'model.onnx'));
  writeFileSync(path.join(dir, 'config.json'), JSON.stringify({
    model_type: 'ONNX', model_algorithm: 'voice_activity_detection',
    stream: { state: [{ input: 'state', output: 'stateN', init: 'zeros' }] },
  }));
  return dir;
}

/** Deterministic audio at 16 kHz: near-silence, a voiced stretch (harmonics of a gliding pitch under an envelope), near-silence. */
function audio(seed: number, chunks: number): Float32Array {
  const rand = prng(seed);
  const out = new Float32Array(chunks * CHUNK);
  const voicedFrom = Math.floor(out.length * 0.25);
  const voicedTo = Math.floor(out.length * 0.75);
  let phase = 0;
  for (let i = 0; i < out.length; i++) {
    const noise = (rand() - 0.5) * 0.002;
    if (i < voicedFrom || i >= voicedTo) {
      out[i] = Math.fround(noise);
      continue;
    }
    const t = (i - voicedFrom) / (voicedTo - voicedFrom);
    phase += (2 * Math.PI * (120 + 60 * t + seed * 7)) / 16000;
    let v = 0;
    for (let h = 1; h <= 12; h++) v += Math.sin(h * phase) / h;
    out[i] = Math.fround(0.3 * Math.sin(Math.PI * t) * v + noise);
  }
  return out;
}

/** Silero run chunk by chunk in-process, the state carried from each run to the next. */
async function sileroDirect(session: ort.InferenceSession, samples: Float32Array): Promise<number[]> {
  let state: ort.Tensor = new ort.Tensor('float32', new Float32Array(2 * 128), [2, 1, 128]);
  const sr = new ort.Tensor('int64', BigInt64Array.from([16000n]), []);
  const probs: number[] = [];
  for (let at = 0; at < samples.length; at += CHUNK) {
    const out = await session.run({ input: new ort.Tensor('float32', samples.slice(at, at + CHUNK), [1, CHUNK]), state, sr });
    probs.push((out['output']!.data as Float32Array)[0]!);
    state = out['stateN'] as ort.Tensor;
  }
  return probs;
}

const chunkMessage = (id: string, samples: Float32Array, at: number) => ({
  id, inputs: [{ name: 'input', shape: [1, CHUNK], datatype: 'FP32', data: Array.from(samples.subarray(at, at + CHUNK)) }, { name: 'sr', shape: [], datatype: 'INT64', data: [16000] }],
});

/** Sends the audio chunk by chunk over one connection, each after the last one's answer; the speech probabilities. */
async function streamed(sock: Parameters<typeof nextMessages>[0], samples: Float32Array, idPrefix: string): Promise<number[]> {
  const got: number[] = [];
  for (let at = 0, k = 0; at < samples.length; at += CHUNK, k++) {
    const answer = nextMessages(sock, 1);
    sock.send(JSON.stringify(chunkMessage(`${idPrefix}${k}`, samples, at)));
    got.push((await answer)[0].outputs[0].data[0]);
  }
  return got;
}

describe('WebSocket streaming', () => {
  let gw: RunningGateway;
  let ws: string;
  before(async () => {
    gw = await startGateway({
      config: {
        services: [
          { name: 'ccfraud', auth: 'none', websocket: true, versions: [{ model: 'ccfraud' }] },
          { name: 'fraud-token', auth: 'token', websocket: true, versions: [{ model: 'ccfraud' }] },
          { name: 'fraud-log', auth: 'none', websocket: true, versions: [{ model: 'ccfraud' }] },
        ],
      },
    });
    ws = gw.url.replace('http', 'ws');
    const imported = await api(gw, 'POST', '/v1/models', { name: 'silero', version: '5.0.0', source: { path: sileroPackage() } });
    assert.equal(imported.status, 201, imported.text);
    const created = await api(gw, 'POST', '/v1/services', { name: 'silero-stream', auth: 'none', websocket: true, versions: [{ model: 'silero' }] });
    assert.equal(created.status, 202, created.text);
    await waitForService(gw, 'silero-stream', 'running');
    await waitForService(gw, 'vad', 'running');
    await waitForService(gw, 'fraud-token', 'running');
    await waitForService(gw, 'fraud-log', 'running');
  });
  after(async () => {
    await gw.stop();
  });

  test('1,000 pipelined messages on one connection: every id answered once, with the right rows', async () => {
    const rand = prng(21);
    const data = Array.from({ length: 1000 }, () => fraudRow(rand));
    const session = await ort.InferenceSession.create(CCFRAUD);
    const want = (await session.run({ tensor: new ort.Tensor('float32', Float32Array.from(data.flat()), [1000, 29]) }))['dense_1']!.data as Float32Array;
    const c = await openWs(`${ws}/v1/infers/ccfraud`);
    const answers = nextMessages(c, 1000);
    for (let i = 0; i < 1000; i++) {
      // Three shapes in turn; each carries its id its own way.
      const row = data[i]!;
      const msg = i % 3 === 0 ? { id: `m${i}`, inputs: [{ name: 'tensor', shape: [1, 29], datatype: 'FP32', data: row }] }
        : i % 3 === 1 ? { meta: { uuid: `m${i}` }, data: { req_data: [{ tensor: row }] } }
        : { id: `m${i}`, input_data: [{ fields: ['tensor'], values: [[row]] }] };
      c.send(JSON.stringify(msg));
    }
    const got = await answers;
    const seen = new Map<string, number>();
    for (const a of got) {
      const id = a.id as string;
      assert.ok(!seen.has(id), `${id} answered twice`);
      const i = Number(id.slice(1));
      const value = i % 3 === 0 ? a.outputs[0].data[0] : i % 3 === 1 ? a.data.resp_data[0].dense_1 : a.predictions[0].values[0][0];
      seen.set(id, value);
      assert.equal(value, want[i], `answer to ${id}`);
    }
    assert.equal(seen.size, 1000);
    c.close();
  });

  test('a bad frame gets an error frame with its id, and the connection keeps working', async () => {
    const c = await openWs(`${ws}/v1/infers/ccfraud`);
    const row = fraudRow(prng(4));
    const bad: [string | Buffer, string | null, string, RegExp][] = [
      ['{not json', null, 'IG.400.BadJson', /^the message is not valid JSON: /],
      [JSON.stringify({ id: 'x1', foo: 1 }), 'x1', 'IG.400.UnknownShape', /unrecognised request shape/],
      [JSON.stringify({ id: 'x2', inputs: [{ name: 'tensor', shape: [1, 28], datatype: 'FP32', data: row.slice(1) }] }), 'x2', 'IG.400.WrongShape', /shape \[1,28\] does not fit the model's \[N,29\]/],
      [JSON.stringify({ meta: { uuid: 'x3' }, data: { req_data: [{ tensor: 'abc' }] } }), 'x3', 'IG.400.WrongShape', /record 0, field 'tensor'/],
      [Buffer.from([0xc1, 0x00, 0xff]), null, 'IG.400.BadMsgpack', /^the message is not valid msgpack: /],
    ];
    for (const [frame, id, code, msg] of bad) {
      const answer = nextMessages(c, 1);
      c.send(frame, { binary: Buffer.isBuffer(frame) });
      const [a] = await answer;
      const e = Buffer.isBuffer(a) ? unpack(a) : a;
      assert.equal(e.id, id);
      assert.equal(e.error_code, code);
      assert.match(e.error_msg, msg);
    }
    const answer = nextMessages(c, 1);
    c.send(JSON.stringify({ id: 'ok', inputs: [{ name: 'tensor', shape: [1, 29], datatype: 'FP32', data: row }] }));
    assert.equal((await answer)[0].id, 'ok');
    c.close();
  });

  test('binary frames are msgpack both ways, typed arrays included', async () => {
    const c = await openWs(`${ws}/v1/infers/ccfraud`);
    const row = fraudRow(prng(5));
    const answer = nextMessages(c, 2);
    c.send(plain.pack({ id: 7, inputs: [{ name: 'tensor', shape: [1, 29], datatype: 'FP32', data: Float32Array.from(row) }] }));
    c.send(JSON.stringify({ id: 8, inputs: [{ name: 'tensor', shape: [1, 29], datatype: 'FP32', data: row }] }));
    const [bin, text] = await answer;
    assert.ok(Buffer.isBuffer(bin), 'a binary frame is answered with a binary frame');
    const decoded = unpack(bin);
    assert.equal(decoded.id, 7);
    assert.equal(text.id, 8, 'numeric ids are echoed as numbers');
    assert.deepEqual(decoded.outputs[0].shape, [1, 1]);
    assert.deepEqual(decoded.outputs, text.outputs);
    c.close();
  });

  test('upgrades: refused for unknown services, services without websocket, and missing tokens; ?token= works', async () => {
    await assert.rejects(openWs(`${ws}/v1/infers/nope`), (err: any) => err.status === 404 && err.body.error_code === 'IG.404.ServiceNotFound');
    await assert.rejects(openWs(`${ws}/v1/infers/iris`), (err: any) => err.status === 409 && err.body.error_code === 'IG.409.WebSocketOff' && /update it with \{"websocket": true\}/.test(err.body.error_msg));
    await assert.rejects(openWs(`${ws}/v1/infers/fraud-token`), (err: any) => err.status === 401 && /no token/.test(err.body.error_msg));
    await assert.rejects(openWs(`${ws}/v1/infers/fraud-token?token=forged.token.value`), (err: any) => err.status === 401);
    const row = fraudRow(prng(6));
    for (const c of [await openWs(`${ws}/v1/infers/fraud-token?token=${ADMIN_TOKEN}`), await openWs(`${ws}/v1/infers/fraud-token`, { headers: { 'x-auth-token': ADMIN_TOKEN } })]) {
      const answer = nextMessages(c, 1);
      c.send(JSON.stringify({ id: 't', inputs: [{ name: 'tensor', shape: [1, 29], datatype: 'FP32', data: row }] }));
      assert.equal((await answer)[0].outputs[0].shape[0], 1);
      c.close();
    }
    // No token in the gateway's log.
    assert.doesNotMatch(gw.stderr(), new RegExp(ADMIN_TOKEN));
  });

  test('a caller deactivated while connected is refused at its next message, and the connection closes', async () => {
    const user = await api(gw, 'POST', '/v1/users', { username: 'ws-invoker', password: 'pass-word-123' });
    assert.equal(user.status, 201, user.text);
    const projects = await api(gw, 'GET', '/v1/projects');
    const project = projects.json.projects.find((p: { name: string }) => p.name === 'default').id;
    assert.equal((await api(gw, 'POST', `/v1/projects/${project}/members`, { user_id: user.json.id, role: 'invoker' })).status, 200);
    const token = (await api(gw, 'POST', '/v1/auth/tokens', { username: 'ws-invoker', password: 'pass-word-123' }, null)).json.access_token;
    const c = await openWs(`${ws}/v1/infers/fraud-token`, { headers: { authorization: `Bearer ${token}` } });
    const row = fraudRow(prng(12));
    const msg = (id: string) => JSON.stringify({ id, inputs: [{ name: 'tensor', shape: [1, 29], datatype: 'FP32', data: row }] });
    const first = nextMessages(c, 1);
    c.send(msg('before'));
    assert.equal((await first)[0].id, 'before');
    assert.equal((await api(gw, 'POST', `/v1/users/${user.json.id}/deactivate`)).status, 200);
    const refusal = nextMessages(c, 1);
    const done = closed(c);
    c.send(msg('after'));
    const [e] = await refusal;
    assert.equal(e.error_code, 'IG.401.Unauthorized');
    assert.match(e.error_msg, /deactivated/);
    assert.equal((await done).code, 1008);
  });

  test('messages are written to the inference log, named by their id; a stream\'s records leave its state out', async () => {
    const logs = async (service: string, n: number): Promise<any[]> => {
      const page = await fetch(`${gw.url}/v1/services/${service}/logs`, { method: 'POST', headers: { 'x-auth-token': ADMIN_TOKEN, 'content-type': 'application/json' }, body: JSON.stringify({ page_size: n }) });
      assert.equal(page.status, 200);
      return ((await page.json()) as any[]).reverse();
    };
    const row = fraudRow(prng(6));
    const c = await openWs(`${ws}/v1/infers/fraud-log`);
    const answers = nextMessages(c, 3);
    c.send(JSON.stringify({ id: 'log-text', data: { req_data: [{ tensor: row }] } }));
    c.send(plain.pack({ id: 42, inputs: [{ name: 'tensor', shape: [1, 29], datatype: 'FP32', data: Float32Array.from(row) }] }));
    // Refused before it reaches a model (as on HTTP, a body that does not decode is not logged).
    c.send(JSON.stringify({ id: 'log-bad', inputs: [{ name: 'tensor', shape: [1, 28], datatype: 'FP32', data: row.slice(1) }] }));
    const text = (await answers).find((m) => !Buffer.isBuffer(m) && m.id === 'log-text');
    c.close();
    const records = await logs('fraud-log', 2);
    assert.deepEqual(records.map((r) => r.metadata.request_id).sort(), ['42', 'log-text']);
    for (const rec of records) {
      assert.deepEqual(rec.in.tensor, [Array.from(Float32Array.from(row))]);
      assert.deepEqual(rec.out.dense_1, [[text.data.resp_data[0].dense_1]]);
      assert.equal(rec.metadata.status, 200);
    }
    const vad = await openWs(`${ws}/v1/infers/silero-stream`);
    const samples = audio(3, 1);
    const answer = nextMessages(vad, 1);
    vad.send(JSON.stringify(chunkMessage('log-vad', samples, 0)));
    const [probability] = await answer;
    vad.close();
    const [rec] = await logs('silero-stream', 1);
    assert.equal(rec.metadata.request_id, 'log-vad');
    assert.deepEqual(Object.keys(rec.in), ['input', 'sr']);
    assert.deepEqual(rec.in.input, [Array.from(samples)]);
    assert.deepEqual(rec.out, { output: [[probability.outputs[0].data[0]]] });
  });

  test('Silero VAD: audio streamed in 512-sample chunks gives the in-process probabilities, state carried', async () => {
    const session = await ort.InferenceSession.create(SILERO);
    const samples = audio(1, 40);
    const want = await sileroDirect(session, samples);
    const c = await openWs(`${ws}/v1/infers/silero-stream`);
    const got: number[] = [];
    for (let at = 0, k = 0; at < samples.length; at += CHUNK, k++) {
      const answer = nextMessages(c, 1);
      c.send(JSON.stringify(chunkMessage(`c${k}`, samples, at)));
      const [a] = await answer;
      assert.equal(a.id, `c${k}`);
      assert.deepEqual(a.outputs.map((o: { name: string }) => o.name), ['output'], 'the state stays in the gateway');
      got.push(a.outputs[0].data[0]);
    }
    assert.deepEqual(got, want);
    // The voiced middle scores above the quiet edges: the state carried is the model's, working.
    assert.ok(Math.max(...want.slice(12, 28)) > Math.max(...want.slice(0, 6)), `probabilities ${want.map((p) => p.toFixed(2))}`);
    c.close();
  });

  test('Silero VAD: two interleaved connections keep separate state; reset starts afresh', async () => {
    const session = await ort.InferenceSession.create(SILERO);
    const a = audio(2, 24);
    const b = audio(3, 24);
    const [wantA, wantB] = [await sileroDirect(session, a), await sileroDirect(session, b)];
    const ca = await openWs(`${ws}/v1/infers/silero-stream`);
    const cb = await openWs(`${ws}/v1/infers/silero-stream`);
    const gotA: number[] = [];
    const gotB: number[] = [];
    for (let at = 0, k = 0; at < a.length; at += CHUNK, k++) {
      // Both in flight at once, one as JSON text and one as msgpack with a typed array.
      const [ra, rb] = [nextMessages(ca, 1), nextMessages(cb, 1)];
      ca.send(JSON.stringify(chunkMessage(`a${k}`, a, at)));
      cb.send(plain.pack({ id: `b${k}`, inputs: [{ name: 'input', shape: [1, CHUNK], datatype: 'FP32', data: b.slice(at, at + CHUNK) }, { name: 'sr', shape: [], datatype: 'INT64', data: [16000] }] }));
      gotA.push((await ra)[0].outputs[0].data[0]);
      gotB.push(unpack((await rb)[0]).outputs[0].data[0]);
    }
    assert.deepEqual(gotA, wantA);
    assert.deepEqual(gotB, wantB);
    // After a reset the stream is new: the same audio again gives the same probabilities.
    const reset = nextMessages(ca, 1);
    ca.send(JSON.stringify({ id: 'r', reset: true }));
    assert.deepEqual((await reset)[0], { id: 'r', reset: true });
    assert.deepEqual(await streamed(ca, a, 'again'), wantA);
    ca.close();
    cb.close();
  });

  test('a stream continued with another number of rows is refused, naming the rows it holds, until a reset', async () => {
    const samples = audio(4, 2);
    const two = { id: 'two', inputs: [{ name: 'input', shape: [2, CHUNK], datatype: 'FP32', data: Array.from(samples) }, { name: 'sr', shape: [], datatype: 'INT64', data: [16000] }] };
    const c = await openWs(`${ws}/v1/infers/silero-stream`);
    const send = async (msg: unknown): Promise<any> => {
      const answer = nextMessages(c, 1);
      c.send(JSON.stringify(msg));
      return (await answer)[0];
    };
    assert.deepEqual((await send(two)).outputs[0].shape, [2, 1]);
    const refused = await send(chunkMessage('one', samples, 0));
    assert.equal(refused.id, 'one');
    assert.equal(refused.error_code, 'IG.400.WrongShape');
    assert.match(refused.error_msg, /this connection's stream state \('state'\) holds 2 rows from its earlier messages, and this message has 1; send 2 rows, or \{"reset": true\} first to start afresh/);
    assert.deepEqual(await send({ id: 'r', reset: true }), { id: 'r', reset: true });
    assert.deepEqual((await send(chunkMessage('one-again', samples, 0))).outputs[0].shape, [1, 1]);
    c.close();
  });

  test('the vad sample under models/ is served with WebSockets on, as npm start deploys it', async () => {
    const session = await ort.InferenceSession.create(SILERO);
    const samples = audio(5, 4);
    const want = await sileroDirect(session, samples);
    const c = await openWs(`${ws}/v1/infers/vad`);
    assert.deepEqual(await streamed(c, samples, 's'), want);
    c.close();
  });

  test('an HTTP POST to a streaming model still takes its state in the request', async () => {
    const samples = audio(4, 1);
    const res = await fetch(`${gw.url}/v2/models/silero-stream/infer`, {
      method: 'POST',
      body: JSON.stringify({ inputs: [...chunkMessage('p', samples, 0).inputs, { name: 'state', shape: [2, 1, 128], datatype: 'FP32', data: new Array(256).fill(0) }] }),
      headers: { 'content-type': 'application/json' },
    });
    assert.equal(res.status, 200, await res.clone().text());
    const body = (await res.json()) as { outputs: { name: string }[] };
    assert.deepEqual(body.outputs.map((o) => o.name), ['output', 'stateN']);
  });
});

describe('WebSocket backpressure', () => {
  let gw: RunningGateway;
  before(async () => {
    gw = await startGateway({
      config: {
        limits: { ws_buffer_bytes: 64 * 1024, ws_drain_timeout_ms: 1000 },
        services: [{ name: 'ccfraud', auth: 'none', websocket: true, versions: [{ model: 'ccfraud' }] }],
      },
    });
  });
  after(async () => {
    await gw.stop();
  });

  const rand = prng(9);
  // 20 rows a message: about 12 KB in, 16 KB of pandas-records out.
  const message = (): string => JSON.stringify(Array.from({ length: 20 }, () => ({ tensor: fraudRow(rand) })));
  const connections = () => metric(gw.url, 'infergate_websocket_connections');
  const held = () => metric(gw.url, 'infergate_websocket_held_bytes');

  test('a client that keeps sending and never reads is closed with 1013, its answers held within the limit', async () => {
    const before = await metric(gw.url, 'infergate_process_resident_memory_bytes');
    const client = await NeverReader.open(gw.port, '/v1/infers/ccfraud');
    await until('the connection to be counted', async () => (await connections()) === 1);
    let open = true;
    let maxHeld = 0;
    const gone = until('the gateway to close the connection', async () => {
      maxHeld = Math.max(maxHeld, await held());
      return (await connections()) === 0;
    }, 60_000).finally(() => (open = false));
    let sent = 0;
    while (open && sent < 5000) {
      if (!client.send(message())) await new Promise((r) => client.socket.once('drain', r).once('close', r).once('error', r));
      sent++;
    }
    await gone;
    const after = await metric(gw.url, 'infergate_process_resident_memory_bytes');
    assert.ok(sent > 10, `the client got to send ${sent} messages`);
    // What the gateway holds for the client: the buffer limit, plus the answers already running when it was reached.
    assert.ok(maxHeld <= 64 * 1024 + 64 * 20 * 1024, `held ${maxHeld} bytes`);
    assert.ok(after - before < 48 * 1024 * 1024, `RSS grew by ${((after - before) / 1048576).toFixed(1)} MiB over ${sent} messages`);
    assert.equal(await client.drainToEnd(), 1013);
  });

  test('a client that stops reading and sending is closed with 1013 once the drain timeout passes', async () => {
    const client = await NeverReader.open(gw.port, '/v1/infers/ccfraud');
    await until('the connection to be counted', async () => (await connections()) === 1);
    // Paced sends, each taken before the next, until the answers back up past the limit in the gateway.
    let sent = 0;
    while ((await held()) <= 64 * 1024) {
      assert.ok(sent < 2000, 'the answers never backed up');
      client.send(message());
      sent++;
      const answered = sent;
      await until(`message ${answered} to be taken`, async () => (await metric(gw.url, 'infergate_requests_total{service="ccfraud",version="0.0.1",code="200"}')) >= answered || (await held()) > 64 * 1024);
    }
    // Nothing more is sent: only the drain timeout (1 s here) can end it.
    const t0 = Date.now();
    await until('the gateway to close the connection', async () => (await connections()) === 0, 10_000);
    assert.ok(Date.now() - t0 >= 500, 'closed by the drain timeout, not at once');
    assert.equal(await client.drainToEnd(), 1013);
    assert.equal(await held(), 0);
    // The gateway serves others as before.
    const c = await openWs(`${gw.url.replace('http', 'ws')}/v1/infers/ccfraud`);
    const answer = nextMessages(c, 1);
    c.send(JSON.stringify({ id: 'after', inputs: [{ name: 'tensor', shape: [1, 29], datatype: 'FP32', data: fraudRow(rand) }] }));
    assert.equal((await answer)[0].id, 'after');
    c.close();
  });
});

describe('WebSocket and shutdown', () => {
  test('SIGTERM with a client still sending: new messages are refused, what ran is answered, the close is 1001, exit 0', async () => {
    const gw = await startGateway({ config: { services: [{ name: 'ccfraud', auth: 'none', websocket: true, versions: [{ model: 'ccfraud' }] }] } });
    const c = await openWs(`${gw.url.replace('http', 'ws')}/v1/infers/ccfraud`);
    const row = fraudRow(prng(13));
    const answers: any[] = [];
    c.on('message', (d: Buffer) => answers.push(JSON.parse(d.toString())));
    const done = closed(c);
    let n = 0;
    const sender = setInterval(() => {
      if (c.readyState === c.OPEN) c.send(JSON.stringify({ id: `s${n++}`, inputs: [{ name: 'tensor', shape: [1, 29], datatype: 'FP32', data: row }] }));
    }, 2);
    await until('a few answers', async () => answers.length >= 5);
    gw.proc.kill('SIGTERM');
    assert.equal(await gw.exited, 0);
    clearInterval(sender);
    assert.equal((await done).code, 1001);
    for (const a of answers) {
      if (a.error_code) assert.equal(a.error_code, 'IG.503.ShuttingDown');
      else assert.equal(a.outputs[0].shape[0], 1);
    }
  });
});

describe('WebSocket relay to image services', () => {
  let gw: RunningGateway;
  const wsModule = pathToFileURL(createRequire(import.meta.url).resolve('ws').replace(/index\.js$/, 'wrapper.mjs')).href;
  before(async () => {
    gw = await startGateway({ modelsDir: tempDir('no-models-') });
    const pkg = tempDir('knobs-ws-');
    copyFileSync(path.join(ROOT, 'test/fixtures/knobs-server/server.mjs'), path.join(pkg, 'server.mjs'));
    copyFileSync(path.join(ROOT, 'test/fixtures/knobs-server/config.json'), path.join(pkg, 'config.json'));
    assert.equal((await api(gw, 'POST', '/v1/models', { name: 'knobs-ws', source: { path: pkg } })).status, 201);
    const created = await api(gw, 'POST', '/v1/services', {
      name: 'knobs-ws', auth: 'none', websocket: true, versions: [{ model: 'knobs-ws', env: { WS_MODULE: wsModule } }],
      rules: [{ condition: "#HEADER_tier == 'gold'", version: '0.0.1', setting_name: 'x-model-setting', setting_value: 'fast' }],
    });
    assert.equal(created.status, 202, created.text);
    await waitForService(gw, 'knobs-ws', 'running');
    const plainPkg = tempDir('knobs-plain-');
    copyFileSync(path.join(ROOT, 'test/fixtures/knobs-server/server.mjs'), path.join(plainPkg, 'server.mjs'));
    copyFileSync(path.join(ROOT, 'test/fixtures/knobs-server/config.json'), path.join(plainPkg, 'config.json'));
    assert.equal((await api(gw, 'POST', '/v1/models', { name: 'knobs-nows', source: { path: plainPkg } })).status, 201);
    assert.equal((await api(gw, 'POST', '/v1/services', { name: 'knobs-nows', auth: 'none', websocket: true, versions: [{ model: 'knobs-nows' }] })).status, 202);
    await waitForService(gw, 'knobs-nows', 'running');
  });
  after(async () => {
    await gw.stop();
  });

  test('frames go both ways, text and binary, with the api path, request id, rule setting and subprotocol', async () => {
    const c = await openWs(`${gw.url.replace('http', 'ws')}/v1/infers/knobs-ws/stream/live?x=1`, { headers: { 'x-request-id': 'ws-req-1', tier: 'gold' }, protocols: ['v1.echo'] });
    const [hello] = await nextMessages(c, 1);
    assert.deepEqual(hello, { hello: '/stream/live?x=1', requestId: 'ws-req-1', setting: 'fast', protocol: 'v1.echo' });
    assert.equal(c.protocol, 'v1.echo');
    const echoes = nextMessages(c, 2);
    c.send(JSON.stringify({ n: 1 }));
    c.send(Buffer.from([1, 2, 3, 250]));
    const [text, bin] = await echoes;
    assert.deepEqual(text, { n: 1 });
    assert.deepEqual([...bin], [1, 2, 3, 250]);
    // The instance closing is passed on with its code.
    const done = closed(c);
    c.send('close please');
    assert.deepEqual(await done, { code: 4001, reason: 'asked to' });
  });

  test('a message larger than the buffer passes whole; the client\'s close code and reason reach the instance', async () => {
    const c = await openWs(`${gw.url.replace('http', 'ws')}/v1/infers/knobs-ws`);
    await nextMessages(c, 1);
    // 6 MB: over four times limits.ws_buffer_bytes (1 MiB), under the message limit.
    const big = { big: 'z'.repeat(6_000_000) };
    const echo = nextMessages(c, 1);
    c.send(JSON.stringify(big));
    assert.deepEqual((await echo)[0], big);
    c.close(4002, 'client-bye');
    await until('the instance to see the client\'s close', async () => {
      const logs = await fetch(`${gw.url}/v1/services/knobs-ws/instances/0/logs`, { headers: { 'x-auth-token': ADMIN_TOKEN } }).then((r) => r.text());
      return logs.includes('ws close 4002 client-bye');
    });
  });

  /** The knobs server with image.max_concurrency 1, as a WebSocket service of that name on `g`; its WebSocket URL. */
  async function deployOnePlace(g: RunningGateway, name: string): Promise<string> {
    const pkg = tempDir('knobs-cap-ws-');
    copyFileSync(path.join(ROOT, 'test/fixtures/knobs-server/server.mjs'), path.join(pkg, 'server.mjs'));
    const config = JSON.parse(readFileSync(path.join(ROOT, 'test/fixtures/knobs-server/config.json'), 'utf8'));
    writeFileSync(path.join(pkg, 'config.json'), JSON.stringify({ ...config, image: { ...config.image, max_concurrency: 1 } }));
    assert.equal((await api(g, 'POST', '/v1/models', { name, source: { path: pkg } })).status, 201);
    await api(g, 'POST', '/v1/services', { name, auth: 'none', websocket: true, versions: [{ model: name, env: { WS_MODULE: wsModule } }] });
    await waitForService(g, name, 'running');
    return `${g.url.replace('http', 'ws')}/v1/infers/${name}`;
  }

  test('with image.max_concurrency a relayed connection holds a place on its instance while it lasts', async () => {
    const g = await startGateway({ modelsDir: tempDir('no-models-'), config: { limits: { request_timeout_ms: 1500 } } });
    try {
      const url = await deployOnePlace(g, 'knobs-cap-ws');
      const first = await openWs(url);
      await nextMessages(first, 1);
      const noRoom = 'knobs-cap-ws@0.0.1: no instance had room within 1500 ms (limits.request_timeout_ms); each takes image.max_concurrency = 1 requests at a time';
      const http = await fetch(`${g.url}/v1/infers/knobs-cap-ws/pid`, { method: 'POST', body: '{}', headers: { 'content-type': 'application/json' } });
      assert.equal(http.status, 504);
      assert.equal(((await http.json()) as { error_msg: string }).error_msg, noRoom);
      await assert.rejects(openWs(url), (err: any) => err.status === 504 && err.body.error_msg === noRoom);
      // Closed, the connection gives its place back.
      const done = closed(first);
      first.close();
      await done;
      const again = await openWs(url);
      await nextMessages(again, 1);
      again.close();
      await until('the place to come back once more', async () => (await fetch(`${g.url}/v1/infers/knobs-cap-ws/pid`, { method: 'POST', body: '{}', headers: { 'content-type': 'application/json' } })).status === 200);
    } finally {
      await g.stop();
    }
  });

  test('stopping the gateway answers 503 to an upgrade still waiting for room and closes the open relay (1001)', async () => {
    const g = await startGateway({ modelsDir: tempDir('no-models-'), config: { limits: { request_timeout_ms: 60_000 } } });
    let stopping: Promise<number | null> | null = null;
    try {
      const url = await deployOnePlace(g, 'knobs-stop-ws');
      const first = await openWs(url);
      await nextMessages(first, 1);
      const firstClosed = closed(first);
      const second = openWs(url);
      second.catch(() => undefined);
      // The image version's queue depth counts what waits for room under max_concurrency.
      await until('the second upgrade to wait for room', async () => (await metric(g.url, 'infergate_queue_depth{service="knobs-stop-ws",version="0.0.1"}')) === 1);
      stopping = g.stop();
      await assert.rejects(second, (err: any) => err.status === 503 && err.body.error_code === 'IG.503.ShuttingDown' && err.body.error_msg === 'the gateway is shutting down; connect again shortly');
      assert.equal((await firstClosed).code, 1001);
      assert.equal(await stopping, 0);
    } finally {
      if (!stopping) await g.stop();
    }
  });

  test('an instance without a WebSocket endpoint refuses the upgrade with 502', async () => {
    await assert.rejects(openWs(`${gw.url.replace('http', 'ws')}/v1/infers/knobs-nows`), (err: any) => err.status === 502 && err.body.error_code === 'IG.502.UpstreamError' && /cannot open a WebSocket to instance 0/.test(err.body.error_msg));
  });
});


