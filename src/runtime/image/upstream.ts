import net from 'node:net';

/**
 * A lean HTTP/1.1 client for the proxy path (SPEC §8.2): keep-alive connections pooled per
 * instance, one request at a time per connection, the response parsed in place and handed to the
 * exchange piece by piece. undici's Pool reached 0.4 × nginx here; this does only what a reverse
 * proxy needs (no redirects, no cookies, no decompression, no pipelining), with no per-chunk
 * promises or streams between the socket and the client's response.
 */

/** Why an exchange failed, which decides whether it may be retried elsewhere. */
export type UpstreamFailure =
  /** No connection could be made: nothing was sent. */
  | 'connect'
  /** The connection closed before any byte of a response: on a reused connection, the server closed it while idle. */
  | 'closed-before-response'
  /** The response was cut off, or was not HTTP. */
  | 'reset'
  | 'protocol';

/** The side of a request that receives its response (the proxy call). */
export interface Exchange {
  /** The response head; shared with other exchanges of the pool (read-only). */
  onHead(head: ResponseHead): void;
  /** A piece of the body, valid only during the call (copy what is kept); the last call has `last` set (its chunk may be empty). */
  onBody(chunk: Buffer, last: boolean): void;
  onFailure(kind: UpstreamFailure, message: string, reused: boolean): void;
  /** The whole request went out: a connection is reused only after both messages are complete. */
  readonly requestSent: boolean;
  /** The request body may be written again after a write filled the socket's buffer. */
  onDrain(): void;
}

/** Headers that describe one hop, not the message (RFC 9110 §7.6.1), plus those the proxy sets itself. */
export const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'proxy-authenticate', 'proxy-authorization', 'te', 'trailer', 'transfer-encoding', 'upgrade']);
/** Response headers the gateway writes itself (uWebSockets.js adds Date and the length). */
const SET_BY_GATEWAY = new Set(['content-length', 'date', 'x-request-id', 'x-model-version']);

const CRLFCRLF = Buffer.from('\r\n\r\n');
/**
 * Every upstream socket reads into this one buffer (net's `onread`): no Buffer per read and no
 * Readable stream between the socket and the parser. What the parser hands on is valid only until
 * it returns, so anything kept past a callback is copied.
 */
const READ_BUFFER = Buffer.allocUnsafe(64 * 1024);
const MAX_HEAD_BYTES = 64 * 1024;
const EMPTY = Buffer.alloc(0);

const enum State { Idle, Head, Length, Chunked, UntilClose }
const enum Chunk { Size, Data, DataEnd, Trailer }

const STRAY_BREAK = /[\r\n\0]/;

/** A parsed response head: what the exchange forwards, and how the body is framed. */
export interface ResponseHead {
  status: number;
  reason: string;
  /** Names (lower case) and values, alternating; hop-by-hop, framing and gateway-set headers removed. */
  headers: string[];
  /** The same headers as `name: value\r\n` lines, written to the client in one call. */
  block: string;
  /** Content-Length, or -1 when unknown (chunked, or until the connection closes). */
  length: number;
  chunked: boolean;
  keepAlive: boolean;
  /** 204, 304 and 1xx carry no body whatever their headers say. */
  bodiless: boolean;
  /** Memo of the proxy: the client's status line and headers, made from these once. */
  clientHead?: string;
}

