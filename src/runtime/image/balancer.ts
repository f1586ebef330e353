import { GatewayError } from '../../errors.js';
import { UpstreamPool } from './upstream.js';
import { WaitQueue, type Waiter } from './wait-queue.js';

/** One upstream instance as the data plane sees it: an address, its pool and its load. */
export class Upstream {
  readonly pool: UpstreamPool;
  /** Requests sent and not yet answered: the balancer's load signal. */
  outstanding = 0;
  consecutiveFailures = 0;
  /** performance.now() until which outlier detection keeps it out of rotation. */
  ejectedUntil = 0;
  ejections = 0;

  constructor(readonly id: string, readonly host: string, readonly port: number) {
    this.pool = new UpstreamPool(host, port);
  }
}

/** Requests of one version that may wait for room on its instances (image.max_concurrency) before 503. */
export const MAX_WAITING = 1024;

export const noInstanceError = (label: string): GatewayError =>
  new GatewayError(503, 'NoInstance', `no instance of ${label} is in rotation (failing health checks or restarting); retry shortly`, { 'Retry-After': '1' });

export const queueFullError = (label: string, cap: number): GatewayError =>
  new GatewayError(503, 'QueueFull', `${label}: every instance has image.max_concurrency (${cap}) requests in flight and ${MAX_WAITING} more wait; retry later`, { 'Retry-After': '1' });

export const noRoomError = (label: string, ms: number, cap: number): GatewayError =>
  new GatewayError(504, 'UpstreamTimeout', `${label}: no instance had room within ${ms} ms (limits.request_timeout_ms); each takes image.max_concurrency = ${cap} requests at a time`);

/** Gateway failures in a row that eject an instance (Envoy's consecutive_gateway_failure default is 5). */
export const EJECT_AFTER = 5;
const EJECT_BASE_MS = 10_000;
const EJECT_MAX_MS = 300_000;

/**
 * Least outstanding requests by the power of two choices (SPEC §7.4): two instances drawn at
 * random, the less loaded one wins; no global scan, and no herd on the single least-loaded
 * instance. Instances failing in a row are ejected for a time that doubles each ejection and
 * loses one doubling for each 10 s back in rotation; the last instance in rotation is never ejected.
 */
export class Balancer {
  private members: Upstream[] = [];
  /** Requests waiting for room on an instance (max_concurrency). */
  private readonly queue = new WaitQueue();
  private wakeScheduled = false;
  private readonly wakeBound = (): void => this.wake();
  /** Wakes the queue when an ejection ends, for waiters that an ejected instance's room could serve. */
  private ejectionTimer: NodeJS.Timeout | null = null;

  constructor(
    private readonly onEject: (u: Upstream, ms: number) => void,
    /** Requests one instance takes at a time (`image.max_concurrency`); 0: no limit. */
    readonly maxConcurrency = 0,
  ) {}

  /** The instances in rotation (healthy, not draining); the control plane replaces the list whole. */
  set(members: Upstream[]): void {
    this.members = members;
    // New room, or no instance at all: waiting requests go on (or hear there is none).
    this.scheduleWake();
  }

  /** Requests waiting for room on an instance. */
  get waitingCount(): number {
    return this.queue.size;
  }

  /**
   * An instance for a request that counts against max_concurrency: as `pick`, among instances with
   * room; 'wait' when every instance in rotation is full (the caller `enqueue`s), null when none is
   * in rotation. `queued`: the caller is a waiter that was woken.
   */
  take(avoid: Upstream | null = null, queued = false): Upstream | 'wait' | null {
    const cap = this.maxConcurrency;
    // First come, first served: a newcomer waits behind those waiting while there is no room, or
    // while room has just come free for them (`queued`: a woken waiter). Room they cannot use (a
    // retry avoiding that instance) is the newcomer's.
    if (cap > 0 && !queued && this.queue.size > 0 && this.members.length > 0 && (this.wakeScheduled || !this.withRoom(null))) return 'wait';
    const u = this.pick(avoid);
    if (!u || cap <= 0 || u.outstanding < cap) return u;
    // The less loaded of the two drawn is full; another may have room.
    return this.withRoom(avoid) ?? 'wait';
  }

  /**
   * The least loaded instance with room, other than `avoid`. An ejected instance is not a way
   * round a full one, unless every instance is ejected (panic mode).
   */
  private withRoom(avoid: Upstream | null): Upstream | null {
    const cap = this.maxConcurrency;
    const now = performance.now();
    let healthy: Upstream | null = null;
    let any: Upstream | null = null;
    let allEjected = true;
    for (const m of this.members) {
      if (m === avoid) continue;
      const ejected = m.ejectedUntil > now;
      if (!ejected) allEjected = false;
      if (m.outstanding >= cap) continue;
      if (!ejected && (!healthy || m.outstanding < healthy.outstanding)) healthy = m;
      if (!any || m.outstanding < any.outstanding) any = m;
    }
    return healthy ?? (allEjected ? any : null);
  }

