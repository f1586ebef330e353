import assert from 'node:assert/strict';
import { createHmac, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { SignJWT, importJWK, type JWK } from 'jose';
import { ADMIN_TOKEN, SAMPLE_MODELS, api, postJson, request, startGateway, waitForService, type Answer, type RunningGateway } from './helpers/gateway.js';

const PANDAS = 'application/json; format=pandas-records';
const ROW = [{ tensor: new Array(29).fill(0.25) }];
const b64 = (o: unknown): string => Buffer.from(JSON.stringify(o)).toString('base64url');

function unauthorized(a: Answer, msg: RegExp): void {
  assert.equal(a.status, 401, a.text);
  assert.equal(a.json.error_code, 'IG.401.Unauthorized');
  assert.match(a.json.error_msg, msg);
}

function forbidden(a: Answer, msg: RegExp): void {
  assert.equal(a.status, 403, a.text);
  assert.equal(a.json.error_code, 'IG.403.Forbidden');
  assert.match(a.json.error_msg, msg);
}

describe('authentication and access', () => {
  let gw: RunningGateway;
  const users: Record<string, { id: string; token: string; refresh: string }> = {};
  const seenTokens: string[] = [];
  let jwk: JWK;

  const login = async (username: string, password: string): Promise<Answer> => api(gw, 'POST', '/v1/auth/tokens', { username, password }, null);
  const infer = (token?: string, header: 'x-auth-token' | 'authorization' = 'x-auth-token') =>
    postJson(`${gw.url}/v1/infers/secure`, ROW, PANDAS, token === undefined ? {} : { [header]: header === 'authorization' ? `Bearer ${token}` : token });
  /** A token signed with the gateway's own key, with claims of the test's choosing. */
  const forge = async (claims: Record<string, unknown>, set: (j: SignJWT) => SignJWT = (j) => j): Promise<string> => {
    const key = await importJWK(jwk, 'EdDSA');
    const t = await set(new SignJWT({ typ: 'access', ...claims }).setProtectedHeader({ alg: 'EdDSA' }).setIssuer('infergate').setIssuedAt().setExpirationTime('1h')).sign(key);
    seenTokens.push(t);
    return t;
  };

  before(async () => {
    gw = await startGateway({ modelsDir: path.join(SAMPLE_MODELS, 'nothing-here') });
    jwk = JSON.parse(readFileSync(path.join(gw.dataDir, 'signing-key.jwk.json'), 'utf8')) as JWK;
    const other = await api(gw, 'POST', '/v1/projects', { name: 'other' });
    assert.equal(other.status, 201, other.text);
    const defaultProject = (await api(gw, 'GET', '/v1/projects')).json.projects.find((p: { name: string }) => p.name === 'default').id;
    for (const [name, project, role] of [['dev', defaultProject, 'developer'], ['reader', defaultProject, 'viewer'], ['caller', defaultProject, 'invoker'], ['outsider', other.json.id, 'admin'], ['leaver', defaultProject, 'invoker']] as const) {
      const u = await api(gw, 'POST', '/v1/users', { username: name, password: `${name}-password` });
      assert.equal(u.status, 201, u.text);
      assert.equal((await api(gw, 'POST', `/v1/projects/${project}/members`, { user_id: u.json.id, role })).status, 200);
      const t = await login(name, `${name}-password`);
      assert.equal(t.status, 200, t.text);
      assert.equal(t.json.token_type, 'Bearer');
      users[name] = { id: u.json.id, token: t.json.access_token, refresh: t.json.refresh_token };
      seenTokens.push(t.json.access_token, t.json.refresh_token);
    }
    assert.equal((await api(gw, 'POST', '/v1/models', { name: 'fraud', source: { path: path.join(SAMPLE_MODELS, 'ccfraud') } }, users['dev']!.token)).status, 201);
    const created = await api(gw, 'POST', '/v1/services', { name: 'secure', versions: [{ model: 'fraud' }] }, users['dev']!.token);
    assert.equal(created.status, 202, created.text);
    assert.equal(created.json.auth, 'token', 'services default to auth: token');
    await waitForService(gw, 'secure', 'running');
  });
  after(async () => {
    await gw.stop();
  });

  describe('accepted', () => {
    test('an invoker token as X-Auth-Token and as Authorization: Bearer', async () => {
      assert.equal((await infer(users['caller']!.token)).status, 200);
      assert.equal((await infer(users['caller']!.token, 'authorization')).status, 200);
    });
    test('an API key exchanges for a token', async () => {
      const key = await api(gw, 'POST', `/v1/users/${users['caller']!.id}/api-keys`);
      assert.equal(key.status, 201);
      assert.match(key.json.api_key, /^igk_/);
      const t = await api(gw, 'POST', '/v1/auth/tokens', { api_key: key.json.api_key }, null);
      assert.equal(t.status, 200, t.text);
      seenTokens.push(t.json.access_token, key.json.api_key);
      assert.equal((await infer(t.json.access_token)).status, 200);
    });
    test('a refresh token gives a new access token, once', async () => {
      const t = await api(gw, 'POST', '/v1/auth/tokens', { refresh_token: users['reader']!.refresh }, null);
      assert.equal(t.status, 200, t.text);
      seenTokens.push(t.json.access_token, t.json.refresh_token);
      assert.equal((await api(gw, 'GET', '/v1/services', undefined, t.json.access_token)).status, 200);
      unauthorized(await api(gw, 'POST', '/v1/auth/tokens', { refresh_token: users['reader']!.refresh }, null), /revoked or already used/);
    });
  });

  describe('refused tokens on an inference call (401)', () => {
    test('no token', async () => unauthorized(await infer(), /no token: send X-Auth-Token: <token> or Authorization: Bearer <token>/));
    test('not a JWT', async () => unauthorized(await infer('not-a-token'), /malformed/));
    test('an Authorization header that is not Bearer', async () => {
      unauthorized(await postJson(`${gw.url}/v1/infers/secure`, ROW, PANDAS, { authorization: `Basic ${Buffer.from('a:b').toString('base64')}` }), /must be 'Bearer <token>'/);
    });
    test('a tampered signature', async () => {
      const t = users['caller']!.token;
      const bad = t.slice(0, -4) + (t.endsWith('AAAA') ? 'BBBB' : 'AAAA');
      unauthorized(await infer(bad), /signature does not verify/);
    });
    test('a tampered payload (role escalation attempt)', async () => {
      const [h, , s] = users['caller']!.token.split('.');
      unauthorized(await infer(`${h}.${b64({ sub: users['dev']!.id, typ: 'access', iss: 'infergate', exp: 9999999999 })}.${s}`), /signature does not verify/);
    });
    test("alg 'none'", async () => {
      unauthorized(await infer(`${b64({ alg: 'none', typ: 'JWT' })}.${b64({ sub: users['caller']!.id, typ: 'access', iss: 'infergate', exp: 9999999999 })}.`), /algorithm the gateway does not accept|malformed/);
    });
    test('HS256 signed with the public key as the secret (algorithm confusion)', async () => {
      const head = b64({ alg: 'HS256', typ: 'JWT' });
      const body = b64({ sub: users['caller']!.id, typ: 'access', iss: 'infergate', exp: 9999999999 });
      const sig = createHmac('sha256', Buffer.from(jwk.x!, 'base64url')).update(`${head}.${body}`).digest('base64url');
      unauthorized(await infer(`${head}.${body}.${sig}`), /algorithm the gateway does not accept/);
    });
    test('expired', async () => unauthorized(await infer(await forge({ sub: users['caller']!.id }, (j) => j.setIssuedAt(1000).setExpirationTime(2000))), /has expired/));
    test('not yet valid', async () => unauthorized(await infer(await forge({ sub: users['caller']!.id }, (j) => j.setNotBefore('1h'))), /not valid yet/));
    test('another issuer', async () => unauthorized(await infer(await forge({ sub: users['caller']!.id }, (j) => j.setIssuer('someone-else'))), /the token's issuer 'someone-else' is not trusted here/));
    test('a user that does not exist', async () => unauthorized(await infer(await forge({ sub: randomUUID() })), /names a user that does not exist/));
    test('a refresh token used as an access token', async () => unauthorized(await infer(users['caller']!.refresh), /not an access token/));
    test('the last active platform admin cannot be deactivated, demoted or removed (409 LastAdmin)', async () => {
      const admin = ((await api(gw, 'GET', '/v1/users')).json.users as { id: string; username: string }[]).find((u) => u.username === 'admin')!;
      const defaultId = ((await api(gw, 'GET', '/v1/projects')).json.projects as { id: string; name: string }[]).find((p) => p.name === 'default')!.id;
      const tries = [
        await api(gw, 'POST', `/v1/users/${admin.id}/deactivate`),
        await api(gw, 'POST', `/v1/projects/${defaultId}/members`, { user_id: admin.id, role: 'viewer' }),
        await api(gw, 'DELETE', `/v1/projects/${defaultId}/members/${admin.id}`),
      ];
      for (const a of tries) {
        assert.equal(a.status, 409, a.text);
        assert.equal(a.json.error_code, 'IG.409.LastAdmin');
        assert.match(a.json.error_msg, /user 'admin' is the last active platform admin \(admin of 'default'\) and cannot be (deactivated|made viewer|removed from the project); make another user admin of 'default' first/);
      }
      assert.equal((await api(gw, 'GET', '/v1/users')).status, 200, 'the admin still works');
    });

    test('a deactivated user, at once; active again after activation', async () => {
      assert.equal((await infer(users['leaver']!.token)).status, 200, 'cached before deactivation');
      assert.equal((await api(gw, 'POST', `/v1/users/${users['leaver']!.id}/deactivate`)).status, 200);
      unauthorized(await infer(users['leaver']!.token), /user 'leaver' is deactivated/);
      unauthorized(await login('leaver', 'leaver-password'), /user 'leaver' is deactivated/);
      assert.equal((await api(gw, 'POST', `/v1/users/${users['leaver']!.id}/activate`)).status, 200);
      assert.equal((await infer(users['leaver']!.token)).status, 200);
    });
  });

  describe('refused credentials (401)', () => {
    test('a wrong password', async () => unauthorized(await login('dev', 'wrong-password'), /wrong username or password/));
    test('an unknown user', async () => unauthorized(await login('nobody', 'whatever-password'), /wrong username or password/));
    test('a username without a password, or a password that is not a string, is a 400 saying so', async () => {
      const noPassword = await api(gw, 'POST', '/v1/auth/tokens', { username: 'dev' }, null);
      assert.equal(noPassword.status, 400, noPassword.text);
      assert.equal(noPassword.json.error_msg, `'password' is missing: send "password" with "username"`);
      const numeric = await api(gw, 'POST', '/v1/auth/tokens', { username: 'dev', password: 12345 }, null);
      assert.equal(numeric.status, 400, numeric.text);
      assert.equal(numeric.json.error_msg, `'password' must be a string: send "password" with "username"`);
      const noUser = await api(gw, 'POST', '/v1/auth/tokens', { password: 'whatever-password' }, null);
      assert.equal(noUser.status, 400, noUser.text);
      assert.equal(noUser.json.error_msg, `'username' is missing: send "username" with "password"`);
      const numericUser = await api(gw, 'POST', '/v1/auth/tokens', { username: 5, password: 'whatever-password' }, null);
      assert.equal(numericUser.status, 400, numericUser.text);
      assert.equal(numericUser.json.error_msg, `'username' must be a string: send "username" with "password"`);
    });
    test('a revoked API key', async () => {
      const key = await api(gw, 'POST', `/v1/users/${users['caller']!.id}/api-keys`);
      seenTokens.push(key.json.api_key);
      assert.equal((await api(gw, 'DELETE', `/v1/users/${users['caller']!.id}/api-keys/${key.json.id}`)).status, 204);
      unauthorized(await api(gw, 'POST', '/v1/auth/tokens', { api_key: key.json.api_key }, null), /unknown or revoked API key/);
    });
    test('an unknown API key', async () => unauthorized(await api(gw, 'POST', '/v1/auth/tokens', { api_key: 'igk_nope' }, null), /unknown or revoked API key/));
    test('no credentials at all', async () => {
      const a = await api(gw, 'POST', '/v1/auth/tokens', {}, null);
      assert.equal(a.status, 400);
      assert.match(a.json.error_msg, /send \{"username", "password"\}, \{"api_key"\} or \{"refresh_token"\}/);
    });
  });

  describe('valid tokens without the right (403)', () => {
    test('a viewer may not infer', async () => forbidden(await infer(users['reader']!.token), /user 'reader' is viewer in project 'default', which does not allow inference on service 'secure'/));
    test('another project may not infer', async () => forbidden(await infer(users['outsider']!.token), /user 'outsider' has no role in project 'default', so may not inference on service 'secure'/));
    const cases: [string, string, string, unknown, RegExp][] = [
      ['reader', 'POST', '/v1/services', { name: 'x', versions: [{ model: 'fraud' }] }, /viewer in project 'default', which does not allow POST \/v1\/services \(changing it\)/],
      ['reader', 'PATCH', '/v1/services/secure', { versions: [{ model: 'fraud' }] }, /does not allow PATCH \/v1\/services\/\{id\}/],
      ['reader', 'POST', '/v1/services/secure/stop', undefined, /does not allow POST \/v1\/services\/\{id\}\/stop/],
      ['reader', 'DELETE', '/v1/services/secure', undefined, /does not allow DELETE \/v1\/services\/\{id\}/],
      ['reader', 'DELETE', '/v1/models/fraud', undefined, /does not allow DELETE \/v1\/models\/\{name\}/],
      ['reader', 'POST', '/v1/models', { name: 'x', source: { path: '/tmp' } }, /does not allow POST \/v1\/models/],
      ['caller', 'GET', '/v1/services', undefined, /invoker in project 'default', which does not allow GET \/v1\/services \(reading it\)/],
      ['caller', 'GET', '/v1/models/fraud', undefined, /invoker .* does not allow GET \/v1\/models\/\{name\}/],
      ['dev', 'POST', '/v1/users', { username: 'x', password: 'long-enough' }, /developer in project 'default', which does not allow POST \/v1\/users \(administering users and projects\)/],
      ['dev', 'POST', '/v1/projects', { name: 'x' }, /does not allow POST \/v1\/projects/],
      ['dev', 'POST', `/v1/users/{caller}/deactivate`, undefined, /does not allow POST \/v1\/users\/\{id\}\/deactivate/],
    ];
    for (const [who, method, p, body, msg] of cases) {
      test(`${who}: ${method} ${p}`, async () => forbidden(await api(gw, method, p.replace('{caller}', users['caller']!.id), body, users[who]!.token), msg));
    }
    test('another project\'s admin sees none of this project: lists leave it out, names are answered as absent', async () => {
      const token = users['outsider']!.token;
      assert.deepEqual((await api(gw, 'GET', '/v1/services', undefined, token)).json.services, []);
      assert.deepEqual((await api(gw, 'GET', '/v1/models', undefined, token)).json.models, []);
      for (const [method, p] of [['GET', '/v1/services/secure'], ['PATCH', '/v1/services/secure'], ['POST', '/v1/services/secure/stop'], ['DELETE', '/v1/services/secure']]) {
        const a = await api(gw, method!, p!, method === 'PATCH' ? { description: 'x' } : undefined, token);
        assert.equal(a.status, 404, `${method} ${p}`);
        assert.equal(a.json.error_msg, "service 'secure' does not exist");
      }
      const m = await api(gw, 'DELETE', '/v1/models/fraud', undefined, token);
      assert.equal(m.status, 404);
      assert.equal(m.json.error_msg, "model 'fraud' does not exist");
      const q = await api(gw, 'GET', '/v1/models?project=default', undefined, token);
      assert.equal(q.status, 404);
      assert.equal(q.json.error_msg, "project 'default' does not exist");
    });
    test('the management API always needs a token', async () => {
      unauthorized(await api(gw, 'GET', '/v1/services', undefined, null), /no token/);
      unauthorized(await request(`${gw.url}/v1/models`, { method: 'GET', headers: { authorization: 'Bearer nonsense' } }), /malformed/);
    });
    test('what the roles do allow', async () => {
      assert.equal((await api(gw, 'GET', '/v1/services/secure', undefined, users['reader']!.token)).status, 200);
      assert.equal((await api(gw, 'POST', '/v1/services/secure/restart', undefined, users['dev']!.token)).status, 202);
      assert.equal((await api(gw, 'GET', '/v1/users', undefined, ADMIN_TOKEN)).status, 200);
    });
  });

  test('tokens, API keys and passwords never reach the log', async () => {
    const log = gw.stderr() + gw.stdout();
    for (const t of [...seenTokens, ADMIN_TOKEN, ...Object.values(users).flatMap((u) => [u.token, u.refresh])]) assert.ok(!log.includes(t), 'a token was logged');
    assert.ok(!log.includes('-password'), 'a password was logged');
  });
});
