import { performance } from 'node:perf_hooks';
import type { HttpRequest, HttpResponse } from 'uWebSockets.js';
import type { Principal } from '../auth/tokens.js';
import { versionAcquired, type Service, type ServiceVersion } from '../control/services.js';
import { asGatewayError, GatewayError } from '../errors.js';
import { noInstanceError, noRoomError, queueFullError, type Upstream } from '../runtime/image/balancer.js';
import type { ImageRunner } from '../runtime/image/runner.js';
import { HOP_BY_HOP, type Exchange, type ResponseHead, type UpstreamConnection, type UpstreamFailure } from '../runtime/image/upstream.js';
import { errorReply, statusLine, writeReply } from './respond.js';
import type { LiveCall } from './live.js';
import { BodyCapture } from '../telemetry/inference-log.js';

/** What the proxy needs from the inference front (the same admission, routing and bookkeeping as ONNX calls). */
export interface ProxyHost {
  readonly maxBodyBytes: number;
  route(service: Service, call: { principal: Principal | null; ruleHeaders: Record<string, string> | null; setting: [string, string] | null }): ServiceVersion;
  settle(call: ProxyCall): void;
  unrouted(status: number): void;
  log(err: unknown): void;
}

/** The request line and headers for the upstream, captured while uWebSockets.js' request is alive. */
export interface UpstreamRequest {
  /** `METHOD /path?query HTTP/1.1\r\n`: the path and query on the instance. */
  requestLine: string;
  /** Forwarded headers, each `name: value\r\n`. */
  headers: string;
  /** The client's Content-Length, or -1: the body is sent chunked. */
  contentLength: number;
  /** The client's Content-Type ('' if none), for the inference log. */
  contentType: string;
}

/** Request headers not forwarded: hop-by-hop, framing (re-done for the upstream), and those the gateway sets. */
const NOT_FORWARDED = new Set([...HOP_BY_HOP, 'host', 'content-length', 'expect', 'x-request-id']);
/** Credentials the gateway consumed: a token service's tokens are not handed to the model's server. */
const CREDENTIALS = new Set(['x-auth-token', 'authorization']);

/**
 * Captures the upstream request from the client's in one pass over its headers: `apiPath` is the
 * path after `/v1/infers/{service}` (ModelArts forwards it to the container), '/' for the other routes.
 */
export function upstreamRequest(req: HttpRequest, apiPath: string, dropCredentials: boolean): UpstreamRequest {
  let headers = '';
  let contentLength = 0;
  let chunked = false;
  let connection = '';
  let contentType = '';
  req.forEach((name, value) => {
    if (name === 'content-length') contentLength = Number(value);
    else if (name === 'content-type') contentType = value;
    else if (name === 'transfer-encoding') chunked = true;
    else if (name === 'connection') connection = value;
    if (NOT_FORWARDED.has(name) || (dropCredentials && CREDENTIALS.has(name))) return;
    headers += `${name}: ${value}\r\n`;
  });
  // Headers the client named in Connection are for the hop to the gateway only (RFC 9110 §7.6.1).
  if (connection && connection !== 'keep-alive' && connection !== 'close') {
    const named = new Set(connection.toLowerCase().split(',').map((t) => t.trim()));
    headers = headers.split('\r\n').filter((line) => line && !named.has(line.slice(0, line.indexOf(':')))).map((line) => `${line}\r\n`).join('');
  }
  const query = req.getQuery();
  return {
    requestLine: `${req.getCaseSensitiveMethod()} ${query ? `${apiPath}?${query}` : apiPath} HTTP/1.1\r\n`,
    headers,
    contentLength: chunked ? -1 : contentLength,
    contentType,
  };
}

const LAST_CHUNK = Buffer.from('0\r\n\r\n');
const CRLF = Buffer.from('\r\n');

/**
 * One request to an Image model (SPEC §8.2): the body is streamed to an instance the balancer
 * picks and the answer streamed back, with backpressure both ways. What was sent is kept until
 * the answer starts, so a request that could not be delivered is sent once more elsewhere.
 */
