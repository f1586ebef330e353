import assert from 'node:assert/strict';
import { cpSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { after, before, describe, test } from 'node:test';
import { ADMIN_TOKEN, SAMPLE_MODELS, api, postJson, startGateway, tempDir, until, waitForService, type RunningGateway } from './helpers/gateway.js';

const PANDAS = 'application/json; format=pandas-records';
const row = [{ tensor: Array.from({ length: 29 }, (_, i) => (i % 5) / 5) }];

/** A copy of the ccfraud package whose worker takes `ms` to load (a slow deployment to interrupt). */
function slowPackage(ms: number): string {
  const dir = path.join(tempDir('infergate-slow-'), 'slow');
  cpSync(path.join(SAMPLE_MODELS, 'ccfraud'), dir, { recursive: true });
  writeFileSync(path.join(dir, 'customize_service.js'), `Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ${ms});\nexports.preprocess = (feeds) => feeds;\n`);
  return dir;
}

async function importVersions(gw: RunningGateway, name: string, versions: string[]): Promise<void> {
  for (const version of versions) {
    const a = await api(gw, 'POST', '/v1/models', { name, version, source: { path: path.join(SAMPLE_MODELS, 'ccfraud') } });
    assert.equal(a.status, 201, a.text);
  }
}

const infer = (gw: RunningGateway, service: string) => postJson(`${gw.url}/v1/infers/${service}`, row, PANDAS);

describe('services: lifecycle, statuses, traffic split', () => {
  let gw: RunningGateway;
  before(async () => {
    gw = await startGateway({ modelsDir: path.join(SAMPLE_MODELS, 'nothing-here') });
    await importVersions(gw, 'fraud', ['1.0.0', '2.0.0']);
  });
  after(async () => {
    await gw.stop();
  });

  test('deploy → running → infer → stop (infer 409) → start → restart → delete, with ModelArts events', async () => {
    const created = await api(gw, 'POST', '/v1/services', { name: 'lc', auth: 'none', versions: [{ model: 'fraud', version: '1.0.0' }] });
    assert.equal(created.status, 202, created.text);
    assert.equal(created.json.status, 'deploying');
    assert.match(created.json.id, /^[0-9a-f-]{36}$/);
    const id = created.json.id as string;
    await waitForService(gw, id, 'running');
    assert.equal((await infer(gw, 'lc')).status, 200);
    assert.equal((await infer(gw, id)).status, 200, 'the id works as well as the name');

    assert.equal((await api(gw, 'POST', `/v1/services/${id}/stop`)).status, 202);
    await waitForService(gw, id, 'stopped');
    const refused = await infer(gw, 'lc');
    assert.equal(refused.status, 409);
    assert.equal(refused.json.error_code, 'IG.409.ServiceStopped');
    assert.match(refused.json.error_msg, /service 'lc' is stopped; start it/);

    assert.equal((await api(gw, 'POST', `/v1/services/${id}/start`)).status, 202);
    await waitForService(gw, id, 'running');
    assert.equal((await infer(gw, 'lc')).status, 200);
    assert.equal((await api(gw, 'POST', `/v1/services/lc/restart`)).status, 202);
    await until('the restart to finish', async () => (await api(gw, 'GET', '/v1/services/lc/events')).json.events.length === 7);
    assert.equal((await infer(gw, 'lc')).status, 200);

    const events = (await api(gw, 'GET', `/v1/services/${id}/events`)).json.events.map((e: { message: string }) => e.message);
    assert.deepEqual(events, [
      'The service starts to deploy.', 'Service lc started.', 'Service lc stopped.',
      'The service starts to deploy.', 'Service lc started.', 'The service is restarting.', 'Service lc started.',
    ]);
    assert.equal((await api(gw, 'DELETE', `/v1/services/${id}`)).status, 202);
    await until('the service to be gone', async () => (await api(gw, 'GET', `/v1/services/${id}`)).status === 404);
    assert.equal((await infer(gw, 'lc')).status, 404);
    assert.equal((await api(gw, 'DELETE', '/v1/models/fraud/versions/1.0.0')).status !== 409, true, 'no longer in use');
    await importVersions(gw, 'fraud', ['1.0.0']);
  });

  test('actions a status does not allow are refused with 409; bad specs with 400 or 404', async () => {
    await api(gw, 'POST', '/v1/services', { name: 'rules', auth: 'none', versions: [{ model: 'fraud', version: '1.0.0' }] });
    await waitForService(gw, 'rules', 'running');
    const start = await api(gw, 'POST', '/v1/services/rules/start');
    assert.equal(start.status, 409);
    assert.equal(start.json.error_code, 'IG.409.WrongStatus');
    assert.match(start.json.error_msg, /service 'rules' is running; start is allowed only when it is stopped, failed/);
    await api(gw, 'POST', '/v1/services/rules/stop');
    await waitForService(gw, 'rules', 'stopped');
    assert.match((await api(gw, 'POST', '/v1/services/rules/stop')).json.error_msg, /is stopped; stop is allowed only when it is running/);
    assert.match((await api(gw, 'POST', '/v1/services/rules/restart')).json.error_msg, /is stopped; restart is allowed only/);
    const dup = await api(gw, 'POST', '/v1/services', { name: 'rules', versions: [{ model: 'fraud', version: '1.0.0' }] });
    assert.equal(dup.status, 409);
    assert.match(dup.json.error_msg, /a service named 'rules' already exists/);
    const weights = await api(gw, 'POST', '/v1/services', { name: 'w', versions: [{ model: 'fraud', version: '1.0.0', weight: 60 }, { model: 'fraud', version: '2.0.0', weight: 30 }] });
    assert.equal(weights.status, 400);
    assert.match(weights.json.error_msg, /weights sum to 90; they must sum to 100/);
    const noWeight = await api(gw, 'POST', '/v1/services', { name: 'w', versions: [{ model: 'fraud', version: '1.0.0' }, { model: 'fraud', version: '2.0.0', weight: 30 }] });
    assert.match(noWeight.json.error_msg, /versions\[0\]\.weight is required when a service has several versions/);
    const unknown = await api(gw, 'POST', '/v1/services', { name: 'w', versions: [{ model: 'fraud', version: '9.9.9' }] });
    assert.equal(unknown.status, 404);
    assert.match(unknown.json.error_msg, /model 'fraud' has no version '9.9.9'/);
    // Bounds one caller may not pass: the host's memory and threads, and a deploy timer that fits.
    const bounds: [Record<string, unknown>, RegExp][] = [
      [{ versions: [{ model: 'fraud', version: '1.0.0', instances: 2000 }] }, /versions\[0\]\.instances must be an integer from 1 to 128, got 2000/],
      [{ versions: [{ model: 'fraud', version: '1.0.0', intra_op_threads: 500 }] }, /versions\[0\]\.intra_op_threads must be an integer from 1 to 64, got 500/],
      [{ versions: [{ model: 'fraud', version: '1.0.0', batching: { max_queue_delay_us: 9007199254740991 } }] }, /versions\[0\]\.batching\.max_queue_delay_us must be an integer from 0 to 10000000, got 9007199254740991/],
      [{ versions: [{ model: 'fraud', version: '1.0.0' }], auth: 'yes' }, /'auth' must be "token" or "none", got "yes"/],
      [{ versions: [{ model: 'fraud', version: '1.0.0' }], rules: [{ condition: 'true' }] }, /rules\[0\]\.version must name one of the service's versions: fraud@1\.0\.0/],
      [{ versions: [{ model: 'fraud', version: '1.0.0' }], timeout_minutes: 40000 }, /'timeout_minutes' must be a positive number of minutes, at most 10080 \(a week\), got 40000/],
      // A misspelt field is refused, not dropped (the limit would silently not be set).
      [{ versions: [{ model: 'fraud', version: '1.0.0' }], trafic_limit: 5 }, /^unknown field 'trafic_limit'; a service takes name, project, description, auth, versions, rules, shadow, traffic_limit, timeout_minutes, log_sample_rate, high_speed, websocket$/],
    ];
    for (const [body, msg] of bounds) {
      const a = await api(gw, 'POST', '/v1/services', { name: 'w', ...body });
      assert.equal(a.status, 400, a.text);
      assert.equal(a.json.error_code, 'IG.400.BadSpec');
      assert.match(a.json.error_msg, msg);
    }
    const patched = await api(gw, 'PATCH', '/v1/services/rules', { traffic_limit: 5, websockets: true });
    assert.equal(patched.status, 400, patched.text);
    assert.equal(patched.json.error_code, 'IG.400.BadSpec');
    assert.match(patched.json.error_msg, /^unknown field 'websockets'; a service takes /);
    assert.equal((await api(gw, 'GET', '/v1/services/rules')).json.traffic_limit, null, 'nothing of a refused PATCH is applied');
    const badName = await api(gw, 'POST', '/v1/services', { name: 'bad name', versions: [{ model: 'fraud' }] });
    assert.equal(badName.status, 400);
    const missing = await api(gw, 'POST', '/v1/services/nope/start');
    assert.equal(missing.status, 404);
    assert.equal(missing.json.error_code, 'IG.404.ServiceNotFound');
    const notJson = await fetch(`${gw.url}/v1/services`, { method: 'POST', body: '{nope', headers: { 'content-type': 'application/json', 'x-auth-token': ADMIN_TOKEN } });
    assert.equal(notJson.status, 400);
  });

  test('gray release: 10,000 requests at 70/30 land within ±2 points', async () => {
    await api(gw, 'POST', '/v1/services', { name: 'split', auth: 'none', versions: [{ model: 'fraud', version: '1.0.0', weight: 70 }, { model: 'fraud', version: '2.0.0', weight: 30 }] });
    await waitForService(gw, 'split', 'running');
    const counts = new Map<string, number>();
    let next = 0;
    const total = 10_000;
    await Promise.all(Array.from({ length: 32 }, async () => {
      while (next < total) {
        next++;
        const a = await infer(gw, 'split');
        assert.equal(a.status, 200, a.text);
        const v = a.headers.get('x-model-version')!;
        counts.set(v, (counts.get(v) ?? 0) + 1);
      }
    }));
    const share = (counts.get('fraud@1.0.0') ?? 0) / total;
    assert.ok(Math.abs(share - 0.7) <= 0.02, `fraud@1.0.0 got ${(share * 100).toFixed(2)} % of ${total}`);
    assert.equal((counts.get('fraud@1.0.0') ?? 0) + (counts.get('fraud@2.0.0') ?? 0), total);
  });

  test('a rolling update under continuous load fails no request and switches the version', async () => {
    await api(gw, 'POST', '/v1/services', { name: 'roll', auth: 'none', versions: [{ model: 'fraud', version: '1.0.0' }] });
    await waitForService(gw, 'roll', 'running');
    let stop = false;
    let updated = false;
    const seen: string[] = [];
    /** Versions that answered requests sent once the update was seen finished (an answer to one sent before may arrive later). */
    const after: string[] = [];
    const failures: string[] = [];
    const clients = Array.from({ length: 8 }, async () => {
      while (!stop) {
        const sentAfter = updated;
        const a = await infer(gw, 'roll');
        if (a.status !== 200) failures.push(`${a.status} ${a.text}`);
        const v = a.headers.get('x-model-version') ?? '?';
        seen.push(v);
        if (sentAfter) after.push(v);
      }
    });
    await until('some traffic on the old version', async () => seen.length > 200);
    const patched = await api(gw, 'PATCH', '/v1/services/roll', { versions: [{ model: 'fraud', version: '2.0.0', instances: 2 }] });
    assert.equal(patched.status, 202, patched.text);
    assert.equal(patched.json.updating, true);
    await waitForService(gw, 'roll', 'running');
    updated = true;
    await until('traffic after the update', async () => after.length > 200);
    stop = true;
    await Promise.all(clients);
    assert.deepEqual(failures, []);
    assert.equal(seen[0], 'fraud@1.0.0');
    assert.ok(after.every((v) => v === 'fraud@2.0.0'), `after the update only the new version answers: ${after.filter((v) => v !== 'fraud@2.0.0').length} of ${after.length} did not`);
    const events = (await api(gw, 'GET', '/v1/services/roll/events')).json.events.map((e: { message: string }) => e.message);
    assert.deepEqual(events.slice(-2), ['The service starts to update.', 'Service updated.']);
    assert.deepEqual((await api(gw, 'GET', '/v1/services/roll')).json.versions, [{ model: 'fraud', version: '2.0.0', weight: 100, instances: 2, provider: 'cpu', intra_op_threads: 1 }]);
  });

  test('a failed update is rolled back and the old version keeps serving', async () => {
    const bad = await api(gw, 'PATCH', '/v1/services/roll', { versions: [{ model: 'fraud', version: '1.0.0', provider: 'cuda' }] });
    assert.equal(bad.status, 202);
    await until('the rollback event', async () => (await api(gw, 'GET', '/v1/services/roll/events')).json.events.at(-1).message.startsWith('Failed to update'));
    const last = (await api(gw, 'GET', '/v1/services/roll/events')).json.events.at(-1);
    assert.equal(last.level, 'Abnormal');
    assert.match(last.message, /^Failed to update the service\. The update has been rolled back\. Error: .*CUDA execution provider is not installed/);
    const svc = await waitForService(gw, 'roll', 'running');
    assert.equal(svc.versions[0].version, '2.0.0');
    assert.equal((await infer(gw, 'roll')).headers.get('x-model-version'), 'fraud@2.0.0');
  });
});

describe('deleting a service while it deploys', () => {
  test('the deployment is abandoned: the service is gone and nothing of it keeps running', async () => {
    const gw = await startGateway({ modelsDir: path.join(SAMPLE_MODELS, 'nothing-here') });
    try {
      assert.equal((await api(gw, 'POST', '/v1/models', { name: 'slow', source: { path: slowPackage(1500) } })).status, 201);
      const created = await api(gw, 'POST', '/v1/services', { name: 'brief', auth: 'none', versions: [{ model: 'slow' }] });
      assert.equal(created.json.status, 'deploying');
      const stopped = await api(gw, 'POST', '/v1/services/brief/stop');
      assert.equal(stopped.status, 409, 'a deploying service cannot be stopped');
      assert.equal((await api(gw, 'DELETE', '/v1/services/brief')).status, 202);
      await until('the service to be gone', async () => (await api(gw, 'GET', '/v1/services/brief')).status === 404);
      assert.equal((await infer(gw, 'brief')).status, 404);
      await until('its deployment to be abandoned', async () => !(await (await fetch(`${gw.url}/metrics`)).text()).includes('service="brief"'));
      assert.equal((await api(gw, 'DELETE', '/v1/models/slow')).status, 204, 'no service uses the model any more');
    } finally {
      await gw.stop();
    }
  });
});

describe('durability: kill -9 and restart', () => {
  test('killed during a deployment: after restart the service deploys again, nothing is duplicated', async () => {
    const gw = await startGateway({ modelsDir: path.join(SAMPLE_MODELS, 'nothing-here') });
    const imported = await api(gw, 'POST', '/v1/models', { name: 'slow', version: '1.0.0', source: { path: slowPackage(3000) } });
    assert.equal(imported.status, 201, imported.text);
    const created = await api(gw, 'POST', '/v1/services', { name: 'slow-svc', auth: 'none', versions: [{ model: 'slow' }] });
    assert.equal(created.json.status, 'deploying');
    gw.proc.kill('SIGKILL');
    await gw.exited;
    const again = await startGateway({ modelsDir: path.join(SAMPLE_MODELS, 'nothing-here'), dataDir: gw.dataDir });
    try {
      const svc = await waitForService(again, 'slow-svc', 'running');
      assert.equal(svc.id, created.json.id);
      assert.equal((await api(again, 'GET', '/v1/services')).json.services.length, 1);
      const model = (await api(again, 'GET', '/v1/models/slow')).json;
      assert.deepEqual(model.versions.map((v: { version: string }) => v.version), ['1.0.0']);
      assert.equal((await infer(again, 'slow-svc')).status, 200);
    } finally {
      await again.stop();
    }
  });

  test('killed during an update: after restart the service is back on its last stable version', async () => {
    const gw = await startGateway({ modelsDir: path.join(SAMPLE_MODELS, 'nothing-here') });
    await importVersions(gw, 'fraud', ['1.0.0']);
    assert.equal((await api(gw, 'POST', '/v1/models', { name: 'fraud', version: '2.0.0', source: { path: slowPackage(3000) } })).status, 201);
    await api(gw, 'POST', '/v1/services', { name: 'upd', auth: 'none', versions: [{ model: 'fraud', version: '1.0.0' }] });
    await waitForService(gw, 'upd', 'running');
    const patched = await api(gw, 'PATCH', '/v1/services/upd', { versions: [{ model: 'fraud', version: '2.0.0' }] });
    assert.equal(patched.json.updating, true);
    gw.proc.kill('SIGKILL');
    await gw.exited;
    const again = await startGateway({ modelsDir: path.join(SAMPLE_MODELS, 'nothing-here'), dataDir: gw.dataDir });
    try {
      const svc = await waitForService(again, 'upd', 'running');
      assert.deepEqual(svc.versions.map((v: { version: string }) => v.version), ['1.0.0']);
      const a = await infer(again, 'upd');
      assert.equal(a.status, 200);
      assert.equal(a.headers.get('x-model-version'), 'fraud@1.0.0');
      const events = (await api(again, 'GET', '/v1/services/upd/events')).json.events.map((e: { message: string }) => e.message);
      assert.ok(events.includes('Failed to update the service. The update has been rolled back. Error: the gateway restarted during the update.'), events.join('\n'));
      assert.equal((await api(again, 'GET', '/v1/models/fraud')).json.versions.length, 2);
    } finally {
      await again.stop();
    }
  });

  test('restarting with the same models directory and config creates nothing new', async () => {
    const config = { services: [{ name: 'declared', auth: 'none', versions: [{ model: 'ccfraud', instances: 1 }] }] };
    const gw = await startGateway({ config });
    const first = { models: (await api(gw, 'GET', '/v1/models')).json.models, services: (await api(gw, 'GET', '/v1/services')).json.services };
    await gw.stop();
    const again = await startGateway({ config, dataDir: gw.dataDir });
    try {
      const models = (await api(again, 'GET', '/v1/models')).json.models;
      const services = (await api(again, 'GET', '/v1/services')).json.services;
      assert.deepEqual(models.map((m: { name: string; versions: unknown[] }) => [m.name, m.versions.length]), first.models.map((m: { name: string; versions: unknown[] }) => [m.name, m.versions.length]));
      assert.deepEqual(services.map((s: { id: string; name: string }) => [s.id, s.name]), first.services.map((s: { id: string; name: string }) => [s.id, s.name]));
      assert.deepEqual(services.map((s: { name: string }) => s.name).sort(), ['ccfraud', 'credit-risk', 'declared', 'iris', 'iris-server', 'ocr-direction', 'vad']);
      assert.equal((await infer(again, 'declared')).status, 200);
    } finally {
      await again.stop();
    }
  });

  test('a stored rule that no longer compiles fails its service at restart, saying which rule, and starts nothing', async () => {
    const gw = await startGateway({ modelsDir: path.join(SAMPLE_MODELS, 'nothing-here') });
    await importVersions(gw, 'fraud', ['1.0.0']);
    const created = await api(gw, 'POST', '/v1/services', { name: 'ruled', auth: 'none', versions: [{ model: 'fraud', version: '1.0.0' }], rules: [{ condition: "#HEADER_tier == 'gold'", version: '1.0.0' }] });
    assert.equal(created.status, 202, created.text);
    await waitForService(gw, 'ruled', 'running');
    await gw.stop();
    // As an older release could have stored it (the check at create time has changed since).
    const db = new Database(path.join(gw.dataDir, 'infergate.db'));
    const row = db.prepare("SELECT id, spec, stable_spec FROM services WHERE name = 'ruled'").get() as { id: string; spec: string; stable_spec: string };
    const broken = (text: string): string => text.replace("#HEADER_tier == 'gold'", "#HEADER_tier === 'gold'");
    db.prepare('UPDATE services SET spec = ?, stable_spec = ? WHERE id = ?').run(broken(row.spec), broken(row.stable_spec), row.id);
    db.close();
    const again = await startGateway({ modelsDir: path.join(SAMPLE_MODELS, 'nothing-here'), dataDir: gw.dataDir });
    try {
      await waitForService(again, 'ruled', 'failed');
      const events = (await api(again, 'GET', '/v1/services/ruled/events')).json.events.map((e: { message: string }) => e.message);
      assert.ok(events.some((m: string) => /^Failed to deploy the service\. Error: rules\[0\]: unexpected character '=' at position 16/.test(m)), events.join('\n'));
      assert.equal((await api(again, 'GET', '/v1/services/ruled/instances')).json.instances.length, 0);
    } finally {
      await again.stop();
    }
  });

  test('packages linked into the models directory are served like folders in it', async () => {
    const models = tempDir('infergate-linked-');
    symlinkSync(path.join(SAMPLE_MODELS, 'ccfraud'), path.join(models, 'ccfraud'));
    symlinkSync(path.join(SAMPLE_MODELS, 'iris', 'config.json'), path.join(models, 'not-a-package'));
    const gw = await startGateway({ modelsDir: models });
    try {
      const services = (await api(gw, 'GET', '/v1/services')).json.services;
      assert.deepEqual(services.map((s: { name: string }) => s.name), ['ccfraud']);
      await waitForService(gw, 'ccfraud', 'running');
      assert.equal((await infer(gw, 'ccfraud')).status, 200);
    } finally {
      await gw.stop();
    }
  });
});
