import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Balancer, EJECT_AFTER, Upstream } from '../src/runtime/image/balancer.js';

/** Outlier ejection on its own clock: `failed(u, now)` takes the time, so hours pass in a loop. */
describe('balancer ejection', () => {
  const setup = (n: number): { balancer: Balancer; members: Upstream[]; ejected: [string, number][] } => {
    const ejected: [string, number][] = [];
    const balancer = new Balancer((u, ms) => ejected.push([u.id, ms]));
    const members = Array.from({ length: n }, (_, i) => new Upstream(String(i), '127.0.0.1', 1 + i));
    balancer.set(members);
    return { balancer, members, ejected };
  };
  const failTimes = (b: Balancer, u: Upstream, times: number, now: number): void => {
    for (let i = 0; i < times; i++) b.failed(u, now);
  };

  test('failures while ejected do not eject again; the time doubles only for ejections that follow a return', () => {
    const { balancer, members, ejected } = setup(3);
    const a = members[0]!;
    failTimes(balancer, a, EJECT_AFTER, 1000);
    assert.deepEqual(ejected, [['0', 10_000]]);
    failTimes(balancer, a, 10 * EJECT_AFTER, 1500);
    assert.deepEqual(ejected, [['0', 10_000]], 'no ejection while already out');
    assert.equal(balancer.pick(members[1]), members[2], 'an ejected instance is not picked while another is usable');
    // Back at 11 s and failing at once: the second ejection lasts twice as long.
    failTimes(balancer, a, EJECT_AFTER, 11_001);
    assert.deepEqual(ejected.at(-1), ['0', 20_000]);
    // Back at 31 s, in rotation for a minute (six base periods): the doublings are earned back.
    failTimes(balancer, a, EJECT_AFTER, 31_001 + 60_000);
    assert.deepEqual(ejected.at(-1), ['0', 10_000]);
  });

  test('the last instance in rotation is never ejected', () => {
    const { balancer, members, ejected } = setup(2);
    failTimes(balancer, members[0]!, EJECT_AFTER, 1000);
    failTimes(balancer, members[1]!, 5 * EJECT_AFTER, 1000);
    assert.deepEqual(ejected, [['0', 10_000]]);
    const alone = setup(1);
    failTimes(alone.balancer, alone.members[0]!, 5 * EJECT_AFTER, 1000);
    assert.deepEqual(alone.ejected, []);
    assert.equal(alone.balancer.pick(), alone.members[0]);
  });

  test('a success resets the count of failures in a row', () => {
    const { balancer, members, ejected } = setup(2);
    const a = members[0]!;
    failTimes(balancer, a, EJECT_AFTER - 1, 1000);
    balancer.succeeded(a);
    failTimes(balancer, a, EJECT_AFTER - 1, 1000);
    assert.deepEqual(ejected, []);
  });
});
