import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { SAMPLE_MODELS, api, postJson, startGateway, waitForService, type Answer, type RunningGateway } from './helpers/gateway.js';

const PANDAS = 'application/json; format=pandas-records';
const ROW = [{ tensor: new Array(29).fill(0.1) }];

describe('traffic_limit', () => {
  let gw: RunningGateway;
  before(async () => {
    gw = await startGateway({ modelsDir: path.join(SAMPLE_MODELS, 'nothing-here') });
    assert.equal((await api(gw, 'POST', '/v1/models', { name: 'fraud', source: { path: path.join(SAMPLE_MODELS, 'ccfraud') } })).status, 201);
    await api(gw, 'POST', '/v1/services', { name: 'limited', auth: 'none', traffic_limit: 200, versions: [{ model: 'fraud' }] });
    await waitForService(gw, 'limited', 'running');
  });
  after(async () => {
    await gw.stop();
  });

  test('at twice the limit for 5 s, the admitted rate is within 5 % of the limit; the rest get 429 with Retry-After', async (t) => {
    const limit = 200;
    const answers: Promise<Answer>[] = [];
    const start = performance.now();
    // An open-loop client at 400 requests/s: 4 requests every 10 ms for 5 s.
    await new Promise<void>((resolve) => {
      const timer = setInterval(() => {
        const elapsed = performance.now() - start;
        const due = Math.min(2000, Math.floor((elapsed / 1000) * 2 * limit));
        while (answers.length < due) answers.push(postJson(`${gw.url}/v1/infers/limited`, ROW, PANDAS));
        if (answers.length >= 2000) {
          clearInterval(timer);
          resolve();
        }
      }, 10);
    });
    const seconds = (performance.now() - start) / 1000;
    const done = await Promise.all(answers);
    const admitted = done.filter((a) => a.status === 200).length;
    const refused = done.filter((a) => a.status === 429);
    assert.equal(admitted + refused.length, done.length, `only 200 and 429: ${[...new Set(done.map((a) => a.status))]}`);
    const expected = limit * seconds;
    t.diagnostic(`${admitted} admitted in ${seconds.toFixed(2)} s (expected ${expected.toFixed(0)})`);
    assert.ok(Math.abs(admitted - expected) <= 0.05 * expected, `${admitted} admitted in ${seconds.toFixed(2)} s, expected ${expected.toFixed(0)} ± 5 %`);
    const r = refused[0]!;
    assert.equal(r.json.error_code, 'IG.429.TrafficLimit');
    assert.match(r.json.error_msg, /service 'limited' is over its traffic limit of 200 requests\/s; retry after 1 s/);
    assert.equal(r.headers.get('retry-after'), '1');
  });

  test('the limit can be changed or removed by PATCH', async () => {
    const bad = await api(gw, 'PATCH', '/v1/services/limited', { traffic_limit: -3 });
    assert.equal(bad.status, 400);
    assert.match(bad.json.error_msg, /'traffic_limit' must be a positive number of requests per second, or null for none/);
    assert.equal((await api(gw, 'PATCH', '/v1/services/limited', { traffic_limit: null })).status, 202);
    const svc = await waitForService(gw, 'limited', 'running');
    assert.equal(svc.traffic_limit, null);
    const burst = await Promise.all(Array.from({ length: 300 }, () => postJson(`${gw.url}/v1/infers/limited`, ROW, PANDAS)));
    assert.ok(burst.every((a) => a.status === 200));
  });
});

describe('per-user and per-domain quotas', () => {
  test('past the quota a caller gets 429 with Retry-After; other callers are not affected', async () => {
    const gw = await startGateway({ modelsDir: path.join(SAMPLE_MODELS, 'nothing-here'), config: { limits: { per_user_per_minute: 5, per_domain_per_minute: 8 } } });
    try {
      assert.equal((await api(gw, 'POST', '/v1/models', { name: 'fraud', source: { path: path.join(SAMPLE_MODELS, 'ccfraud') } })).status, 201);
      await api(gw, 'POST', '/v1/services', { name: 'q', versions: [{ model: 'fraud' }] });
      await waitForService(gw, 'q', 'running');
      const project = (await api(gw, 'GET', '/v1/projects')).json.projects[0].id;
      const tokens: Record<string, string> = {};
      for (const [name, domain] of [['ann', 'acme'], ['ben', 'acme'], ['cat', 'other']]) {
        const u = await api(gw, 'POST', '/v1/users', { username: name, password: 'quota-password', domain });
        await api(gw, 'POST', `/v1/projects/${project}/members`, { user_id: u.json.id, role: 'invoker' });
        tokens[name!] = (await api(gw, 'POST', '/v1/auth/tokens', { username: name, password: 'quota-password' }, null)).json.access_token;
      }
      const call = (who: string) => postJson(`${gw.url}/v1/infers/q`, ROW, PANDAS, { 'x-auth-token': tokens[who]! });
      // Quotas count per calendar minute: start well clear of the next boundary.
      const toBoundary = 60_000 - (Date.now() % 60_000);
      if (toBoundary < 10_000) await new Promise((r) => setTimeout(r, toBoundary + 100));
      const ann: Answer[] = [];
      for (let i = 0; i < 7; i++) ann.push(await call('ann'));
      assert.deepEqual(ann.map((a) => a.status), [200, 200, 200, 200, 200, 429, 429]);
      assert.equal(ann[5]!.json.error_code, 'IG.429.Quota');
      assert.match(ann[5]!.json.error_msg, /user 'ann' is over its quota of 5 requests per minute; retry after \d+ s/);
      assert.ok(Number(ann[5]!.headers.get('retry-after')) >= 1 && Number(ann[5]!.headers.get('retry-after')) <= 60);
      // ann used 7 of acme's 8 (refused calls count against the domain too); ben has one left.
      assert.equal((await call('ben')).status, 200);
      const benOver = await call('ben');
      assert.equal(benOver.status, 429);
      assert.match(benOver.json.error_msg, /domain 'acme' is over its quota of 8 requests per minute/);
      assert.equal((await call('cat')).status, 200, 'another domain is not affected');
    } finally {
      await gw.stop();
    }
  });
});
