import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Balancer, EJECT_AFTER, MAX_WAITING, Upstream } from '../src/runtime/image/balancer.js';

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

describe('balancer max_concurrency', () => {
  const waiter = (log: string[], name: string, b: Balancer) => {
    const w = {
      gone: false,
      wake(): void {
        w.gone = true;
        const u = b.take(null, true);
        log.push(`${name}:${u === 'wait' ? 'wait' : u === null ? 'none' : u.id}`);
        if (u !== 'wait' && u !== null) u.outstanding++;
      },
    };
    return w;
  };
  const tick = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

  test('full instances are not taken; waiters go on in order as room frees, and hear when no instance is left', async () => {
    const b = new Balancer(() => undefined, 2);
    const [a, c] = [new Upstream('a', '127.0.0.1', 1), new Upstream('c', '127.0.0.1', 2)];
    b.set([a, c]);
    for (let i = 0; i < 4; i++) {
      const u = b.take();
      assert.ok(u instanceof Upstream);
      u.outstanding++;
    }
    assert.deepEqual([a.outstanding, c.outstanding], [2, 2]);
    assert.equal(b.take(), 'wait');
    const log: string[] = [];
    const w1 = waiter(log, 'w1', b);
    const w2 = waiter(log, 'w2', b);
    const gone = waiter(log, 'gone', b);
    const w3 = waiter(log, 'w3', b);
    for (const w of [w1, w2, gone, w3]) b.enqueue(w);
    gone.gone = true;
    b.withdraw();
    assert.equal(b.waitingCount, 3, 'a waiter that gave up is not counted');
    assert.equal(b.take(), 'wait', 'a newcomer waits behind those already waiting');
    b.release(c);
    await tick();
    assert.deepEqual(log, ['w1:c']);
    b.release(a);
    b.release(a);
    await tick();
    assert.deepEqual(log, ['w1:c', 'w2:a', 'w3:a'], 'the waiter that gave up is skipped');
    assert.equal(b.waitingCount, 0);
    const w4 = waiter(log, 'w4', b);
    b.enqueue(w4);
    b.set([]);
    await tick();
    assert.deepEqual(log.at(-1), 'w4:none');
  });

  test('without a limit nothing waits', () => {
    const b = new Balancer(() => undefined);
    const u = new Upstream('a', '127.0.0.1', 1);
    b.set([u]);
    u.outstanding = 10_000;
    assert.equal(b.take(), u);
  });
});

test('max_concurrency: a full instance in rotation is waited for rather than sent around to an ejected one', async () => {
  const b = new Balancer(() => undefined, 1);
  const [a, c, d] = [new Upstream('a', '127.0.0.1', 1), new Upstream('c', '127.0.0.1', 2), new Upstream('d', '127.0.0.1', 3)];
  b.set([a, c, d]);
  c.ejectedUntil = d.ejectedUntil = performance.now() + 60_000;
  a.outstanding = 1;
  assert.equal(b.take(), 'wait');
  // With every instance out (panic mode), one with room is taken.
  a.ejectedUntil = performance.now() + 60_000;
  const u = b.take();
  assert.ok(u === c || u === d);
});

describe('balancer queue upkeep', () => {
  test('waiters that gave up do not count against the queue, however many', () => {
    const b = new Balancer(() => undefined, 1);
    const u = new Upstream('a', '127.0.0.1', 1);
    b.set([u]);
    u.outstanding = 1;
    // Three full queues' worth come and give up in turn: the dead entries never hold the bound up.
    for (let round = 0; round < 3; round++) {
      const ws = Array.from({ length: MAX_WAITING }, () => ({ gone: false, wake(): void {} }));
      for (const w of ws) assert.equal(b.enqueue(w), true);
      assert.equal(b.waitingCount, MAX_WAITING);
      assert.equal(b.enqueue({ gone: false, wake(): void {} }), false, 'past MAX_WAITING a waiter is refused');
      for (const w of ws) {
        w.gone = true;
        b.withdraw();
      }
      assert.equal(b.waitingCount, 0);
    }
  });

  test('the end of an ejection wakes waiters that the ejected instance has room for', async () => {
    const b = new Balancer(() => undefined, 1);
    const [a, c] = [new Upstream('a', '127.0.0.1', 1), new Upstream('c', '127.0.0.1', 2)];
    b.set([a, c]);
    a.outstanding = 1;
    c.ejectedUntil = performance.now() + 30;
    assert.equal(b.take(), 'wait');
    // The balancer's timer does not hold a process open (a gateway has its listener for that); this test's does.
    const keepAlive = setInterval(() => undefined, 1000);
    const got = await new Promise<string>((resolve) => {
      const w = {
        gone: false,
        wake(): void {
          w.gone = true;
          const u = b.take(null, true);
          resolve(u === 'wait' || u === null ? String(u) : u.id);
        },
      };
      b.enqueue(w);
    });
    clearInterval(keepAlive);
    assert.equal(got, 'c');
  });
});