export class ProxyCall implements Exchange, LiveCall {
  prevLive: LiveCall | null = null;
  nextLive: LiveCall | null = null;
  cancelled = false;
  version: ServiceVersion | null = null;
  principal: Principal | null = null;
  pendingAuth: Promise<Principal> | null = null;
  setting: [string, string] | null = null;
  private upstream: Upstream | null = null;
  private conn: UpstreamConnection | null = null;
  private dispatched = false;
  private retried = false;
  /** The framed body so far, kept for a retry until the response starts (null after). */
  private sent: Buffer[] | null = [];
  private bodyEnded = false;
  private received = 0;
  private discarding = false;
  private clientPaused = false;
  // The response, written once its first piece of body is known.
  private status = 0;
  private head: ResponseHead | null = null;
  private length = -1;
  private headWritten = false;
  private pending: Buffer | null = null;
  private pendingOffset = 0;
  /** Waiting for room on an instance (image.max_concurrency): how to send once there is. */
  private waitingFor: { avoid: Upstream | null; sameIfAlone: boolean; failure: string | null } | null = null;
  /** A sampled request's bodies, copied for the inference log as they pass (null: not sampled). */
  private readonly captured: { request: BodyCapture; response: BodyCapture } | null;

  constructor(
    private readonly host: ProxyHost,
    readonly res: HttpResponse,
    readonly requestId: string,
    readonly startedAt: number,
    readonly service: Service,
    private readonly pinned: ServiceVersion | null,
    readonly ruleHeaders: Record<string, string> | null,
    private readonly request: UpstreamRequest,
  ) {
    const log = service.log;
    this.captured = log !== null && log.sample() ? { request: new BodyCapture(log.maxRecordBytes), response: new BodyCapture(log.maxRecordBytes) } : null;
  }

  /** uWebSockets.js body chunk: valid only during this callback, so it is copied. */
  onData(chunk: ArrayBuffer, isLast: boolean): void {
    if (this.cancelled) return;
    this.captured?.request.add(new Uint8Array(chunk));
    this.received += chunk.byteLength;
    if (this.discarding || this.received > this.host.maxBodyBytes) return this.overLimit(isLast);
    if (isLast) this.bodyEnded = true;
    if (!this.dispatched && isLast && this.request.contentLength >= 0 && !this.pendingAuth) {
      // The common case, a whole body in one chunk: head and body go out as one buffer, one write.
      this.dispatched = true;
      this.start(chunk);
      return;
    }
    const piece = Buffer.from(new Uint8Array(chunk));
    const framed = this.request.contentLength >= 0 ? [piece] : piece.length ? [Buffer.from(`${piece.length.toString(16)}\r\n`), piece, CRLF] : [];
    if (isLast && this.request.contentLength < 0) framed.push(LAST_CHUNK);
    const bytes = framed.length === 1 ? framed[0]! : Buffer.concat(framed);
    this.sent?.push(bytes);
    if (this.conn && bytes.length) {
      if (!this.conn.write(bytes) && !isLast) this.pauseClient();
    }
    if (!this.dispatched) this.begin();
  }

  /** Routes and sends once the caller is known (a token still being verified is waited for). */
  private begin(): void {
    this.dispatched = true;
    if (this.pendingAuth) {
      this.pendingAuth.then((p) => {
        this.principal = p;
        this.pendingAuth = null;
        // A body that went over the limit meanwhile is being answered 413: nothing is sent.
        if (!this.cancelled && !this.discarding) this.start();
      }, (err: unknown) => this.fail(asGatewayError(err)));
      return;
    }
    this.start();
  }

  private start(whole: ArrayBuffer | null = null): void {
    const v = (this.version = this.pinned ?? this.host.route(this.service, this));
    versionAcquired(v);
    this.send(null, false, whole);
  }

