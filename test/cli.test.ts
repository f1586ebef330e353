import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { cpSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { ADMIN_TOKEN, MAIN, SAMPLE_MODELS, api, startGateway, tempDir, waitForService, type RunningGateway } from './helpers/gateway.js';

const run = promisify(execFile);

async function cli(gw: RunningGateway | null, ...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [MAIN, ...args], { env: { ...process.env, INFERGATE_URL: gw?.url ?? 'http://127.0.0.1:9', INFERGATE_TOKEN: ADMIN_TOKEN } });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

describe('the CLI against a running gateway', () => {
  let gw: RunningGateway;
  before(async () => {
    gw = await startGateway({ modelsDir: path.join(SAMPLE_MODELS, 'nothing-here') });
  });
  after(async () => {
    await gw.stop();
  });

  test('model import (a folder) and model list', async () => {
    const r = await cli(gw, 'model', 'import', path.join(SAMPLE_MODELS, 'iris'), '--name', 'iris-cli', '--version', '1.2.3');
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^imported iris-cli version 1\.2\.3 \(ONNX, sha256 [0-9a-f]{64}\)/);
    const bare = await cli(gw, 'model', 'import', path.join(SAMPLE_MODELS, 'ccfraud', 'model.onnx'), '--name', 'fraud-cli');
    assert.equal(bare.code, 0, bare.stderr);
    const list = await cli(gw, 'model', 'list');
    assert.match(list.stdout, /^NAME\s+VERSION\s+TYPE/);
    assert.match(list.stdout, /iris-cli\s+1\.2\.3\s+ONNX/);
    assert.match(list.stdout, /fraud-cli\s+0\.0\.1\s+ONNX/);
  });

  test('service deploy --wait, list, predict, stop, start, delete', async () => {
    const deployed = await cli(gw, 'service', 'deploy', '--name', 'flowers', '--model', 'iris-cli@1.2.3', '--auth', 'none', '--wait');
    assert.equal(deployed.code, 0, deployed.stderr);
    assert.match(deployed.stdout, /service flowers \([0-9a-f-]{36}\) is deploying/);
    assert.match(deployed.stderr, /flowers: running/);
    assert.match((await cli(gw, 'service', 'list')).stdout, /flowers\s+[0-9a-f-]{36}\s+running\s+iris-cli@1\.2\.3:100%/);
    const data = path.join(tempDir(), 'req.json');
    writeFileSync(data, JSON.stringify({ data: { req_data: [{ sepal_length: 6.7, sepal_width: 3.0, petal_length: 5.2, petal_width: 2.3 }] } }));
    const predicted = await cli(gw, 'predict', 'flowers', '--data', data);
    assert.equal(predicted.code, 0, predicted.stderr);
    assert.equal(JSON.parse(predicted.stdout).data.resp_data[0].predictresult, 'virginica');
    assert.match((await cli(gw, 'service', 'stop', 'flowers', '--wait')).stderr, /flowers: stopped/);
    const refused = await cli(gw, 'predict', 'flowers', '--data', data);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /service 'flowers' is stopped; start it to send inference requests \(IG\.409\.ServiceStopped\)/);
    assert.match((await cli(gw, 'service', 'start', 'flowers', '--wait')).stderr, /flowers: running/);
    assert.equal((await cli(gw, 'service', 'delete', 'flowers')).code, 0);
  });

  test('errors say what went wrong, with a non-zero exit', async () => {
    const missing = await cli(gw, 'service', 'stop', 'no-such-service');
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /service 'no-such-service' does not exist \(IG\.404\.ServiceNotFound\)/);
    const down = await cli(null, 'model', 'list');
    assert.equal(down.code, 1);
    assert.match(down.stderr, /cannot reach the gateway at http:\/\/127\.0\.0\.1:9 .*is `infergate serve` running\?/);
    const usage = await cli(gw, 'model', 'import');
    assert.equal(usage.code, 1);
    assert.match(usage.stderr, /usage: infergate model import <path> --name NAME/);
    // Names are path segments: one that reads as a path does not reach another resource.
    const sneaky = await cli(gw, 'model', 'delete', 'nothing', '--version', '../../../services/anything');
    assert.equal(sneaky.code, 1);
    assert.match(sneaky.stderr, /model 'nothing' does not exist/);
    const dots = await cli(gw, 'model', 'delete', 'nothing', '--version', '..');
    assert.equal(dots.code, 1);
    assert.match(dots.stderr, /'\.\.' is not a name or version/);
  });
});

