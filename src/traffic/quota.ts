import { GatewayError } from '../errors.js';

/**
 * Requests per minute per key (SPEC §7.2 per-domain and per-user quotas): a fixed window per
 * calendar minute, so a client knows when its quota comes back (Retry-After).
 */
export class MinuteQuota {
  private window = -1;
  private readonly counts = new Map<string, number>();

  constructor(readonly limit: number, private readonly what: 'domain' | 'user') {}

  /** Counts one request for `key`; throws 429 when the key is over its quota this minute. */
  take(key: string, nowMs: number = Date.now()): void {
    const window = Math.floor(nowMs / 60_000);
    if (window !== this.window) {
      this.window = window;
      this.counts.clear();
    }
    const n = (this.counts.get(key) ?? 0) + 1;
    this.counts.set(key, n);
    if (n > this.limit) {
      const after = Math.max(1, Math.ceil(((window + 1) * 60_000 - nowMs) / 1000));
      throw new GatewayError(429, 'Quota', `${this.what} '${key}' is over its quota of ${this.limit} requests per minute; retry after ${after} s`, { 'Retry-After': String(after) });
    }
  }
}