  /**
   * Sends the request (again, after `failure` on `avoid`) to an instance other than `avoid` where
   * there is one; with none, the client hears of the failure. `whole`: the entire body, still in
   * uWebSockets.js' buffer, copied straight behind the head.
   */
  private send(avoid: Upstream | null, sameIfAlone: boolean, whole: ArrayBuffer | null = null, failure: string | null = null, woken = false): void {
    const runner = this.version!.runner as ImageRunner;
    const balancer = runner.balancer;
    let u = balancer.take(avoid, woken);
    // A retry that may go back to its instance does so when no other one can take it now, while
    // that instance is still in rotation with room (it may have waited meanwhile).
    if ((u === null || u === 'wait') && sameIfAlone && avoid && balancer.hasRoom(avoid)) u = avoid;
    if (u === 'wait') {
      this.waitingFor = { avoid, sameIfAlone, failure };
      if (!balancer.enqueue(this)) {
        this.waitingFor = null;
        return this.fail(queueFullError(this.version!.servedBy.label, balancer.maxConcurrency));
      }
      // uWebSockets.js' buffer is gone once this returns: a whole body waits as a copy.
      if (whole) this.sent!.push(Buffer.from(new Uint8Array(whole)));
      // The rest of the body waits in the client's socket, not in the gateway's memory.
      if (!this.bodyEnded) this.pauseClient();
      return;
    }
    if (!u) {
      this.fail(failure !== null
        ? new GatewayError(502, 'UpstreamError', `${this.version!.servedBy.label}: ${failure}`)
        : noInstanceError(this.version!.servedBy.label));
      return;
    }
    u.outstanding++;
    this.upstream = u;
    const conn = (this.conn = u.pool.acquire());
    conn.begin(this);
    const r = this.request;
    const setting = this.setting ? `${this.setting[0]}: ${this.setting[1]}\r\n` : '';
    const framing = r.contentLength >= 0 ? `content-length: ${r.contentLength}\r\n` : 'transfer-encoding: chunked\r\n';
    const head = `${r.requestLine}host: ${u.pool.hostHeader}\r\n${r.headers}x-request-id: ${this.requestId}\r\n${setting}${framing}\r\n`;
    const sent = this.sent!;
    const bodyLength = whole ? whole.byteLength : sent.length === 1 ? sent[0]!.length : 0;
    const headLength = Buffer.byteLength(head);
    const out = Buffer.allocUnsafe(headLength + bodyLength);
    out.write(head, 0, headLength);
    if (whole) {
      out.set(new Uint8Array(whole), headLength);
      // Kept (as a view) for a retry until the answer starts.
      sent.push(out.subarray(headLength));
    } else if (sent.length === 1) {
      out.set(sent[0]!, headLength);
    }
    let ok = conn.write(out);
    // A body that came in pieces before the instance was picked follows the head.
    if (!whole && sent.length > 1) for (const piece of sent) ok = conn.write(piece);
    if (!ok && !this.bodyEnded) this.pauseClient();
    // Paused for a connection that failed since: this one waits for nothing.
    else if (ok) this.resumeClient();
  }

  /** Waiter: no longer in the balancer's queue (or never was). */
  get gone(): boolean {
    return this.waitingFor === null;
  }

  /** An instance has room (Waiter): the request goes out as it would have. */
  wake(): void {
    const w = this.waitingFor;
    if (!w) return;
    this.waitingFor = null;
    if (this.cancelled || this.discarding) return;
    this.send(w.avoid, w.sameIfAlone, null, w.failure, true);
  }

  /** Leaves the balancer's queue, if waiting there (answered, gone, over the body limit). */
  private stopWaiting(): void {
    if (!this.waitingFor) return;
    this.waitingFor = null;
    (this.version!.runner as ImageRunner).balancer.withdraw();
  }

  // ---- the upstream's side (Exchange) ----

  get requestSent(): boolean {
    return this.bodyEnded;
  }

  onHead(head: ResponseHead): void {
    if (this.cancelled) return;
    this.sent = null;
    const runner = this.version!.runner as ImageRunner;
    if (head.status === 502 || head.status === 503 || head.status === 504) runner.balancer.failed(this.upstream!);
    else runner.balancer.succeeded(this.upstream!);
    this.status = head.status;
    this.head = head;
    this.length = head.length;
  }

