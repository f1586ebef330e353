import assert from 'node:assert/strict';
import { test } from 'node:test';
import { MinuteCounts, monitorView, ProcessUsage } from '../src/telemetry/monitor.js';

test('calls per minute: a minute older than the hour is forgotten when its slot comes round again', () => {
  const c = new MinuteCounts();
  const t0 = Date.UTC(2026, 11, 2, 10, 0, 30);
  c.add(true, t0);
  c.add(false, t0 + 1000);
  c.add(true, t0 + 60_000);
  const m0 = Math.floor(t0 / 60_000);
  assert.deepEqual(c.at(m0), { ok: 1, failed: 1 });
  assert.deepEqual(c.at(m0 + 1), { ok: 1, failed: 0 });
  c.add(false, t0 + 60 * 60_000); // same slot as m0, an hour on
  assert.deepEqual(c.at(m0), { ok: 0, failed: 0 }, 'the old minute is gone, not added to');
  assert.deepEqual(c.at(m0 + 60), { ok: 0, failed: 1 });
});

test('the monitor view sums versions per minute over the last hour, oldest first, and names the previous minute\'s total', () => {
  const usage = new ProcessUsage();
  try {
    const now = Date.UTC(2026, 11, 2, 10, 30, 10);
    const a = new MinuteCounts();
    const b = new MinuteCounts();
    a.add(true, now - 60_000);
    b.add(false, now - 60_000);
    b.add(true, now);
    a.add(true, now - 59 * 60_000);
    a.add(true, now - 60 * 60_000); // an hour ago: outside the view
    const v = (minutes: MinuteCounts, version: string) => ({ model_id: 'id-' + version, model_name: 'm', model_version: version, total: 9, failed: 2, minutes, running: 1, instances: 2 });
    const view = monitorView({ id: 's1', name: 'svc' }, [v(a, '1'), v(b, '2')], usage, now);
    assert.equal(view.metrics.length, 60);
    assert.equal(view.metrics[0]!.time, '2026-12-02T09:31:00.000Z');
    assert.equal(view.metrics[59]!.time, '2026-12-02T10:30:00.000Z');
    assert.deepEqual([view.metrics[0]!.successfully_called_times, view.metrics[58]!.total_called_times, view.metrics[58]!.failed_called_times, view.metrics[59]!.total_called_times], [1, 2, 1, 1]);
    assert.equal(view.req_count_per_min, 2);
    assert.equal(view.metrics[30]!.cpu_usage, null, 'no sample was taken for that minute');
    assert.equal(view.metrics[59]!.gpu_util, null);
    assert.deepEqual([view.service_instance_count, view.service_running_instance_count], [4, 2]);
    assert.deepEqual(view.monitors.map((m) => [m.model_id, m.invocation_times, m.failed_times]), [['id-1', 9, 2], ['id-2', 9, 2]]);
  } finally {
    usage.close();
  }
});
