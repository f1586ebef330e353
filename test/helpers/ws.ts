import { createHash, randomBytes } from 'node:crypto';
import net from 'node:net';
import WebSocket from 'ws';

/**
 * Messages a connection received and nobody took yet. Collected from the moment the socket
 * exists: a frame the server sends with its 101 arrives before the caller's `await` resumes.
 */
interface Inbox { messages: unknown[]; wake: (() => void) | null }
const inboxes = new WeakMap<WebSocket, Inbox>();

/** Opens a WebSocket; an HTTP refusal of the upgrade rejects with its status and body. */
export function openWs(url: string, opts: { headers?: Record<string, string>; protocols?: string[] } = {}): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, opts.protocols ?? [], { headers: opts.headers ?? {} });
    const inbox: Inbox = { messages: [], wake: null };
    inboxes.set(ws, inbox);
    ws.on('message', (data: Buffer, binary: boolean) => {
      inbox.messages.push(binary ? data : JSON.parse(data.toString()));
      inbox.wake?.();
    });
    ws.on('close', () => inbox.wake?.());
    ws.once('open', () => resolve(ws));
    ws.once('unexpected-response', (_req, res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => reject(Object.assign(new Error(`upgrade refused with ${res.statusCode}: ${body}`), { status: res.statusCode, body: body ? JSON.parse(body) : null })));
    });
    ws.once('error', reject);
  });
}

/** The next `n` messages (from openWs's inbox), text parsed as JSON, binary kept as Buffers. */
export async function nextMessages(ws: WebSocket, n: number): Promise<any[]> {
  const inbox = inboxes.get(ws)!;
  while (inbox.messages.length < n) {
    if (ws.readyState === WebSocket.CLOSED) throw new Error(`closed after ${inbox.messages.length} of ${n} messages`);
    await new Promise<void>((resolve) => (inbox.wake = resolve));
    inbox.wake = null;
  }
  return inbox.messages.splice(0, n);
}

export function closed(ws: WebSocket): Promise<{ code: number; reason: string }> {
  return new Promise((resolve) => ws.once('close', (code, reason) => resolve({ code, reason: reason.toString() })));
}

/**
 * A client that upgrades, then sends and never reads (its socket is paused): the peer's answers
 * pile up in the kernel and then in the gateway, which must cut it off.
 */
export class NeverReader {
  private constructor(readonly socket: net.Socket) {}

  static open(port: number, path: string): Promise<NeverReader> {
    return new Promise((resolve, reject) => {
      const socket = net.connect(port, '127.0.0.1');
      const key = randomBytes(16).toString('base64');
      let head = '';
      socket.once('connect', () => socket.write(`GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`));
      const onData = (d: Buffer): void => {
        head += d.toString('latin1');
        const end = head.indexOf('\r\n\r\n');
        if (end < 0) return;
        socket.off('data', onData);
        socket.pause();
        const accept = createHash('sha1').update(key + '258EAFA5-E914-47DA-95CA-C5AB0DC85B11').digest('base64');
        if (!head.startsWith('HTTP/1.1 101') || !head.includes(accept)) return reject(new Error(`upgrade failed: ${head.slice(0, 200)}`));
        // Anything after the head belongs to frames; this client reads none of it until told.
        if (end + 4 < head.length) socket.unshift(Buffer.from(head.slice(end + 4), 'latin1'));
        resolve(new NeverReader(socket));
      };
      socket.on('data', onData);
      socket.once('error', reject);
    });
  }

  /** Writes a masked text frame; false once the connection is gone or the kernel's buffer is full. */
  send(text: string): boolean {
    if (this.socket.destroyed) return false;
    const payload = Buffer.from(text);
    const mask = randomBytes(4);
    const len = payload.length;
    const head = len < 126 ? Buffer.from([0x81, 0x80 | len]) : len < 65536 ? Buffer.from([0x81, 0x80 | 126, len >> 8, len & 0xff]) : null;
    if (!head) throw new Error('frame too large for this client');
    for (let i = 0; i < len; i++) payload[i]! ^= mask[i & 3]!;
    return this.socket.write(Buffer.concat([head, mask, payload]));
  }

  /** Starts reading, and resolves with the close code the peer sent last (null: none), once the socket ends. */
  drainToEnd(): Promise<number | null> {
    return new Promise((resolve) => {
      const chunks: Buffer[] = [];
      this.socket.on('data', (d: Buffer) => chunks.push(d));
      const done = (): void => resolve(lastCloseCode(Buffer.concat(chunks)));
      this.socket.once('end', done);
      this.socket.once('close', done);
      this.socket.once('error', () => undefined);
      this.socket.resume();
    });
  }

  destroy(): void {
    this.socket.destroy();
  }
}

/** Walks server frames (unmasked) and returns the code of the last close frame. */
function lastCloseCode(bytes: Buffer): number | null {
  let at = 0;
  let code: number | null = null;
  while (at + 2 <= bytes.length) {
    const op = bytes[at]! & 0x0f;
    let len = bytes[at + 1]! & 0x7f;
    let off = at + 2;
    if (len === 126) { len = bytes.readUInt16BE(off); off += 2; } else if (len === 127) { len = Number(bytes.readBigUInt64BE(off)); off += 8; }
    if (off + len > bytes.length) break;
    if (op === 0x8 && len >= 2) code = bytes.readUInt16BE(off);
    at = off + len;
  }
  return code;
}