  onBody(chunk: Buffer, last: boolean): void {
    if (last) this.releaseUpstream();
    if (this.cancelled) return;
    this.captured?.response.add(chunk);
    const res = this.res;
    if (last && !this.headWritten) {
      // The common case: the whole answer arrived at once.
      res.cork(() => {
        this.writeHead();
        // 204, 304: no body and no Content-Length of one.
        if (this.head!.bodiless) res.endWithoutBody();
        else res.end(chunk);
      });
      this.complete(this.status);
      return;
    }
    res.cork(() => {
      if (!this.headWritten) this.writeHead();
      if (this.length >= 0) this.sendKnownLength(chunk);
      else this.sendChunked(chunk, last);
    });
  }

  onFailure(kind: UpstreamFailure, message: string, reused: boolean): void {
    const u = this.upstream;
    if (!u) return;
    this.releaseUpstream();
    (this.version!.runner as ImageRunner).balancer.failed(u);
    if (this.cancelled) return;
    if (this.headWritten) {
      // Part of the answer is out: the client can only learn of the failure by the connection closing.
      this.host.log(new Error(`${this.version!.servedBy.label}: ${message}`));
      this.res.close();
      return;
    }
    const unsent = kind === 'connect' || kind === 'closed-before-response';
    // A kept-alive connection the server closed while idle is worth a fresh one to the same instance;
    // otherwise the retry goes to another instance, and with none the client hears what went wrong.
    const same = kind === 'closed-before-response' && reused;
    if (unsent && this.sent && !this.retried) {
      this.retried = true;
      this.send(u, same, null, message);
      return;
    }
    this.fail(new GatewayError(502, 'UpstreamError', `${this.version!.servedBy.label}: ${message}`));
  }

  onDrain(): void {
    this.resumeClient();
  }

  // ---- the client's side ----

  /** The request deadline passed (limits.request_timeout_ms). */
  expire(ms: number): void {
    if (this.cancelled) return;
    if (this.conn) {
      const u = this.upstream!;
      this.conn.abandon();
      this.releaseUpstream();
      (this.version!.runner as ImageRunner).balancer.failed(u);
    }
    const where = this.version ? this.version.servedBy.label : `service '${this.service.name}'`;
    if (!this.gone) return this.fail(noRoomError(where, ms, (this.version!.runner as ImageRunner).balancer.maxConcurrency));
    this.fail(new GatewayError(504, 'UpstreamTimeout', `${where} did not answer within ${ms} ms (limits.request_timeout_ms)`));
  }

  /** The client went away: nothing may touch `res` any more. */
  abort(): void {
    if (this.cancelled) return;
    this.cancelled = true;
    this.stopWaiting();
    if (this.conn) {
      this.conn.abandon();
      this.releaseUpstream();
    }
    this.host.settle(this);
  }

  /** Answers with an error, or, when part of the answer is already out, closes the connection. */
  private fail(err: GatewayError, close = false): void {
    if (this.cancelled) return;
    if (this.conn) {
      this.conn.abandon();
      this.releaseUpstream();
    }
    if (this.headWritten) {
      this.res.close();
      return;
    }
    if (err.status >= 500 && err.status !== 503 && err.status !== 504) this.host.log(err);
    // A body not read to its end (paused while waiting, say) is still in the connection: it closes after the answer.
    const reply = errorReply(err, close || !this.bodyEnded);
    writeReply(this.res, reply, this.requestId, this.version?.servedBy.label ?? null);
    this.captured?.response.add(typeof reply.body === 'string' ? Buffer.from(reply.body) : reply.body);
    this.complete(err.status, err.message);
  }

  private overLimit(isLast: boolean): void {
    if (!this.discarding) {
      this.discarding = true;
      this.sent = null;
      // Out of the queue, and reading again: the rest is read and dropped.
      this.stopWaiting();
      this.resumeClient();
      if (this.conn) {
        this.conn.abandon();
        this.releaseUpstream();
      }
    }
    // The rest is read and dropped so the client is reading when the 413 comes; past a margin, the connection closes.
    const limit = this.host.maxBodyBytes;
    if (isLast || this.received > limit + DISCARD_BYTES) {
      this.fail(new GatewayError(413, 'PayloadTooLarge', `the request body is over the limit of ${limit} bytes (limits.max_body_bytes)`), !isLast);
    }
  }

