import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { SAMPLE_MODELS, api, postJson, startGateway, until, type Answer, type RunningGateway } from './helpers/gateway.js';

const PANDAS = 'application/json; format=pandas-records';
const IRIS_ROW = [{ sepal_length: 5.1, sepal_width: 3.5, petal_length: 1.4, petal_width: 0.2 }];

/** Projects as tenants: every model and service belongs to one; other projects' callers get 403 or 404. */
describe('projects', () => {
  let gw: RunningGateway;
  const tokens: Record<string, string> = {};
  const ids: Record<string, string> = {};
  let teamb = '';
  let defaultIris = '';
  let teambIris = '';

  const as = (user: string, method: string, p: string, body?: unknown): Promise<Answer> => api(gw, method, p, body, tokens[user]!);
  const refused = (a: Answer, status: number, msg: RegExp): void => {
    assert.equal(a.status, status, a.text);
    assert.match(a.json.error_msg, msg);
  };

  before(async () => {
    gw = await startGateway({ modelsDir: SAMPLE_MODELS });
    teamb = (await api(gw, 'POST', '/v1/projects', { name: 'teamb' })).json.id;
    const defaultProject = (await api(gw, 'GET', '/v1/projects')).json.projects.find((p: { name: string }) => p.name === 'default').id;
    for (const [name, project, role] of [['bob', teamb, 'developer'], ['carol', teamb, 'viewer'], ['dave', defaultProject, 'developer']] as const) {
      const u = await api(gw, 'POST', '/v1/users', { username: name, password: `${name}-password` });
      ids[name] = u.json.id;
      assert.equal((await api(gw, 'POST', `/v1/projects/${project}/members`, { user_id: u.json.id, role })).status, 200);
      tokens[name] = (await api(gw, 'POST', '/v1/auth/tokens', { username: name, password: `${name}-password` }, null)).json.access_token;
    }
    // bob's model and service take names the default project already uses.
    const imported = await as('bob', 'POST', '/v1/models', { name: 'iris', version: '7.0.0', source: { path: path.join(SAMPLE_MODELS, 'iris') } });
    assert.equal(imported.status, 201, imported.text);
    const created = await as('bob', 'POST', '/v1/services', { name: 'iris', auth: 'token', versions: [{ model: 'iris' }] });
    assert.equal(created.status, 202, created.text);
    assert.equal(created.json.project, 'teamb', 'a create without "project" lands in the caller\'s first project');
    teambIris = created.json.id;
    defaultIris = (await api(gw, 'GET', '/v1/services?project=default')).json.services.find((s: { name: string }) => s.name === 'iris').id;
    await until('teamb iris running', async () => (await as('bob', 'GET', `/v1/services/${teambIris}`)).json.status === 'running', 30_000);
  });
  after(async () => {
    await gw.stop();
  });

  test('lists show the caller\'s projects only; platform admins see all', async () => {
    const bobs = (await as('bob', 'GET', '/v1/services')).json.services;
    assert.deepEqual(bobs.map((s: { name: string; project: string }) => `${s.project}/${s.name}`), ['teamb/iris']);
    assert.deepEqual((await as('bob', 'GET', '/v1/models')).json.models.map((m: { name: string; project: string }) => `${m.project}/${m.name}`), ['teamb/iris']);
    assert.deepEqual((await as('bob', 'GET', '/v1/projects')).json.projects.map((p: { name: string }) => p.name), ['teamb']);
    const daves = (await as('dave', 'GET', '/v1/services')).json.services.map((s: { name: string }) => s.name);
    assert.deepEqual(daves, ['ccfraud', 'credit-risk', 'iris', 'iris-server', 'ocr-direction', 'vad']);
    const all = (await api(gw, 'GET', '/v1/services')).json.services.map((s: { name: string; project: string }) => `${s.project}/${s.name}`);
    assert.deepEqual(all.sort(), ['default/ccfraud', 'default/credit-risk', 'default/iris', 'default/iris-server', 'default/ocr-direction', 'default/vad', 'teamb/iris']);
  });

  test('another project\'s resources are answered as absent', async () => {
    refused(await as('bob', 'GET', `/v1/services/${defaultIris}`), 404, new RegExp(`service '${defaultIris}' does not exist`));
    refused(await as('bob', 'POST', `/v1/services/${defaultIris}/stop`), 404, /does not exist/);
    refused(await as('bob', 'DELETE', `/v1/services/${defaultIris}`), 404, /does not exist/);
    refused(await as('bob', 'GET', '/v1/services/ccfraud'), 404, /service 'ccfraud' does not exist/);
    refused(await as('bob', 'GET', '/v1/models/ccfraud'), 404, /model 'ccfraud' does not exist/);
    refused(await as('bob', 'DELETE', '/v1/models/credit-risk'), 404, /model 'credit-risk' does not exist/);
    refused(await as('dave', 'GET', `/v1/services/${teambIris}`), 404, /does not exist/);
    refused(await as('dave', 'GET', '/v1/models/iris/versions/7.0.0'), 404, /model 'iris' has no version '7\.0\.0'/);
    refused(await as('bob', 'GET', '/v1/services?project=default'), 404, /project 'default' does not exist/);
    refused(await as('bob', 'POST', '/v1/services', { name: 'x', project: 'default', versions: [{ model: 'iris' }] }), 404, /project 'default' does not exist/);
    refused(await as('dave', 'POST', `/v1/services/${teambIris}/logs`, {}), 404, /does not exist/);
  });

  test('a name each project uses resolves to the caller\'s; a platform admin names the project', async () => {
    const bobs = await as('bob', 'GET', '/v1/services/iris');
    assert.equal(bobs.json.id, teambIris);
    assert.equal((await as('dave', 'GET', '/v1/services/iris')).json.id, defaultIris);
    assert.equal((await as('bob', 'GET', '/v1/models/iris')).json.versions[0].version, '7.0.0');
    refused(await api(gw, 'GET', '/v1/models/iris'), 409, /model 'iris' exists in projects 'default', 'teamb'; name one with \?project=<id or name>/);
    refused(await api(gw, 'GET', '/v1/services/iris'), 409, /service 'iris' exists in projects 'default', 'teamb'/);
    assert.equal((await api(gw, 'GET', '/v1/services/iris?project=teamb')).json.id, teambIris);
    assert.equal((await api(gw, 'GET', `/v1/models/iris?project=${teamb}`)).json.versions[0].version, '7.0.0');
  });

  test('roles hold per project', async () => {
    refused(await as('carol', 'POST', '/v1/services', { name: 'y', versions: [{ model: 'iris' }] }), 403, /user 'carol' is viewer in project 'teamb', which does not allow POST \/v1\/services \(changing it\)/);
    refused(await as('carol', 'PATCH', `/v1/services/${teambIris}`, { description: 'x' }), 403, /viewer in project 'teamb', which does not allow PATCH/);
    assert.equal((await as('carol', 'GET', `/v1/services/${teambIris}`)).status, 200);
    refused(await as('bob', 'POST', `/v1/projects/${teamb}/members`, { user_id: ids['carol'], role: 'developer' }), 403, /developer in project 'teamb', which does not allow POST \/v1\/projects\/\{id\}\/members/);
    refused(await as('bob', 'POST', '/v1/users', { username: 'zed', password: 'zed-password' }), 403, /has no role in project 'default', so may not POST \/v1\/users/);
    refused(await as('bob', 'PATCH', `/v1/services/${teambIris}`, { project: 'default' }), 404, /project 'default' does not exist/);
    refused(await api(gw, 'PATCH', `/v1/services/${teambIris}`, { project: 'default' }), 400, /a service cannot move to another project \('project' must stay 'teamb'\)/);
    refused(await as('bob', 'POST', '/v1/services', { name: 'z', project: 42, versions: [{ model: 'iris' }] }), 400, /'project' must be a project id or name/);
    refused(await as('bob', 'POST', '/v1/services', { name: 'z', project: 'nowhere', versions: [{ model: 'iris' }] }), 404, /project 'nowhere' does not exist/);
  });

  test("a user's name where its id goes: the refusal says an id is wanted, without giving it away", async () => {
    const a = await api(gw, 'POST', `/v1/projects/${teamb}/members`, { user_id: 'carol', role: 'viewer' });
    assert.equal(a.status, 404, a.text);
    assert.equal(a.json.error_msg, `user 'carol' does not exist; 'carol' is a user's name, and this takes the user's id (as POST /v1/users answered it)`);
  });

  test('a project admin manages its members, not the gateway', async () => {
    await api(gw, 'POST', `/v1/projects/${teamb}/members`, { user_id: ids['bob'], role: 'admin' });
    assert.equal((await as('bob', 'POST', `/v1/projects/${teamb}/members`, { user_id: ids['carol'], role: 'invoker' })).status, 200);
    refused(await as('bob', 'POST', '/v1/projects', { name: 'teamc' }), 403, /may not POST \/v1\/projects/);
    refused(await as('bob', 'GET', '/v1/users'), 403, /may not GET \/v1\/users/);
    await api(gw, 'POST', `/v1/projects/${teamb}/members`, { user_id: ids['bob'], role: 'developer' });
  });

  test('a misspelt field in a user, project, member or model body is refused, naming it and what is expected', async () => {
    const cases: [string, Record<string, unknown>, RegExp][] = [
      ['/v1/users', { username: 'dora', pasword: 'secret-123' }, /^POST \/v1\/users: unknown field 'pasword'; expected username, password, domain$/],
      ['/v1/projects', { name: 'teamd', descr: 'x' }, /^POST \/v1\/projects: unknown field 'descr'; expected name$/],
      [`/v1/projects/${teamb}/members`, { user_id: ids['bob'], roles: 'admin' }, /^POST \/v1\/projects\/\{id\}\/members: unknown field 'roles'; expected user_id, role$/],
      ['/v1/models', { name: 'm', versoin: '1.0.0', source: { path: '/nowhere' } }, /^POST \/v1\/models: unknown field 'versoin'; expected name, version, description, project, source$/],
    ];
    for (const [path, body, msg] of cases) refused(await api(gw, 'POST', path, body), 400, msg);
    assert.ok(!(await api(gw, 'GET', '/v1/users')).json.users.some((u: { username: string }) => u.username === 'dora'), 'nothing was created');
  });

  test('inference: token services admit their project\'s invokers only', async () => {
    const byId = await postJson(`${gw.url}/v1/infers/${teambIris}`, IRIS_ROW, PANDAS, { 'x-auth-token': tokens['bob']! });
    assert.equal(byId.status, 200, byId.text);
    assert.equal(byId.headers.get('x-model-version'), 'iris@7.0.0');
    const foreign = await postJson(`${gw.url}/v1/infers/${teambIris}`, IRIS_ROW, PANDAS, { 'x-auth-token': tokens['dave']! });
    refused(foreign, 403, /user 'dave' has no role in project 'teamb', so may not inference on service 'iris'/);
    // By name, a name two projects use reaches the older service (here the default's sample, auth none).
    const byName = await postJson(`${gw.url}/v1/infers/iris`, IRIS_ROW, PANDAS);
    assert.equal(byName.status, 200);
    assert.equal(byName.headers.get('x-model-version'), 'iris@0.0.1');
  });

  test('two projects\' models of one name keep their own files', async () => {
    assert.equal((await as('bob', 'DELETE', `/v1/services/${teambIris}`)).status, 202);
    await until('teamb iris gone', async () => (await as('bob', 'GET', `/v1/services/${teambIris}`)).status === 404, 30_000);
    assert.equal((await as('bob', 'DELETE', '/v1/models/iris')).status, 204);
    refused(await as('bob', 'GET', '/v1/models/iris'), 404, /model 'iris' does not exist/);
    assert.equal((await api(gw, 'GET', '/v1/models/iris')).json.project, 'default');
    const after = await postJson(`${gw.url}/v1/infers/${defaultIris}`, IRIS_ROW, PANDAS);
    assert.equal(after.status, 200, after.text);
    // The default project's iris restarts from its own files.
    assert.equal((await api(gw, 'POST', `/v1/services/${defaultIris}/restart`)).status, 202);
    await until('restarted', async () => (await api(gw, 'GET', `/v1/services/${defaultIris}/events`)).json.events.filter((e: { message: string }) => e.message === 'Service iris started.').length >= 2, 30_000);
    assert.equal((await postJson(`${gw.url}/v1/infers/${defaultIris}`, IRIS_ROW, PANDAS)).status, 200);
  });
});