  /**
   * `take` for a caller that can wait on a promise (a WebSocket upgrade): an instance with the
   * request already counted on it (`release` it when done), after waiting up to `timeoutMs` for
   * room; rejects with 503 or 504 as a proxied request would be answered, or when `signal` aborts.
   */
  reserve(label: string, timeoutMs: number, signal: AbortSignal): Promise<Upstream> {
    const goneError = (): GatewayError => new GatewayError(499, 'ClientGone', `the client went away while waiting for room on ${label}`);
    // An abort listener added after the abort never fires: a caller gone already takes no place.
    if (signal.aborted) return Promise.reject(goneError());
    const first = this.take();
    if (first === null) return Promise.reject(noInstanceError(label));
    if (first !== 'wait') {
      first.outstanding++;
      return Promise.resolve(first);
    }
    return new Promise((resolve, reject) => {
      const done = (): void => {
        w.gone = true;
        clearTimeout(timer);
        signal.removeEventListener('abort', onAbort);
      };
      const w = {
        gone: false,
        wake: (): void => {
          const u = this.take(null, true);
          if (u === 'wait') return this.queue.push(w);
          done();
          if (!u) return reject(noInstanceError(label));
          // Counted before any other waiter is woken to the same room.
          u.outstanding++;
          resolve(u);
        },
      };
      const giveUp = (err: GatewayError): void => {
        if (w.gone) return;
        done();
        this.withdraw();
        reject(err);
      };
      // Woken no sooner than a microtask from now, so the timer and listener below exist by then.
      if (!this.enqueue(w)) return reject(queueFullError(label, this.maxConcurrency));
      const onAbort = (): void => giveUp(goneError());
      const timer = setTimeout(() => giveUp(noRoomError(label, timeoutMs, this.maxConcurrency)), timeoutMs);
      timer.unref();
      signal.addEventListener('abort', onAbort, { once: true });
    });
  }

  /**
   * Waits for room; `wake` runs when an instance has some (or the rotation changed), never from
   * inside this call. False, and not queued, when MAX_WAITING wait already (the caller answers 503).
   */
  enqueue(w: Waiter): boolean {
    if (this.queue.size >= MAX_WAITING) return false;
    this.queue.push(w);
    this.armEjectionWake();
    return true;
  }

  /** A waiter gave up (answered, gone, over its body limit). */
  withdraw(): void {
    this.queue.withdraw();
    this.scheduleWake();
  }

  /** Whether `u` is in rotation and has room for one more request. */
  hasRoom(u: Upstream): boolean {
    return this.members.includes(u) && (this.maxConcurrency <= 0 || u.outstanding < this.maxConcurrency);
  }

  /** A request counted by `take` is done with its instance. */
  release(u: Upstream): void {
    u.outstanding--;
    if (this.queue.size > 0) this.scheduleWake();
  }

  private scheduleWake(): void {
    if (this.wakeScheduled || this.queue.size === 0) return;
    this.wakeScheduled = true;
    // Not from inside the release: that runs in the middle of a connection's parse.
    queueMicrotask(this.wakeBound);
  }

  private wake(): void {
    this.wakeScheduled = false;
    // Only those waiting now: one woken to no room (its only room was the instance it avoids) queues again, behind.
    for (let n = this.queue.size; n > 0; n--) {
      if (this.members.length > 0 && !this.withRoom(null)) break;
      const w = this.queue.shift();
      if (!w) break;
      w.wake();
    }
    this.armEjectionWake();
  }

  /** With requests waiting and an instance ejected, the end of its ejection may give them room. */
  private armEjectionWake(): void {
    if (this.ejectionTimer || this.queue.size === 0) return;
    const now = performance.now();
    let soonest = Infinity;
    for (const m of this.members) if (m.ejectedUntil > now) soonest = Math.min(soonest, m.ejectedUntil);
    if (soonest === Infinity) return;
    this.ejectionTimer = setTimeout(() => {
      this.ejectionTimer = null;
      this.scheduleWake();
      this.armEjectionWake();
    }, soonest - now + 1);
    this.ejectionTimer.unref();
  }

  get size(): number {
    return this.members.length;
  }

  /** An instance for a request, other than `avoid` where there is another; null when none is in rotation. */
  pick(avoid: Upstream | null = null): Upstream | null {
    const m = this.members;
    const n = m.length;
    if (n === 0) return null;
    if (n === 1) return m[0] === avoid ? null : m[0]!;
    const now = performance.now();
    const i = (Math.random() * n) | 0;
    let j = (Math.random() * (n - 1)) | 0;
    if (j >= i) j++;
    const a = usable(m[i]!, avoid, now) ? m[i]! : null;
    const b = usable(m[j]!, avoid, now) ? m[j]! : null;
    if (a && b) return a.outstanding <= b.outstanding ? a : b;
    if (a || b) return a ?? b;
    // Both draws unusable: the least loaded usable one; with every instance ejected, any (Envoy's panic mode).
    let best: Upstream | null = null;
    for (const u of m) if (usable(u, avoid, now) && (!best || u.outstanding < best.outstanding)) best = u;
    return best ?? m.find((u) => u !== avoid) ?? null;
  }

  succeeded(u: Upstream): void {
    u.consecutiveFailures = 0;
  }

  failed(u: Upstream, now = performance.now()): void {
    // Failures while ejected (requests sent before, or in panic mode) say nothing new: without
    // this a dead instance was ejected again on every fifth failure, its time doubling to the
    // maximum within milliseconds.
    if (u.ejectedUntil > now) return;
    if (++u.consecutiveFailures < EJECT_AFTER) return;
    u.consecutiveFailures = 0;
    // The last instance in rotation is not ejected: requests would go to it anyway (panic mode).
    if (!this.members.some((o) => o !== u && o.ejectedUntil <= now)) return;
    // As Envoy does, time back in rotation earns the doublings back: one per base period since
    // the last ejection ended.
    if (u.ejections > 0) u.ejections = Math.max(0, u.ejections - Math.floor((now - u.ejectedUntil) / EJECT_BASE_MS));
    const ms = Math.min(EJECT_MAX_MS, EJECT_BASE_MS * 2 ** u.ejections);
    u.ejections++;
    u.ejectedUntil = now + ms;
    this.onEject(u, ms);
  }
}

const usable = (u: Upstream, avoid: Upstream | null, now: number): boolean => u !== avoid && u.ejectedUntil <= now;
