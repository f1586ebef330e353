/** Output kept per instance: enough to see why it failed, bounded. */
const LOG_BYTES = 64 * 1024;

/** The tail of a stream of output, bounded by bytes. */
export class OutputTail {
  private parts: string[] = [];
  private size = 0;

  push(s: string): void {
    this.parts.push(s);
    this.size += s.length;
    while (this.size > LOG_BYTES && this.parts.length > 1) this.size -= this.parts.shift()!.length;
  }

  text(): string {
    const all = this.parts.join('');
    return all.length > LOG_BYTES ? all.slice(-LOG_BYTES) : all;
  }

  /** The last non-empty line, for event messages. */
  lastLine(): string {
    const lines = this.text().trimEnd().split('\n');
    return (lines[lines.length - 1] ?? '').slice(0, 300);
  }
}

/** The last lines of an instance's output, for an event saying why it failed: `; its last output:\n…`, or '' when it wrote nothing. */
export function lastOutput(text: string): string {
  const last = text.trimEnd().split('\n').slice(-5).join('\n').slice(-800);
  return last ? `; its last output:\n${last}` : '';
}