test('max_concurrency: room that a waiting retry cannot use (it avoids that instance) goes to a newcomer', () => {
  const b = new Balancer(() => undefined, 1);
  const [a, c] = [new Upstream('a', '127.0.0.1', 1), new Upstream('c', '127.0.0.1', 2)];
  b.set([a, c]);
  c.outstanding = 1;
  // A retry off `a` waits for another instance.
  assert.equal(b.take(a), 'wait');
  b.enqueue({ gone: false, wake(): void {} });
  assert.equal(b.take(), a, 'the newcomer takes the free instance instead of queueing behind');
  a.outstanding = 1;
  assert.equal(b.take(), 'wait', 'with no room anywhere it queues');
});

describe('balancer reserve (WebSocket upgrades)', () => {
  test('counts the place at once, waits for one when full, and leaves the queue when the caller goes', async () => {
    const b = new Balancer(() => undefined, 1);
    const u = new Upstream('a', '127.0.0.1', 1);
    b.set([u]);
    const first = await b.reserve('svc@1', 10_000, new AbortController().signal);
    assert.equal(first, u);
    assert.equal(u.outstanding, 1, 'counted before it resolves');
    const gone = new AbortController();
    const abandoned = b.reserve('svc@1', 10_000, gone.signal);
    const waiting = b.reserve('svc@1', 10_000, new AbortController().signal);
    assert.equal(b.waitingCount, 2);
    gone.abort();
    await assert.rejects(abandoned, (err: any) => err.status === 499);
    assert.equal(b.waitingCount, 1);
    b.release(u);
    assert.equal(await waiting, u);
    assert.equal(u.outstanding, 1);
    assert.equal(b.waitingCount, 0);
    // A caller that went away before it asked takes no place, full or not.
    const before = new AbortController();
    before.abort();
    await assert.rejects(b.reserve('svc@1', 10_000, before.signal), (err: any) => err.status === 499);
    b.release(u);
    await assert.rejects(b.reserve('svc@1', 10_000, before.signal), (err: any) => err.status === 499);
    assert.equal(u.outstanding, 0);
    assert.equal(b.waitingCount, 0);
  });
});

test('reserve: 503 QueueFull past MAX_WAITING waiting, 503 NoInstance with none in rotation, 504 when no room comes', async () => {
  const b = new Balancer(() => undefined, 1);
  const u = new Upstream('a', '127.0.0.1', 1);
  b.set([u]);
  u.outstanding = 1;
  const waiters = Array.from({ length: MAX_WAITING }, () => ({ gone: false, wake(): void {} }));
  for (const w of waiters) b.enqueue(w);
  await assert.rejects(b.reserve('svc@1', 10_000, new AbortController().signal), (err: any) =>
    err.status === 503 && err.code === 'IG.503.QueueFull' && err.message === `svc@1: every instance has image.max_concurrency (1) requests in flight and ${MAX_WAITING} more wait; retry later`);
  for (const w of waiters) {
    w.gone = true;
    b.withdraw();
  }
  // The wait's timer does not hold a process open; this test's interval does.
  const keepAlive = setInterval(() => undefined, 1000);
  await assert.rejects(b.reserve('svc@1', 20, new AbortController().signal), (err: any) =>
    err.status === 504 && err.message === 'svc@1: no instance had room within 20 ms (limits.request_timeout_ms); each takes image.max_concurrency = 1 requests at a time');
  clearInterval(keepAlive);
  assert.equal(b.waitingCount, 0, 'the timed-out waiter left the queue');
  b.set([]);
  await assert.rejects(b.reserve('svc@1', 10_000, new AbortController().signal), (err: any) =>
    err.status === 503 && err.code === 'IG.503.NoInstance' && /^no instance of svc@1 is in rotation/.test(err.message));
});