/** Parses a response head (without its final CRLFCRLF); throws on anything that is not HTTP/1.x. */
export function parseHead(text: string): ResponseHead {
  // A lone CR or LF (or a NUL) inside a line would be passed on as a line break of the client's
  // answer: a response split by the instance. Such a head is not HTTP.
  if (STRAY_BREAK.test(text.replaceAll('\r\n', ''))) throw new Error('a bare CR, LF or NUL inside the response head');
  const lines = text.split('\r\n');
  const statusLine = lines[0]!;
  if (!statusLine.startsWith('HTTP/1.')) throw new Error(`status line '${statusLine.slice(0, 40)}'`);
  const status = Number(statusLine.slice(9, 12));
  if (!(status >= 100 && status <= 999)) throw new Error(`status line '${statusLine.slice(0, 40)}'`);
  const reason = statusLine.slice(13);
  let keepAlive = statusLine.charCodeAt(7) === 49; // HTTP/1.1 keeps the connection by default, 1.0 does not
  let length = -1;
  let chunked = false;
  let dropped: string[] | null = null;
  let headers: string[] = [];
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i]!;
    const colon = line.indexOf(':');
    if (colon <= 0) throw new Error(`header line '${line.slice(0, 40)}'`);
    const name = line.slice(0, colon).trim().toLowerCase();
    const value = line.slice(colon + 1).trim();
    if (name === 'content-length') {
      length = Number(value);
      if (!Number.isSafeInteger(length) || length < 0) throw new Error(`content-length '${value}'`);
    } else if (name === 'transfer-encoding') {
      chunked = value.toLowerCase().endsWith('chunked');
    } else if (name === 'connection') {
      const tokens = value.toLowerCase().split(',').map((t) => t.trim());
      if (tokens.includes('close')) keepAlive = false;
      else if (tokens.includes('keep-alive')) keepAlive = true;
      dropped = tokens;
    }
    if (HOP_BY_HOP.has(name) || SET_BY_GATEWAY.has(name)) continue;
    headers.push(name, value);
  }
  if (dropped) {
    // Headers the upstream named in Connection are for this hop only.
    const hop = dropped;
    headers = headers.filter((_, i) => !hop.includes(headers[i - (i % 2)]!));
  }
  const bodiless = status === 204 || status === 304 || (status >= 100 && status < 200);
  if (bodiless) length = 0;
  else if (chunked) length = -1;
  let block = '';
  for (let i = 0; i < headers.length; i += 2) block += `${headers[i]}: ${headers[i + 1]}\r\n`;
  return { status, reason, headers, block, length, chunked, keepAlive, bodiless };
}

/** `host:port`, with an IPv6 host in brackets (a Host header, a URL's authority). */
export const hostPort = (i: { host: string; port: number }): string => (i.host.includes(':') ? `[${i.host}]:${i.port}` : `${i.host}:${i.port}`);

export class UpstreamConnection {
  readonly socket: net.Socket;
  exchange: Exchange | null = null;
  /** Responses completed on this connection: a connection that served one before is "reused". */
  served = 0;
  idleSince = 0;
  private connected = false;
  private closed = false;
  private state = State.Idle;
  private keepAlive = true;
  private partial: Buffer | null = null;
  private remaining = 0;
  private chunkState = Chunk.Size;
  private sizeLine = '';
  private responded = false;

  constructor(private readonly pool: UpstreamPool) {
    const socket = (this.socket = net.connect({
      host: pool.host,
      port: pool.port,
      noDelay: true,
      onread: { buffer: READ_BUFFER, callback: (n: number, buf: Uint8Array) => {
          this.onData((buf as Buffer).subarray(0, n));
          return true;
        } },
    }));
    socket.on('connect', () => (this.connected = true));
    socket.on('drain', () => this.exchange?.onDrain());
    socket.on('error', (err: NodeJS.ErrnoException) => this.onClose(err.code ?? err.message));
    socket.on('close', () => this.onClose(null));
  }

  /** Starts a request: the exchange receives the response. */
  begin(exchange: Exchange): void {
    this.exchange = exchange;
    this.state = State.Head;
    this.responded = false;
    this.keepAlive = true;
  }

  /** Writes part of the request; false: the socket's buffer is full, wait for onDrain. */
  write(data: Buffer): boolean {
    return this.socket.write(data);
  }

  pause(): void {
    this.socket.pause();
  }

  resume(): void {
    this.socket.resume();
  }

