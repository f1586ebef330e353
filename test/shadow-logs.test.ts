import assert from 'node:assert/strict';
import { ARROW_STREAM, fixedFloat32, ipc } from './helpers/arrow.js';
import { nextMessages, openWs } from './helpers/ws.js';
import { after, before, describe, test } from 'node:test';
import { api, post, postJson, startGateway, until, waitForService, type Answer, type RunningGateway } from './helpers/gateway.js';
import { cueRow, makeModelsDir, MISCHIEF_HOOK } from './helpers/fixtures.js';

const PANDAS = 'application/json; format=pandas-records';
const row = (first: number): { tensor: number[] }[] => [{ tensor: cueRow(first) }];

/** A hook that shows the matched rule's setting (SPEC §7.3) in its outputs: mode=zero zeroes them. */
const SETTING_HOOK = `
exports.postprocess = function (outputs, ctx) {
  if (ctx.settings.mode === 'zero') for (const k of Object.keys(outputs)) outputs[k].data.fill(0);
  return outputs;
};
`;

/** Shadow versions, A/B metadata, rule settings to hooks, and the inference log that shows them. */
describe('shadow traffic, A/B and the inference log', () => {
  let gw: RunningGateway;
  const logs = (service: string, body: unknown = {}, headers: Record<string, string> = {}): Promise<Answer> =>
    post(`${gw.url}/v1/services/${service}/logs`, JSON.stringify(body), 'application/json', { 'x-auth-token': 'test-admin-token-0123456789', ...headers });

  before(async () => {
    const dir = makeModelsDir({
      champion: { from: 'ccfraud' },
      challenger: { from: 'ccfraud', hook: MISCHIEF_HOOK },
      hooked: { from: 'ccfraud', hook: SETTING_HOOK },
    });
    gw = await startGateway({ modelsDir: dir, config: { logs: { max_record_bytes: 1200 } } });
    const shadowed = await api(gw, 'POST', '/v1/services', {
      name: 'shadowed', auth: 'none',
      versions: [{ model: 'champion', weight: 100 }, { model: 'challenger', weight: 0 }],
      shadow: [{ model: 'challenger', version: '0.0.1' }],
    });
    assert.equal(shadowed.status, 202, shadowed.text);
    await api(gw, 'POST', '/v1/services', { name: 'ab', auth: 'none', versions: [{ model: 'champion', weight: 50 }, { model: 'hooked', weight: 50 }] });
    await api(gw, 'POST', '/v1/services', {
      name: 'settings', auth: 'none', websocket: true, versions: [{ model: 'hooked', weight: 100 }],
      rules: [{ condition: "#HEADER_x-mode == 'zero'", version: '0.0.1', setting_name: 'mode', setting_value: 'zero' }],
    });
    await api(gw, 'POST', '/v1/services', { name: 'unlogged', auth: 'none', log_sample_rate: 0, versions: [{ model: 'champion' }] });
    for (const s of ['shadowed', 'ab', 'settings', 'unlogged']) await waitForService(gw, s, 'running');
  });
  after(async () => {
    await gw.stop();
  });

  test('a service reads back its shadow versions and log sample rate', async () => {
    const shadowed = (await api(gw, 'GET', '/v1/services/shadowed')).json;
    assert.deepEqual(shadowed.shadow, [{ model: 'challenger', version: '0.0.1' }]);
    assert.equal(shadowed.log_sample_rate, null, 'not set: the gateway\'s logs.sample_rate');
    assert.equal((await api(gw, 'GET', '/v1/services/unlogged')).json.log_sample_rate, 0);
  });

  const latest = async (service: string): Promise<any> => (await logs(service, { page_size: 1 })).json[0];

  test('the gateway\'s first Arrow body (its codec still loading) reaches the shadow too', async () => {
    const tensor = row(0.5)[0]!.tensor;
    const reply = await post(`${gw.url}/v1/infers/shadowed`, ipc({ tensor: fixedFloat32([tensor]) }, 'stream'), ARROW_STREAM, { 'x-request-id': 'shadow-arrow', accept: 'application/json' });
    assert.equal(reply.status, 200, reply.text);
    let rec: any;
    await until('the shadow answer in the log', async () => {
      rec = await latest('shadowed');
      return rec?.metadata.request_id === 'shadow-arrow' && rec['out_challenger@0.0.1'] !== null;
    });
    assert.equal(rec['out_challenger@0.0.1'].error, undefined, JSON.stringify(rec['out_challenger@0.0.1']));
    assert.deepEqual(rec['out_challenger@0.0.1'], rec.out);
  });

  test('the shadow gets a copy; its answer goes to the log, never to the reply', async () => {
    const reply = await postJson(`${gw.url}/v1/infers/shadowed`, row(0.25), PANDAS, { 'x-request-id': 'shadow-1' });
    assert.equal(reply.status, 200, reply.text);
    assert.equal(reply.headers.get('x-model-version'), 'champion@0.0.1');
    let rec: any;
    await until('the shadow answer in the log', async () => {
      rec = await latest('shadowed');
      return rec !== undefined && rec['out_challenger@0.0.1'] !== null;
    });
    assert.equal(rec.metadata.request_id, 'shadow-1');
    assert.deepEqual(rec['out_challenger@0.0.1'], rec.out, 'same model weights: the challenger agrees');
    assert.equal(rec.in.tensor.length, 1);
    assert.equal(rec.in.tensor[0].length, 29);
    assert.equal(JSON.parse(rec.metadata.last_model).model_name, 'champion');
  });

  test('a slow shadow does not hold the reply back', async () => {
    // 555 blocks the challenger's worker for a second: the reply comes, and its record shows the shadow still running.
    const reply = await postJson(`${gw.url}/v1/infers/shadowed`, row(555), PANDAS, { 'x-request-id': 'shadow-slow' });
    assert.equal(reply.status, 200);
    const rec = await latest('shadowed');
    assert.equal(rec.metadata.request_id, 'shadow-slow');
    assert.equal(rec['out_challenger@0.0.1'], null, 'the shadow had not answered when the reply went out');
    await until('the slow shadow to answer', async () => (await latest('shadowed'))['out_challenger@0.0.1'] !== null);
  });

  test('a failing shadow is logged as such; the reply is unharmed', async () => {
    const reply = await postJson(`${gw.url}/v1/infers/shadowed`, row(777), PANDAS, { 'x-request-id': 'shadow-fail' });
    assert.equal(reply.status, 200, reply.text);
    await until('the shadow error in the log', async () => (await latest('shadowed'))['out_challenger@0.0.1'] !== null);
    const rec = await latest('shadowed');
    assert.match(rec['out_challenger@0.0.1'].error, /hook refused the value 777/);
  });

  test('A/B replies and logs name the model that answered (_model_split)', async () => {
    const seen = new Set<string>();
    for (let i = 0; i < 40 && seen.size < 2; i++) {
      const a = await postJson(`${gw.url}/v1/infers/ab`, row(0.5), PANDAS);
      assert.equal(a.status, 200);
      const split = a.json[0].out._model_split;
      assert.equal(split.length, 1);
      assert.equal(`${split[0].name}@${split[0].version}`, a.headers.get('x-model-version'));
      assert.match(split[0].sha, /^[0-9a-f]{64}$/);
      seen.add(split[0].name);
      const rec = await latest('ab');
      assert.deepEqual(rec.out._model_split, split);
    }
    assert.deepEqual([...seen].sort(), ['champion', 'hooked']);
    // A single-version service's reply carries no split.
    assert.equal((await postJson(`${gw.url}/v1/infers/settings`, row(0.5), PANDAS)).json[0].out._model_split, undefined);
  });

  test('a matched rule\'s setting reaches the hooks in ctx.settings', async () => {
    const plain = await postJson(`${gw.url}/v1/infers/settings`, row(0.9), PANDAS);
    const zeroed = await postJson(`${gw.url}/v1/infers/settings`, row(0.9), PANDAS, { 'x-mode': 'zero' });
    assert.equal(zeroed.status, 200, zeroed.text);
    assert.ok((Object.values(plain.json[0].out) as number[][]).flat(2).some((x) => x !== 0), JSON.stringify(plain.json[0].out));
    for (const v of Object.values(zeroed.json[0].out) as number[][]) assert.ok(v.flat(2).every((x) => x === 0), JSON.stringify(zeroed.json[0].out));
    // Over a WebSocket the rule reads the upgrade's headers, and the setting reaches the hook the same way.
    const ws = gw.url.replace('http', 'ws');
    for (const [headers, zero] of [[{}, false], [{ 'x-mode': 'zero' }, true]] as const) {
      const c = await openWs(`${ws}/v1/infers/settings`, { headers });
      const answer = nextMessages(c, 1);
      c.send(JSON.stringify({ id: 'w', data: { req_data: row(0.9) } }));
      const [a] = await answer;
      assert.equal(a.data.resp_data[0].dense_1 === 0, zero, JSON.stringify(a));
      c.close();
    }
  });

  test('paging: page_size, order, cursor, time range and the iteration headers', async () => {
    for (let i = 0; i < 5; i++) assert.equal((await postJson(`${gw.url}/v1/infers/ab`, row(0.1), PANDAS, { 'x-request-id': `page-${i}` })).status, 200);
    const newest = await logs('ab', { page_size: 2 });
    assert.equal(newest.status, 200, newest.text);
    assert.equal(newest.headers.get('x-iteration-status'), 'RecordLimited');
    assert.deepEqual(newest.json.map((r: any) => r.metadata.request_id), ['page-4', 'page-3']);
    const next = await logs('ab', { page_size: 2, cursor: newest.headers.get('x-iteration-cursor') });
    assert.deepEqual(next.json.map((r: any) => r.metadata.request_id), ['page-2', 'page-1']);
    const oldestFirst = await logs('ab', { order: 'Asc', page_size: 100000 });
    assert.equal(oldestFirst.headers.get('x-iteration-status'), 'All');
    assert.equal(oldestFirst.headers.get('x-iteration-cursor'), null);
    const times = oldestFirst.json.map((r: any) => r.time);
    assert.deepEqual(times, [...times].sort((a: number, b: number) => a - b));
    const future = await logs('ab', { start_time: new Date(Date.now() + 60_000).toISOString() });
    assert.deepEqual(future.json, []);
    const window = await logs('ab', { start_time: new Date(times[0]).toISOString(), end_time: new Date(times[0] + 1).toISOString(), order: 'Asc' });
    assert.ok(window.json.length >= 1 && window.json.every((r: any) => r.time === times[0]));
  });

  test('an oversized record drops its largest input columns and says so', async () => {
    const big = [{ tensor: cueRow(0.2) }, { tensor: cueRow(0.3) }, { tensor: cueRow(0.4) }, { tensor: cueRow(0.5) }, { tensor: cueRow(0.6) }, { tensor: cueRow(0.7) }];
    assert.equal((await postJson(`${gw.url}/v1/infers/settings`, big, PANDAS)).status, 200);
    const rec = await latest('settings');
    assert.deepEqual(rec.metadata.dropped, ['in.tensor']);
    assert.deepEqual(rec.in, {});
    assert.equal(Object.values(rec.out)[0] && (Object.values(rec.out)[0] as unknown[]).length, 6);
  });

  test('log_sample_rate 0 keeps nothing', async () => {
    assert.equal((await postJson(`${gw.url}/v1/infers/unlogged`, row(0.1), PANDAS)).status, 200);
    const a = await logs('unlogged');
    assert.deepEqual(a.json, []);
    assert.equal(a.headers.get('x-iteration-status'), 'All');
  });

  test('bad log queries are refused with what was expected', async () => {
    const cases: [unknown, RegExp][] = [
      [{ start_time: 'yesterday' }, /'start_time' must be an RFC 3339 time such as "2026-11-22T10:00:00Z", got "yesterday"/],
      [{ end_time: 1700000000 }, /'end_time' must be an RFC 3339 time/],
      [{ start_time: '2026-02-30T00:00:00Z' }, /'start_time' must be an RFC 3339 time such as "2026-11-22T10:00:00Z", got "2026-02-30T00:00:00Z"/],
      [{ end_time: '2026-11-22T24:00:00Z' }, /'end_time' must be an RFC 3339 time/],
      [{ start_time: '2026-11-22T10:00:00Z', end_time: '2026-11-21T10:00:00Z' }, /'start_time' is after 'end_time'/],
      [{ order: 'asc' }, /'order' must be "Asc" or "Desc", got "asc"/],
      [{ page_size: 0 }, /'page_size' must be an integer from 1 to 100000, got 0/],
      [{ page_size: 2.5 }, /'page_size' must be an integer from 1 to 100000, got 2\.5/],
      [{ cursor: 'abc' }, /'cursor' must be the x-iteration-cursor header of the previous page, got "abc"/],
      [{ limit: 5 }, /unknown field 'limit'; expected start_time, end_time, order, page_size, cursor/],
      [[1], /expected a JSON object/],
    ];
    for (const [body, msg] of cases) {
      const a = await logs('ab', body);
      assert.equal(a.status, 400, `${JSON.stringify(body)}: ${a.text}`);
      assert.match(a.json.error_msg, msg, JSON.stringify(body));
    }
    const csv = await logs('ab', {}, { accept: 'text/csv' });
    assert.equal(csv.status, 406);
    assert.match(csv.json.error_msg, /the inference log is served as application\/json \(pandas records\) or as an Arrow table \(application\/vnd\.apache\.arrow\.file or \.stream\); Accept was 'text\/csv'/);
    const noService = await logs('nope');
    assert.equal(noService.status, 404);
  });

  test('shadow settings are checked like rules', async () => {
    const versions = [{ model: 'champion', weight: 100 }];
    const cases: [unknown, RegExp][] = [
      ['x', /'shadow' must be an array of \{"version", "model"\?\}/],
      [[{ version: '9.9.9' }], /shadow\[0\]: the service has no version '9\.9\.9'; name one of champion@0\.0\.1/],
      [[{ version: '0.0.1', weight: 3 }], /shadow\[0\]: unknown field 'weight'; expected version, model/],
      [[{ version: '0.0.1' }, { version: '0.0.1' }], /shadow\[1\]: champion@0\.0\.1 is listed twice/],
    ];
    for (const [shadow, msg] of cases) {
      const a = await api(gw, 'POST', '/v1/services', { name: 'bad-shadow', versions, shadow });
      assert.equal(a.status, 400, a.text);
      assert.match(a.json.error_msg, msg);
    }
    const rate = await api(gw, 'POST', '/v1/services', { name: 'bad-shadow', versions, log_sample_rate: 2 });
    assert.match(rate.json.error_msg, /'log_sample_rate' must be a number from 0 to 1/);
  });
});

