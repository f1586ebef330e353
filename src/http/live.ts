/** A call the front tracks from admission until it is answered (ONNX inference or a proxied request). */
export interface LiveCall {
  readonly startedAt: number;
  /** The request deadline passed: answer 504 (or close, when part of the answer is out). */
  expire(ms: number): void;
  /** Links of the list holding the call; only LiveList touches them. */
  prevLive: LiveCall | null;
  nextLive: LiveCall | null;
}

/**
 * The calls in flight, in arrival order, as an intrusive doubly linked list: admitting and
 * settling a call is a few pointer writes, with no hashing and no allocation (a Set showed in the
 * request-path profile), and the oldest calls, the first to expire, are at the head.
 */
export class LiveList {
  private head: LiveCall | null = null;
  private tail: LiveCall | null = null;
  size = 0;

  add(call: LiveCall): void {
    call.prevLive = this.tail;
    call.nextLive = null;
    if (this.tail) this.tail.nextLive = call;
    else this.head = call;
    this.tail = call;
    this.size++;
  }

  /** Removes the call; false when it was not in the list (settled already). */
  remove(call: LiveCall): boolean {
    if (call.prevLive === null && this.head !== call) return false;
    if (call.prevLive) call.prevLive.nextLive = call.nextLive;
    else this.head = call.nextLive;
    if (call.nextLive) call.nextLive.prevLive = call.prevLive;
    else this.tail = call.prevLive;
    call.prevLive = call.nextLive = null;
    this.size--;
    return true;
  }

  /**
   * Calls started at or before `deadline`, oldest first; each may remove itself, or others (a
   * WebSocket closing settles all its calls), while visited.
   */
  *startedBy(deadline: number): Generator<LiveCall> {
    let call = this.head;
    let visits = this.size;
    while (call && call.startedAt <= deadline && visits-- > 0) {
      const next = call.nextLive;
      yield call;
      // The next one left the list meanwhile: go on from the oldest still here.
      call = next !== null && (next.prevLive !== null || this.head === next) ? next : this.head;
    }
  }
}
