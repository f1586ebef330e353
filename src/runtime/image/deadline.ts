import { performance } from 'node:perf_hooks';

/**
 * A timeout for a check whose answer arrives as I/O (a health probe, a health command's exit)
 * that counts only time the gateway could have read the answer in. While its event loop is
 * blocked (a huge body decoding, say) the check cannot progress: its connection may not even be
 * made yet, or the answer waits unread in the kernel. So the time is counted in steps, and a step
 * that comes late counts as two steps, not as the stall; and the verdict waits for that turn's
 * I/O (setImmediate runs after it), where an answer that came meanwhile is read first. An
 * instance is not failed for the gateway's own stall. Returns the cancel.
 */
export function deadline(ms: number, expire: () => void): () => void {
  const step = Math.max(5, Math.min(100, ms / 4));
  let counted = 0;
  let last = performance.now();
  let immediate: NodeJS.Immediate | null = null;
  const tick = (): void => {
    const now = performance.now();
    counted += Math.min(now - last, 2 * step);
    last = now;
    if (counted >= ms) immediate = setImmediate(expire);
    else timer = setTimeout(tick, step);
  };
  let timer = setTimeout(tick, step);
  return () => {
    clearTimeout(timer);
    if (immediate) clearImmediate(immediate);
  };
}