  /** The exchange gave up (client gone, timeout): the connection is mid-message, so it is closed. */
  abandon(): void {
    this.exchange = null;
    this.socket.destroy();
  }

  private onData(d: Buffer): void {
    try {
      this.parse(d);
    } catch (err) {
      const ex = this.exchange;
      this.exchange = null;
      this.socket.destroy();
      ex?.onFailure('protocol', `the upstream's response is not valid HTTP/1.1: ${(err as Error).message}`, this.served > 0);
    }
  }

  private parse(d: Buffer): void {
    while (d.length > 0) {
      const ex = this.exchange;
      if (!ex || this.state === State.Idle) {
        // Bytes nobody asked for (a server answering twice): the connection cannot be trusted.
        this.socket.destroy();
        return;
      }
      this.responded = true;
      switch (this.state) {
        case State.Head: {
          const buf = this.partial ? Buffer.concat([this.partial, d]) : d;
          const end = buf.indexOf(CRLFCRLF);
          if (end < 0) {
            if (buf.length > MAX_HEAD_BYTES) throw new Error(`response head over ${MAX_HEAD_BYTES} bytes`);
            // Kept past this read: out of the shared read buffer.
            this.partial = buf === d ? Buffer.from(d) : buf;
            return;
          }
          this.partial = null;
          d = buf.subarray(end + 4);
          this.head(buf.toString('latin1', 0, end), ex);
          break;
        }
        case State.Length: {
          const n = Math.min(this.remaining, d.length);
          this.remaining -= n;
          const piece = n === d.length ? d : d.subarray(0, n);
          d = n === d.length ? EMPTY : d.subarray(n);
          if (this.remaining === 0) this.finish(piece);
          else ex.onBody(piece, false);
          break;
        }
        case State.Chunked:
          d = this.chunked(d, ex);
          break;
        case State.UntilClose:
          ex.onBody(d, false);
          return;
      }
    }
  }

  private head(text: string, ex: Exchange): void {
    // A model server answers with the same head again and again (until its Date ticks): reuse the parse.
    const pool = this.pool;
    let head = pool.lastHeadText === text ? pool.lastHead : null;
    if (!head) {
      head = parseHead(text);
      if (head.status < 200 && head.status !== 101) return; // 100 Continue and other interim answers precede the real one
      pool.lastHeadText = text;
      pool.lastHead = head;
    }
    this.keepAlive = head.keepAlive;
    ex.onHead(head);
    if (this.exchange !== ex) return;
    if (head.bodiless || head.length === 0) {
      this.finish(EMPTY);
    } else if (head.chunked) {
      this.state = State.Chunked;
      this.chunkState = Chunk.Size;
      this.sizeLine = '';
    } else if (head.length > 0) {
      this.state = State.Length;
      this.remaining = head.length;
    } else {
      this.state = State.UntilClose;
      this.keepAlive = false;
    }
  }

  /** Transfer-Encoding: chunked, decoded; the client side re-frames it. Returns what follows the message. */
  private chunked(d: Buffer, ex: Exchange): Buffer {
    let at = 0;
    while (at < d.length) {
      switch (this.chunkState) {
        case Chunk.Size:
        case Chunk.Trailer: {
          const nl = d.indexOf(10, at);
          const part = d.toString('latin1', at, nl < 0 ? d.length : nl);
          if (nl < 0) {
            this.sizeLine += part;
            if (this.sizeLine.length > 4096) throw new Error('chunk size line too long');
            return EMPTY;
          }
          const line = (this.sizeLine + part).replace(/\r$/, '');
          this.sizeLine = '';
          at = nl + 1;
          if (this.chunkState === Chunk.Trailer) {
            if (line === '') {
              this.finish(EMPTY);
              return d.subarray(at);
            }
            continue; // trailers are dropped
          }
          const size = parseInt(line.split(';', 1)[0]!.trim(), 16);
          if (!Number.isFinite(size) || size < 0) throw new Error(`chunk size '${line.slice(0, 20)}'`);
          if (size === 0) this.chunkState = Chunk.Trailer;
          else {
            this.remaining = size;
            this.chunkState = Chunk.Data;
          }
          break;
        }
        case Chunk.Data: {
          const n = Math.min(this.remaining, d.length - at);
          ex.onBody(d.subarray(at, at + n), false);
          if (this.exchange !== ex) return EMPTY;
          at += n;
          this.remaining -= n;
          if (this.remaining === 0) {
            this.chunkState = Chunk.DataEnd;
            this.remaining = 2;
          }
          break;
        }
        case Chunk.DataEnd: {
          // The CRLF after a chunk's data, possibly split across reads.
          const n = Math.min(this.remaining, d.length - at);
          at += n;
          this.remaining -= n;
          if (this.remaining === 0) this.chunkState = Chunk.Size;
          break;
        }
      }
    }
    return EMPTY;
  }