describe('the inference log keeps the latest records within its bounds', () => {
  let gw: RunningGateway;
  before(async () => {
    gw = await startGateway({ modelsDir: makeModelsDir({ fraud: { from: 'ccfraud' } }), config: { logs: { records_per_service: 8, bytes_per_service: 4096 } } });
    await waitForService(gw, 'fraud', 'running');
  });
  after(async () => {
    await gw.stop();
  });

  test('records and bytes wrap around; the newest stay readable and whole', async () => {
    for (let i = 0; i < 30; i++) {
      const a = await postJson(`${gw.url}/v1/infers/fraud`, row(i / 30), PANDAS, { 'x-request-id': `wrap-${i}` });
      assert.equal(a.status, 200);
    }
    const page = await post(`${gw.url}/v1/services/fraud/logs`, JSON.stringify({ order: 'Asc' }), 'application/json', { 'x-auth-token': 'test-admin-token-0123456789' });
    assert.equal(page.status, 200, page.text);
    const ids = page.json.map((r: any) => r.metadata.request_id);
    // ~700 bytes a record in 4 KiB: the bytes run out before the 8 record slots do.
    assert.ok(ids.length >= 3 && ids.length <= 8, ids.join(','));
    assert.deepEqual(ids, Array.from({ length: ids.length }, (_, k) => `wrap-${30 - ids.length + k}`));
    for (const r of page.json) {
      const i = Number(r.metadata.request_id.slice(5));
      assert.equal(r.in.tensor[0][0], i / 30);
      assert.equal(r.in.tensor[0].length, 29);
      assert.equal(r.metadata.status, 200);
    }
  });
});