  private pauseClient(): void {
    if (this.clientPaused || this.cancelled) return;
    this.clientPaused = true;
    this.res.pause();
  }

  private resumeClient(): void {
    if (!this.clientPaused || this.cancelled) return;
    this.clientPaused = false;
    this.res.resume();
  }

  /**
   * Status line and headers in one native call: uWebSockets.js writes `HTTP/1.1 <status>\r\n`
   * verbatim, so the header lines ride along. None can carry a stray CR or LF: parseHead refuses a
   * head with one inside a line, and the request id passed uWebSockets.js' own header parser.
   */
  private writeHead(): void {
    const h = this.head!;
    this.headWritten = true;
    // An answer that came before the whole upload: the client's connection reads again, or it stalls once the answer is done.
    this.resumeClient();
    // Made once per distinct upstream head (heads are shared through the pool's cache).
    h.clientHead ??= `${h.reason ? `${h.status} ${h.reason}` : statusLine(h.status)}\r\n${h.block}X-Model-Version: `;
    this.res.writeStatus(`${h.clientHead}${this.version!.servedBy.label}\r\nX-Request-Id: ${this.requestId}`);
  }

  /** A body of known length keeps its Content-Length; a piece the socket cannot take waits for onWritable. */
  private sendKnownLength(chunk: Buffer): void {
    const res = this.res;
    const offset = res.getWriteOffset();
    const [ok, done] = res.tryEnd(chunk, this.length);
    if (done) return this.complete(this.status);
    if (ok) return;
    // The chunk lives in the upstream connection's read buffer: keep a copy.
    this.pending = Buffer.from(chunk);
    this.pendingOffset = offset;
    this.conn?.pause();
    res.onWritable((at) => {
      if (this.cancelled || !this.pending) return true;
      const [sent, finished] = res.tryEnd(this.pending.subarray(at - this.pendingOffset), this.length);
      if (finished) this.complete(this.status);
      else if (sent) {
        this.pending = null;
        this.conn?.resume();
      }
      return sent;
    });
  }

  /** A body of unknown length goes out chunked; uWebSockets.js buffers what the socket cannot take yet. */
  private sendChunked(chunk: Buffer, last: boolean): void {
    const res = this.res;
    if (chunk.length && !res.write(chunk) && !last) {
      this.conn?.pause();
      res.onWritable(() => {
        this.conn?.resume();
        return true;
      });
    }
    if (last) {
      res.end();
      this.complete(this.status);
    }
  }

  private releaseUpstream(): void {
    if (!this.upstream) return;
    (this.version!.runner as ImageRunner).balancer.release(this.upstream);
    this.upstream = null;
    this.conn = null;
  }

  private complete(status: number, error: string | null = null): void {
    this.cancelled = true;
    this.stopWaiting();
    const v = this.version;
    const elapsedMs = performance.now() - this.startedAt;
    if (v) v.metrics.request(status, elapsedMs / 1000);
    else this.host.unrouted(status);
    if (this.captured && v) {
      const responseType = error === null && this.head ? headerValue(this.head.headers, 'content-type') : 'application/json';
      const c = this.captured;
      this.service.log!.commitExchange(this.requestId, c.request, this.request.contentType, c.response, responseType, v.servedBy, status, Math.round(elapsedMs * 1e6), error);
    }
    this.host.settle(this);
  }
}

/** A header's value in a parsed head's alternating name/value list ('' if absent). */
function headerValue(headers: string[], name: string): string {
  for (let i = 0; i < headers.length; i += 2) if (headers[i] === name) return headers[i + 1]!;
  return '';
}

/** How much past the limit is read and dropped before the connection is closed instead. */
export const DISCARD_BYTES = 64 * 1024 * 1024;