  private finish(last: Buffer): void {
    const ex = this.exchange!;
    this.exchange = null;
    this.state = State.Idle;
    this.served++;
    if (this.keepAlive && ex.requestSent) this.pool.release(this);
    else this.socket.destroy();
    ex.onBody(last, true);
  }

  private onClose(reason: string | null): void {
    if (this.closed) return;
    this.closed = true;
    this.socket.destroy();
    this.pool.forget(this);
    const ex = this.exchange;
    if (!ex) return;
    this.exchange = null;
    if (this.state === State.UntilClose && reason === null) {
      ex.onBody(EMPTY, true);
      return;
    }
    const why = reason ?? 'the connection closed';
    if (!this.connected) ex.onFailure('connect', `cannot connect to ${this.pool.host}:${this.pool.port} (${why})`, false);
    else if (!this.responded) ex.onFailure('closed-before-response', `${this.pool.host}:${this.pool.port} closed the connection before answering (${why})`, this.served > 0);
    else ex.onFailure('reset', `${this.pool.host}:${this.pool.port} cut the response off (${why})`, this.served > 0);
  }
}

/** Idle keep-alive connections are closed before common server timeouts (Node's is 5 s) close them under us. */
const IDLE_MS = 4000;
const MAX_IDLE = 512;

/** Keep-alive connections to one upstream address. */
export class UpstreamPool {
  private idle: UpstreamConnection[] = [];
  private closed = false;
  private readonly sweeper: NodeJS.Timeout;
  /** The Host header requests carry. */
  readonly hostHeader: string;
  /** The last response head parsed on this pool's connections, and its text. */
  lastHeadText = '';
  lastHead: ResponseHead | null = null;

  constructor(readonly host: string, readonly port: number) {
    this.hostHeader = hostPort({ host, port });
    this.sweeper = setInterval(() => this.sweep(), 1000);
    this.sweeper.unref();
  }

  /** An idle connection, or a new one (writes wait in the socket until it connects). */
  acquire(): UpstreamConnection {
    return this.idle.pop() ?? new UpstreamConnection(this);
  }

  release(conn: UpstreamConnection): void {
    if (this.closed || this.idle.length >= MAX_IDLE) {
      conn.socket.destroy();
      return;
    }
    conn.idleSince = performance.now();
    this.idle.push(conn);
  }

  /** A connection closed: it is no longer offered. */
  forget(conn: UpstreamConnection): void {
    const i = this.idle.indexOf(conn);
    if (i >= 0) this.idle.splice(i, 1);
  }

  private sweep(): void {
    const before = performance.now() - IDLE_MS;
    // Oldest first: released connections are pushed, so the stale ones sit at the bottom.
    let n = 0;
    while (n < this.idle.length && this.idle[n]!.idleSince < before) n++;
    if (n === 0) return;
    for (const c of this.idle.splice(0, n)) c.socket.destroy();
  }

  close(): void {
    this.closed = true;
    clearInterval(this.sweeper);
    for (const c of this.idle.splice(0)) c.socket.destroy();
  }
}
