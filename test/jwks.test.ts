import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { SignJWT, exportJWK, generateKeyPair, type CryptoKey, type JWK } from 'jose';
import { SAMPLE_MODELS, api, postJson, startGateway, until, waitForService, type RunningGateway } from './helpers/gateway.js';

const ISSUER = 'https://idp.test/realms/acme';
const ROW = [{ tensor: new Array(29).fill(0.2) }];

/** A Keycloak-style identity provider: a JWKS endpoint the test controls, and tokens it signs. */
describe('an external identity provider by JWKS', () => {
  let gw: RunningGateway;
  let idp: http.Server;
  let served: JWK[] = [];
  let jwksFetches = 0;
  const keys: { kid: string; privateKey: CryptoKey }[] = [];

  async function newKey(): Promise<{ kid: string; privateKey: CryptoKey }> {
    const { publicKey, privateKey } = await generateKeyPair('RS256', { extractable: true });
    const kid = `k${keys.length + 1}`;
    served = [{ ...(await exportJWK(publicKey)), kid, alg: 'RS256', use: 'sig' }];
    const k = { kid, privateKey };
    keys.push(k);
    return k;
  }
  const sign = (k: { kid: string; privateKey: CryptoKey }, claims: Record<string, unknown>, iss = ISSUER, aud = 'infergate') =>
    new SignJWT(claims).setProtectedHeader({ alg: 'RS256', kid: k.kid }).setIssuer(iss).setAudience(aud).setIssuedAt().setExpirationTime('5m').sign(k.privateKey);
  const infer = (token: string) => postJson(`${gw.url}/v1/infers/idp`, ROW, 'application/json', { authorization: `Bearer ${token}` });

  before(async () => {
    await newKey();
    idp = http.createServer((_req, res) => {
      jwksFetches++;
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ keys: served }));
    });
    await new Promise<void>((r) => idp.listen(0, '127.0.0.1', r));
    const jwks = `http://127.0.0.1:${(idp.address() as AddressInfo).port}/realms/acme/protocol/openid-connect/certs`;
    gw = await startGateway({ modelsDir: path.join(SAMPLE_MODELS, 'nothing-here'), config: { auth: { jwks_url: jwks, issuer: ISSUER, audience: 'infergate' } } });
    assert.equal((await api(gw, 'POST', '/v1/models', { name: 'fraud', source: { path: path.join(SAMPLE_MODELS, 'ccfraud') } })).status, 201);
    await api(gw, 'POST', '/v1/services', { name: 'idp', versions: [{ model: 'fraud' }] });
    await waitForService(gw, 'idp', 'running');
    const project = (await api(gw, 'GET', '/v1/projects')).json.projects[0].id;
    const user = await api(gw, 'POST', '/v1/users', { username: 'kc-user', domain: 'acme' });
    assert.equal(user.status, 201, user.text);
    await api(gw, 'POST', `/v1/projects/${project}/members`, { user_id: user.json.id, role: 'invoker' });
  });
  after(async () => {
    await gw.stop();
    idp.close();
  });

  test("the provider's token for a provisioned user is accepted, also on the management API by role", async () => {
    const token = await sign(keys[0]!, { sub: 'f81d4fae', preferred_username: 'kc-user' });
    assert.equal((await infer(token)).status, 200);
    const mgmt = await api(gw, 'GET', '/v1/services', undefined, token);
    assert.equal(mgmt.status, 403, 'an invoker may not read the management API');
    assert.ok(jwksFetches >= 1);
  });

  test('wrong audience, wrong issuer, unknown user and HS256 are refused with 401', async () => {
    const wrongAud = await infer(await sign(keys[0]!, { preferred_username: 'kc-user' }, ISSUER, 'another-app'));
    assert.equal(wrongAud.status, 401);
    assert.match(wrongAud.json.error_msg, /wrong audience/);
    const wrongIss = await infer(await sign(keys[0]!, { preferred_username: 'kc-user' }, 'https://evil.test/realms/acme'));
    assert.equal(wrongIss.status, 401);
    assert.equal(wrongIss.json.error_msg, "the token's issuer 'https://evil.test/realms/acme' is not trusted here");
    const stranger = await infer(await sign(keys[0]!, { preferred_username: 'stranger' }));
    assert.equal(stranger.status, 401);
    assert.match(stranger.json.error_msg, /the identity provider's user 'stranger' has no account here; an admin creates it \(POST \/v1\/users\)/);
    const hs = await infer(await new SignJWT({ preferred_username: 'kc-user' }).setProtectedHeader({ alg: 'HS256' }).setIssuer(ISSUER).setAudience('infergate').setExpirationTime('5m').sign(new TextEncoder().encode('x'.repeat(32))));
    assert.equal(hs.status, 401);
    assert.match(hs.json.error_msg, /algorithm the gateway does not accept/);
  });

  test('a rotated key is picked up from the JWKS', async () => {
    const k2 = await newKey();
    const token = await sign(k2, { preferred_username: 'kc-user' });
    const before = jwksFetches;
    // The JWKS is fetched again when a token names an unknown key (at most once a second).
    await until('the rotated key to be accepted', async () => (await infer(token)).status === 200, 10_000);
    assert.ok(jwksFetches > before, 'the key set was fetched again');
    const old = await infer(await sign(keys[0]!, { preferred_username: 'kc-user' }));
    assert.equal(old.status, 401, 'the retired key no longer verifies');
  });
});
