/**
 * A token bucket (SPEC §7.2 traffic_limit): `rate` tokens a second, holding at most `burst`.
 * The burst is a twentieth of a second's worth, so a client sending far over the limit gets
 * within a few percent of `rate` admitted, not a second's extra.
 */
export class TokenBucket {
  private tokens: number;
  private last: number;
  readonly burst: number;

  constructor(readonly rate: number, now: number = performance.now()) {
    this.burst = Math.max(1, rate / 20);
    this.tokens = this.burst;
    this.last = now;
  }

  /** Takes a token: 0 when admitted, else the seconds until one is free. */
  take(now: number = performance.now()): number {
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.last) / 1000) * this.rate);
    this.last = now;
    if (this.tokens >= 1) {
      this.tokens -= 1;
      return 0;
    }
    return (1 - this.tokens) / this.rate;
  }
}
