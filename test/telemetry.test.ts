import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { postJson, startGateway, tempDir } from './helpers/gateway.js';

// ONNX Runtime 1.30 (Linux) keeps a device id and an event cache for Microsoft's telemetry here.
const telemetryDir = (home: string): string => path.join(home, '.cache', 'Microsoft', 'DeveloperTools', '.onnxruntime');

/** Starts a gateway with `home` as its HOME, runs one inference through a worker, and stops it. */
async function inferOnce(home: string, opts: { env?: Record<string, string>; unsetEnv?: string[] }): Promise<void> {
  const gw = await startGateway({ env: { HOME: home, ...opts.env }, unsetEnv: ['XDG_CACHE_HOME', ...(opts.unsetEnv ?? [])] });
  try {
    const a = await postJson(`${gw.url}/v1/infers/ccfraud`, [{ tensor: new Array(29).fill(0.5) }], 'application/json; format=pandas-records');
    assert.equal(a.status, 200, a.text);
  } finally {
    assert.equal(await gw.stop(), 0);
  }
}

test('ONNX Runtime telemetry stays off unless the operator turns it on (ORT_DISABLE_TELEMETRY=0)', async () => {
  const quiet = tempDir('infergate-home-');
  await inferOnce(quiet, { unsetEnv: ['ORT_DISABLE_TELEMETRY'] });
  assert.equal(existsSync(telemetryDir(quiet)), false, 'the gateway left ONNX Runtime telemetry on: it wrote its device id and event cache');

  // The operator's own choice stands; it also shows the check above can see telemetry when it runs.
  const chosen = tempDir('infergate-home-');
  await inferOnce(chosen, { env: { ORT_DISABLE_TELEMETRY: '0' } });
  assert.ok(existsSync(path.join(telemetryDir(chosen), 'deviceid')), 'with ORT_DISABLE_TELEMETRY=0 ONNX Runtime wrote no telemetry device id: has its telemetry changed?');
});