describe('the inference log thins out above logs.max_records_per_second', () => {
  let gw: RunningGateway;
  before(async () => {
    gw = await startGateway({ modelsDir: makeModelsDir({ fraud: { from: 'ccfraud' } }), config: { logs: { max_records_per_second: 5 } } });
    await waitForService(gw, 'fraud', 'running');
  });
  after(async () => {
    await gw.stop();
  });

  test('at most the cap each second is kept; every request is still answered', async () => {
    const started = Date.now();
    const answers = await Promise.all(Array.from({ length: 40 }, (_, i) => postJson(`${gw.url}/v1/infers/fraud`, row(i / 40), PANDAS)));
    const seconds = Math.floor(Date.now() / 1000) - Math.floor(started / 1000) + 1;
    assert.ok(answers.every((a) => a.status === 200));
    const page = await post(`${gw.url}/v1/services/fraud/logs`, '{}', 'application/json', { 'x-auth-token': 'test-admin-token-0123456789' });
    assert.ok(page.json.length >= 5 && page.json.length <= 5 * seconds, `${page.json.length} records over ${seconds} s`);
  });
});

describe('logs: in gateway.yaml is checked at start', () => {
  const cases: [Record<string, unknown>, RegExp][] = [
    [{ sample_rate: 2 }, /logs\.sample_rate must be a number from 0 to 1, got 2/],
    [{ sample_rate: 'all' }, /logs\.sample_rate must be a number from 0 to 1, got "all"/],
    [{ records: 5 }, /unknown key logs\.records; expected sample_rate, max_records_per_second, records_per_service, bytes_per_service, max_record_bytes/],
    [{ bytes_per_service: 0 }, /logs\.bytes_per_service must be a positive integer, got 0/],
    [{ max_records_per_second: -1 }, /logs\.max_records_per_second must be a positive integer, got -1/],
  ];
  for (const [logs, msg] of cases) {
    test(`refused: ${JSON.stringify(logs)}`, async () => {
      await assert.rejects(startGateway({ modelsDir: makeModelsDir({}), config: { logs } }), msg);
    });
  }
});
