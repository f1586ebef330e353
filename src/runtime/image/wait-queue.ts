/** A request waiting for room on an instance (`image.max_concurrency`). */
export interface Waiter {
  /** It stopped waiting (answered, gone, over its body limit) and said so with `withdraw`. */
  readonly gone: boolean;
  /** There is room now, or no instance at all: try again. */
  wake(): void;
}

/**
 * Requests of one version waiting for room, oldest first. A waiter that gives up is only counted
 * out at once (`withdraw`); its entry goes when the queue next passes it or compacts, so giving
 * up costs nothing, and dead entries cannot hold the count (and new requests' 503) up.
 */
export class WaitQueue {
  private entries: (Waiter | null)[] = [];
  private head = 0;
  private live = 0;

  /** Waiters still waiting. */
  get size(): number {
    return this.live;
  }

  push(w: Waiter): void {
    this.entries.push(w);
    this.live++;
  }

  /** A waiter gave up: it is no longer counted. */
  withdraw(): void {
    this.live--;
    if (this.entries.length - this.head > 2 * this.live + 64) this.compact();
  }

  /** The oldest waiter still waiting, taken off the queue; null when there is none. */
  shift(): Waiter | null {
    while (this.head < this.entries.length) {
      const w = this.entries[this.head]!;
      this.entries[this.head++] = null;
      if (w.gone) continue;
      this.live--;
      if (this.head > 1024) this.compact();
      return w;
    }
    this.entries = [];
    this.head = 0;
    return null;
  }

  private compact(): void {
    this.entries = this.entries.slice(this.head).filter((w) => w !== null && !w.gone);
    this.head = 0;
  }
}