describe('deployment timeout', () => {
  test('a deployment over timeout_minutes ends failed with the ModelArts event', async () => {
    const gw = await startGateway({ modelsDir: path.join(SAMPLE_MODELS, 'nothing-here') });
    try {
      const dir = path.join(tempDir(), 'slow');
      cpSync(path.join(SAMPLE_MODELS, 'ccfraud'), dir, { recursive: true });
      writeFileSync(path.join(dir, 'customize_service.js'), 'Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 3000);\n');
      assert.equal((await api(gw, 'POST', '/v1/models', { name: 'slow', source: { path: dir } })).status, 201);
      await api(gw, 'POST', '/v1/services', { name: 'late', auth: 'none', timeout_minutes: 0.01, versions: [{ model: 'slow' }] });
      await waitForService(gw, 'late', 'failed');
      const events = (await api(gw, 'GET', '/v1/services/late/events')).json.events;
      assert.equal(events.at(-1).level, 'Abnormal');
      assert.equal(events.at(-1).message, 'Service deployment timed out. Error: the instances were not ready within 0.01 minutes');
      assert.equal((await api(gw, 'POST', '/v1/infers/late', [])).status, 503);
    } finally {
      await gw.stop();
    }
  });
});

describe('the admin token', () => {
  test('the first start prints one once; `infergate token` prints a new one from the data dir', async () => {
    const gw = await startGateway({ modelsDir: path.join(SAMPLE_MODELS, 'nothing-here'), env: { INFERGATE_ADMIN_TOKEN: '' } });
    const printed = /admin token \(shown once; `infergate token` prints a new one\):\n(\S+)\n/.exec(gw.stdout());
    assert.ok(printed, gw.stdout());
    assert.equal((await api(gw, 'GET', '/v1/services', undefined, printed[1]!)).status, 200);
    await gw.stop();
    const again = await startGateway({ modelsDir: path.join(SAMPLE_MODELS, 'nothing-here'), env: { INFERGATE_ADMIN_TOKEN: '' }, dataDir: gw.dataDir });
    try {
      assert.doesNotMatch(again.stdout(), /admin token/, 'shown once only');
      const fresh = await cli(null, 'token', '--data-dir', gw.dataDir);
      assert.equal(fresh.code, 0, fresh.stderr);
      assert.equal((await api(again, 'GET', '/v1/services', undefined, fresh.stdout.trim())).status, 200);
      const none = await cli(null, 'token', '--data-dir', path.join(gw.dataDir, 'nope'));
      assert.equal(none.code, 1);
      assert.match(none.stderr, /no gateway data in .*nope: start `infergate serve` there once first/);
    } finally {
      await again.stop();
    }
  });

  test('a second gateway on a data dir or a port in use refuses to start, saying which', async () => {
    const gw = await startGateway({ modelsDir: path.join(SAMPLE_MODELS, 'nothing-here') });
    try {
      const sameDir = await cli(null, 'serve', '--port', '0', '--data-dir', gw.dataDir, '--models-dir', path.join(SAMPLE_MODELS, 'nothing-here'));
      assert.equal(sameDir.code, 1);
      assert.match(sameDir.stderr, new RegExp(`the data dir ${gw.dataDir} is in use by another gateway \\(pid ${gw.proc.pid} on .+ since .+\\); stop it first, or give this one its own --data-dir`));
      const samePort = await cli(null, 'serve', '--port', String(gw.port), '--data-dir', tempDir('infergate-data-'), '--models-dir', path.join(SAMPLE_MODELS, 'nothing-here'));
      assert.equal(samePort.code, 1);
      assert.match(samePort.stderr, new RegExp(`cannot listen on 127\\.0\\.0\\.1:${gw.port} \\(address in use or not available\\)`));
      assert.equal((await api(gw, 'GET', '/v1/services')).status, 200, 'the first gateway serves on');
    } finally {
      gw.proc.kill('SIGKILL');
      await gw.exited;
    }
    // The lock goes with the process that held it, however it died.
    const next = await startGateway({ modelsDir: path.join(SAMPLE_MODELS, 'nothing-here'), dataDir: gw.dataDir });
    assert.equal(await next.stop(), 0, `signal ${next.proc.signalCode}; stdout:\n${next.stdout()}\nstderr:\n${next.stderr()}`);
  });
});
