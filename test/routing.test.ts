import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { SAMPLE_MODELS, api, postJson, startGateway, waitForService, type RunningGateway } from './helpers/gateway.js';

const PANDAS = 'application/json; format=pandas-records';
const ROW = [{ tensor: new Array(29).fill(0.3) }];

describe('routing rules end to end', () => {
  let gw: RunningGateway;
  const tokens: Record<string, string> = {};
  before(async () => {
    gw = await startGateway({ modelsDir: path.join(SAMPLE_MODELS, 'nothing-here') });
    for (const version of ['1.0.0', '2.0.0']) {
      assert.equal((await api(gw, 'POST', '/v1/models', { name: 'fraud', version, source: { path: path.join(SAMPLE_MODELS, 'ccfraud') } })).status, 201);
    }
    const project = (await api(gw, 'GET', '/v1/projects')).json.projects[0].id;
    for (const name of ['alice', 'bob']) {
      const u = await api(gw, 'POST', '/v1/users', { username: name, password: `${name}-secret-pw`, domain: name === 'alice' ? 'ops-team' : 'sales' });
      await api(gw, 'POST', `/v1/projects/${project}/members`, { user_id: u.json.id, role: 'invoker' });
      tokens[name] = (await api(gw, 'POST', '/v1/auth/tokens', { username: name, password: `${name}-secret-pw` }, null)).json.access_token;
    }
    const rules = [
      { condition: "#HEADER_version == '2.0.0'", version: '2.0.0', setting_name: 'x-route', setting_value: 'by-header' },
      { condition: "#USER_NAME == 'alice'", version: '2.0.0' },
      { condition: '#HEADER_uid.hashCode() % 100 < 10', version: '2.0.0' },
    ];
    const created = await api(gw, 'POST', '/v1/services', { name: 'routed', auth: 'none', rules, versions: [{ model: 'fraud', version: '1.0.0', weight: 100 }, { model: 'fraud', version: '2.0.0', weight: 0 }] });
    assert.equal(created.status, 202, created.text);
    assert.equal(created.json.rules.length, 3);
    await api(gw, 'POST', '/v1/services', { name: 'routed-auth', rules: [{ condition: "#USER_NAME == 'alice' && #DOMAIN_NAME matches 'ops.*'", version: '2.0.0' }], versions: [{ model: 'fraud', version: '1.0.0', weight: 100 }, { model: 'fraud', version: '2.0.0', weight: 0 }] });
    await waitForService(gw, 'routed', 'running');
    await waitForService(gw, 'routed-auth', 'running');
  });
  after(async () => {
    await gw.stop();
  });

  const served = async (service: string, headers: Record<string, string> = {}): Promise<string> => {
    const a = await postJson(`${gw.url}/v1/infers/${service}`, ROW, PANDAS, headers);
    assert.equal(a.status, 200, a.text);
    return a.headers.get('x-model-version')!;
  };

  test('no rule holds: the weights decide', async () => {
    for (let i = 0; i < 20; i++) assert.equal(await served('routed'), 'fraud@1.0.0');
  });
  test('by header', async () => {
    assert.equal(await served('routed', { version: '2.0.0' }), 'fraud@2.0.0');
    assert.equal(await served('routed', { version: '1.9.9' }), 'fraud@1.0.0');
  });
  test('by hash of a header, with Java semantics for negative hash codes', async () => {
    assert.equal(await served('routed', { uid: 'user-3' }), 'fraud@2.0.0', '-836031823 % 100 = -23 < 10');
    assert.equal(await served('routed', { uid: 'polygenelubricants' }), 'fraud@2.0.0', 'MIN_VALUE % 100 = -48');
    assert.equal(await served('routed', { uid: 'a' }), 'fraud@1.0.0', '97 % 100 = 97');
  });
  test('by user and domain from the token', async () => {
    assert.equal(await served('routed-auth', { 'x-auth-token': tokens['alice']! }), 'fraud@2.0.0');
    assert.equal(await served('routed-auth', { 'x-auth-token': tokens['bob']! }), 'fraud@1.0.0');
  });
  test('invalid rules are refused at create and update with the position of the error', async () => {
    const versions = [{ model: 'fraud', version: '1.0.0' }];
    const bad = await api(gw, 'POST', '/v1/services', { name: 'x', versions, rules: [{ condition: "#DOMAIN_NAME = 'a'", version: '1.0.0' }] });
    assert.equal(bad.status, 400);
    assert.equal(bad.json.error_code, 'IG.400.BadRule');
    assert.equal(bad.json.error_msg, "rules[0].condition: unexpected character '=' at position 14");
    const unknownVersion = await api(gw, 'POST', '/v1/services', { name: 'x', versions, rules: [{ condition: "#USER_NAME == 'a'", version: '3.0.0' }] });
    assert.match(unknownVersion.json.error_msg, /rules\[0\]: the service has no version '3\.0\.0'/);
    const tooMany = await api(gw, 'POST', '/v1/services', { name: 'x', versions, rules: Array.from({ length: 11 }, () => ({ condition: "#USER_NAME == 'a'", version: '1.0.0' })) });
    assert.match(tooMany.json.error_msg, /'rules' has 11 rules; at most 10 are allowed/);
    // Conditions so deep or long that running them would overflow the stack are refused at once.
    const deepOnes: [string, RegExp][] = [
      ['!'.repeat(11000) + "#HEADER_a == 'b'", /^rules\[0\]\.condition: the condition is 11016 characters long; at most 2048 are allowed/],
      ['('.repeat(2000) + "#HEADER_a == 'b'" + ')'.repeat(2000), /^rules\[0\]\.condition: the condition is 4016 characters long; at most 2048 are allowed/],
      ['('.repeat(40) + "#HEADER_a == 'b'" + ')'.repeat(40), /^rules\[0\]\.condition: '\(' nests more than 32 deep; write the condition flatter at position 33$/],
    ];
    for (const [condition, msg] of deepOnes) {
      const deep = await api(gw, 'POST', '/v1/services', { name: 'x', versions, rules: [{ condition, version: '1.0.0' }] });
      assert.equal(deep.status, 400, deep.text);
      assert.equal(deep.json.error_code, 'IG.400.BadRule');
      assert.match(deep.json.error_msg, msg);
    }
    // New versions that leave a stored rule without its version: the refusal says the rule is the stored one.
    const stale = await api(gw, 'PATCH', '/v1/services/routed', { versions: [{ model: 'fraud', version: '1.0.0', weight: 100 }] });
    assert.equal(stale.status, 400, stale.text);
    assert.match(stale.json.error_msg, /^rules\[0\]: the service has no version '2\.0\.0' of model 'fraud'; name one of fraud@1\.0\.0 \(in the service's stored 'rules', which this update keeps; send 'rules' with the new versions, or \[\] to drop them\)$/);
    const patched = await api(gw, 'PATCH', '/v1/services/routed', { rules: [{ condition: '#HEADER_uid.hashCode() %', version: '2.0.0' }] });
    assert.equal(patched.status, 400);
    assert.match(patched.json.error_msg, /rules\[0\]\.condition: unexpected end of condition; expected a variable, a quoted string, an integer or \( at position 25/);
  });
});
