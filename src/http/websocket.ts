import { performance } from 'node:perf_hooks';
import type { HttpRequest, HttpResponse, TemplatedApp, WebSocket, us_socket_context_t } from 'uWebSockets.js';
import { WebSocket as UpstreamSocket } from 'ws';
import { tokenOf, type Access } from '../auth/access.js';
import type { Principal } from '../auth/tokens.js';
import { decodeMessage, parseMessage } from '../codecs/index.js';
import { packValue } from '../codecs/msgpack.js';
import { openInference } from '../codecs/v2.js';
import type { Decoded } from '../codecs/types.js';
import { versionAcquired, type OnnxVersion, type RoutingTable, type Service, type ServiceVersion } from '../control/services.js';
import { asGatewayError, GatewayError, notFound } from '../errors.js';
import type { ImageRunner } from '../runtime/image/runner.js';
import type { Job } from '../runtime/onnx/batcher.js';
import type { HookContext } from '../runtime/onnx/protocol.js';
import type { ModelSignature } from '../runtime/onnx/signature.js';
import { StreamState } from '../runtime/onnx/stream.js';
import type { InferRequest, InferResult } from '../runtime/types.js';
import type { FrontCall, InferenceFront } from './infer.js';
import { hookContext, overLimit, statusError } from './infer.js';
import type { LiveCall } from './live.js';
import { MESSAGE_BINARY, MESSAGE_TEXT, type ServiceLog } from '../telemetry/inference-log.js';
import { apiPathOf, routeParam } from './params.js';
import { newRequestId } from './request-id.js';
import { errorReply, writeReply } from './respond.js';

/**
 * WebSocket streaming (SPEC §5.5) on the inference URL. ONNX services: each text frame is a JSON
 * request in any JSON shape, each binary frame the same in msgpack; answers carry the message's
 * id, may come out of order, and many may be in flight. Streaming models keep their state per
 * connection. Image services: frames are relayed both ways to an instance's own WebSocket.
 * A client that does not read its answers is not buffered without bound: past
 * `limits.ws_buffer_bytes` its messages wait (up to that many bytes more), and a connection that
 * does not drain within `limits.ws_drain_timeout_ms` is closed with 1013 (try again later).
 */

export interface WsSettings {
  bufferBytes: number;
  drainTimeoutMs: number;
  /** Messages of one connection being served at once; more wait (within bufferBytes). */
  maxInflight: number;
  maxMessageBytes: number;
  requestTimeoutMs: number;
}

/** Answers queued for one client beyond which uWebSockets.js would drop a send: the connection is closed instead. */
const HARD_BACKPRESSURE = 64 * 1024 * 1024;
const TRY_AGAIN_LATER = 1013;
/** What holding a message costs beyond its bytes, so many tiny messages are bounded too. */
const WAITING_OVERHEAD = 64;

/** One open connection, whatever it serves. */
interface Session {
  /** Called once the session is registered: it may close the connection from here on. */
  start?(): void;
  message(data: ArrayBuffer, binary: boolean): void;
  drain(): void;
  /** The connection closed, with the close frame's code and reason (1006 and none without one). */
  closed(code: number, reason: ArrayBuffer): void;
  /** Closes the connection as the gateway stops (1001, going away). */
  shutdown(): void;
  /** Bytes held for this connection: answers not yet taken by the client, messages waiting. */
  held(): number;
}

/** What an upgrade hands to the open handler. */
interface Upgraded {
  make: (ws: WebSocket<Upgraded>) => Session;
  session: Session | null;
}

export class WebSocketFront {
  private readonly sessions = new Set<Session>();
  /** Upgrades not answered yet (waiting for a token check, for room on an instance, or for its handshake): how to end each. */
  private readonly upgrading = new Set<() => void>();
  /** The gateway is stopping: messages are refused, so the calls in flight can run out. */
  draining = false;

  constructor(
    private readonly front: InferenceFront,
    private readonly table: RoutingTable,
    private readonly access: Access,
    readonly settings: WsSettings,
    private readonly logError: (err: unknown) => void,
  ) {}

  get connections(): number {
    return this.sessions.size;
  }

  /** Bytes the gateway holds for all connections (the backpressure bound at work). */
  get heldBytes(): number {
    let n = 0;
    for (const s of this.sessions) n += s.held();
    return n;
  }

  /** Upgrades on a service's inference URL; `forwardsPath`: its api path goes to image instances. */
  register(app: TemplatedApp, pattern: string, forwardsPath: boolean): void {
    app.ws<Upgraded>(pattern, this.behavior((res, req, ctx) => this.upgrade(res, req, ctx, forwardsPath)));
  }

  /** The high-speed channel's WebSocket (SPEC §5.6): one ONNX version, no auth, rules or limits. */
  registerDirect(app: TemplatedApp, serviceId: string, pick: () => { service: Service; version: OnnxVersion } | null): void {
    app.ws<Upgraded>('/', this.behavior((res, req, ctx) => {
      const hs = handshake(req);
      const requestId = req.getHeader('x-request-id') || newRequestId();
      if (!pick()) return writeReply(res, errorReply(new GatewayError(503, 'ServiceUnavailable', `service ${serviceId} is not serving on this listener any more`)), requestId, null);
      const make = (ws: WebSocket<Upgraded>): Session => new InferSocket(ws, this, serviceId, null, null, null, () => pick()?.version ?? null);
      res.upgrade<Upgraded>({ make, session: null }, hs.key, hs.protocol, hs.extensions, ctx);
    }));
  }

  /** Takes no new message (answered 503) and no new connection, so shutdown can wait for what is in flight. */
  stopTaking(): void {
    this.draining = true;
  }

  /**
   * Closes every connection (1001, going away) once the gateway has answered what it owes. Upgrades
   * still waiting are answered 503 first, so the places the closing relays give back go to no one.
   */
  closeAll(): void {
    for (const end of [...this.upgrading]) end();
    for (const s of [...this.sessions]) s.shutdown();
  }

  // ---- for the sessions ----

  get inference(): InferenceFront {
    return this.front;
  }

  service(id: string): Service | undefined {
    return this.table.get(id);
  }

  /** The caller still speaks for itself and may infer here (a revoked, expired or demoted caller stops at its next message). */
  caller(token: string, service: Service): Principal | Promise<Principal> {
    const check = (p: Principal): Principal => {
      this.access.require(p, service.projectId, 'infer', `inference on service '${service.name}'`);
      return p;
    };
    const p = this.access.authenticate(token);
    return p instanceof Promise ? p.then(check) : check(p);
  }

  error(err: unknown): void {
    this.logError(err);
  }

  private behavior(upgrade: (res: HttpResponse, req: HttpRequest, ctx: us_socket_context_t) => void) {
    return {
      maxPayloadLength: this.settings.maxMessageBytes,
      maxBackpressure: HARD_BACKPRESSURE,
      idleTimeout: 120,
      sendPingsAutomatically: true,
      upgrade,
      open: (ws: WebSocket<Upgraded>) => {
        const u = ws.getUserData();
        u.session = u.make(ws);
        this.sessions.add(u.session);
        u.session.start?.();
      },
      message: (ws: WebSocket<Upgraded>, data: ArrayBuffer, binary: boolean) => ws.getUserData().session?.message(data, binary),
      drain: (ws: WebSocket<Upgraded>) => ws.getUserData().session?.drain(),
      close: (ws: WebSocket<Upgraded>, code: number, reason: ArrayBuffer) => {
        const s = ws.getUserData().session;
        if (!s) return;
        this.sessions.delete(s);
        s.closed(code, reason);
      },
    };
  }

  private upgrade(res: HttpResponse, req: HttpRequest, context: us_socket_context_t, forwardsPath: boolean): void {
    // Everything the request says is read now: HttpRequest dies with this handler.
    const requestId = req.getHeader('x-request-id') || newRequestId();
    const hs = handshake(req);
    const key = routeParam(req, 0);
    const refuse = (err: GatewayError): void => writeReply(res, errorReply(err), requestId, null);
    const service = this.table.get(key);
    if (!service) return refuse(notFound(`service '${key}' does not exist`, 'ServiceNotFound'));
    if (!service.websocket) {
      return refuse(new GatewayError(409, 'WebSocketOff', `service '${service.name}' does not take WebSocket connections; update it with {"websocket": true}`));
    }
    const unavailable = statusError(service);
    if (unavailable) return refuse(unavailable);
    const query = new URLSearchParams(req.getQuery() ?? '');
    let caller: Principal | Promise<Principal> | null = null;
    let token: string | null = null;
    if (service.auth === 'token') {
      try {
        // Browsers cannot set headers on a WebSocket: ?token= is taken too (and never logged or forwarded).
        token = tokenOf(req.getHeader('x-auth-token'), req.getHeader('authorization')) ?? query.get('token');
        caller = this.access.authenticate(token);
      } catch (err) {
        return refuse(asGatewayError(err));
      }
    }
    if (this.draining) return refuse(shuttingDown());
    let ruleHeaders: Record<string, string> | null = null;
    if (service.rules) {
      ruleHeaders = {};
      for (const h of service.rules.headers) ruleHeaders[h] = req.getHeader(h);
    }
    query.delete('token');
    const rest = query.toString();
    const upstreamPath = (forwardsPath ? apiPathOf(req.getUrl()) : '/') + (rest ? `?${rest}` : '');

    let aborted = false;
    // Ends a wait for room, or the instance's handshake, when the client goes or the gateway stops (connectUpstream then rejects).
    const gone = new AbortController();
    res.onAborted(() => {
      aborted = true;
      gone.abort();
    });
    let stopping = false;
    const stop = (): void => {
      stopping = true;
      gone.abort();
    };
    this.upgrading.add(stop);
    const finish = async (): Promise<void> => {
      const principal = caller instanceof Promise ? await caller : caller;
      if (stopping) throw shuttingDown();
      if (principal) this.access.require(principal, service.projectId, 'infer', `inference on service '${service.name}'`);
      let make: Upgraded['make'];
      let protocol = hs.protocol;
      let opened: OpenedUpstream | null = null;
      if (service.kind === 'image') {
        // A relayed connection is one request to the service's limits; its frames are the instance's business.
        if (principal) this.front.chargeQuotas(principal);
        if (service.limiter) {
          const wait = service.limiter.take(performance.now());
          if (wait > 0) throw overLimit(service.name, service.limiter.rate, wait);
        }
        const routed = { principal, ruleHeaders, setting: null as [string, string] | null };
        const version = this.front.route(service, routed);
        if (aborted) return; // gone while its token was checked: no place is taken for it
        const relay: OpenedUpstream = (opened = await connectUpstream(version, upstreamPath, hs.protocol, requestId, routed.setting, this.settings, gone.signal));
        protocol = relay.socket.protocol;
        make = (ws) => new RelaySocket(ws, relay, this.settings);
      } else {
        make = (ws) => new InferSocket(ws, this, service.id, token, principal, ruleHeaders, null);
      }
      if (aborted || stopping) {
        opened?.abandon();
        if (stopping && !aborted) throw shuttingDown();
        return;
      }
      let made = false;
      const makeOnce: Upgraded['make'] = (ws) => {
        made = true;
        return make(ws);
      };
      res.cork(() => res.upgrade<Upgraded>({ make: makeOnce, session: null }, hs.key, protocol, hs.extensions, context));
      // No connection came of the upgrade (the socket went in between): the instance's place goes back.
      if (!made) opened?.abandon();
    };
    finish().catch((err: unknown) => {
      if (!(err instanceof GatewayError) && !stopping) this.logError(err);
      if (!aborted) refuse(stopping ? shuttingDown() : asGatewayError(err));
    }).finally(() => this.upgrading.delete(stop));
  }

}

interface Handshake { key: string; protocol: string; extensions: string }

function handshake(req: HttpRequest): Handshake {
  return { key: req.getHeader('sec-websocket-key'), protocol: req.getHeader('sec-websocket-protocol'), extensions: req.getHeader('sec-websocket-extensions') };
}


/** The id a message carries: its "id", or ModelArts' meta.uuid. */
function idOf(value: unknown): string | number | undefined {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return undefined;
  const v = value as Record<string, unknown>;
  if (typeof v['id'] === 'string' || typeof v['id'] === 'number') return v['id'];
  const meta = v['meta'];
  if (typeof meta === 'object' && meta !== null && typeof (meta as Record<string, unknown>)['uuid'] === 'string') return (meta as Record<string, string>)['uuid'];
  return undefined;
}

const isReset = (value: unknown): boolean =>
  typeof value === 'object' && value !== null && !Array.isArray(value) && (value as Record<string, unknown>)['reset'] === true;

/**
 * Backpressure shared by both kinds of connection: past the buffer limit the session holds back,
 * and a client that stays past it for the drain timeout is closed with 1013.
 */
abstract class Throttled {
  protected isClosed = false;
  private drainTimer: NodeJS.Timeout | null = null;

  constructor(protected readonly ws: WebSocket<Upgraded>, protected readonly settings: WsSettings) {}

  protected get overBuffer(): boolean {
    return !this.isClosed && this.ws.getBufferedAmount() > this.settings.bufferBytes;
  }

  /** Starts the drain clock when the client is past the limit. */
  protected watchDrain(): void {
    if (this.drainTimer || !this.overBuffer) return;
    this.drainTimer = setTimeout(() => {
      this.drainTimer = null;
      if (this.overBuffer) this.end(TRY_AGAIN_LATER, `the client did not read its answers for ${this.settings.drainTimeoutMs} ms`);
    }, this.settings.drainTimeoutMs);
    this.drainTimer.unref();
  }

  protected drained(): void {
    if (this.drainTimer && !this.overBuffer) {
      clearTimeout(this.drainTimer);
      this.drainTimer = null;
    }
  }

  protected stopWatching(): void {
    if (this.drainTimer) clearTimeout(this.drainTimer);
    this.drainTimer = null;
  }

  abstract end(code: number, reason: string): void;
}

interface Waiting { bytes: Uint8Array; binary: boolean }

/** A connection to an ONNX service: messages become batcher jobs. */
class InferSocket extends Throttled implements Session {
  private inflight = 0;
  /** Messages held back, oldest at `waitHead` (an index, so taking one is not a shift of the array). */
  private waiting: Waiting[] = [];
  private waitHead = 0;
  private waitingBytes = 0;
  private readonly calls = new Set<SocketCall>();
  /** Streaming models: the state, for the version it belongs to. */
  private stream: { version: OnnxVersion; state: StreamState } | null = null;

  /** A token check that could not be answered from the cache: messages wait for it. */
  private checking: Promise<unknown> | null = null;
  /** pump() is on the stack: answers that come synchronously (a refusal) leave the taking to it. */
  private pumping = false;

  constructor(
    ws: WebSocket<Upgraded>,
    private readonly owner: WebSocketFront,
    private readonly serviceId: string,
    /** Checked again at every message: a connection outliving its token or its user stops. */
    private readonly token: string | null,
    private principal: Principal | null,
    private readonly ruleHeaders: Record<string, string> | null,
    /** The high-speed channel: one version, no limits or statistics. */
    private readonly direct: (() => OnnxVersion | null) | null,
  ) {
    super(ws, owner.settings);
  }

  message(data: ArrayBuffer, binary: boolean): void {
    if (this.isClosed) return;
    if (this.waitHead < this.waiting.length || this.busy) {
      this.hold(new Uint8Array(data.slice(0)), binary);
      return;
    }
    this.handle(new Uint8Array(data), binary);
  }

  drain(): void {
    this.drained();
    this.pump();
  }

  closed(): void {
    this.isClosed = true;
    this.stopWatching();
    this.waiting = [];
    // Calls still running are skipped by the batcher; their versions and deadlines are released now.
    for (const c of this.calls) {
      c.cancelled = true;
      this.owner.inference.settle(c);
    }
    this.calls.clear();
  }

  shutdown(): void {
    this.end(1001, 'the gateway is shutting down');
  }

  held(): number {
    return this.isClosed ? 0 : this.ws.getBufferedAmount() + this.waitingBytes;
  }

  end(code: number, reason: string): void {
    if (this.isClosed) return;
    this.ws.end(code, reason);
  }

  /** No new message is taken while the client is behind on reading, at the in-flight limit, a stream's last message runs, or its token is being checked. */
  private get busy(): boolean {
    return this.overBuffer || this.inflight >= this.settings.maxInflight || (this.stream !== null && this.inflight > 0) || this.checking !== null;
  }

  private hold(bytes: Uint8Array, binary: boolean): void {
    // One message always may wait (a stream's next chunk may be up to maxPayloadLength); more only within the buffer.
    if (this.waitHead < this.waiting.length && this.waitingBytes + bytes.length + WAITING_OVERHEAD > this.settings.bufferBytes) {
      this.end(TRY_AGAIN_LATER, 'too many messages waiting: the client sends faster than it reads its answers');
      return;
    }
    this.waiting.push({ bytes, binary });
    this.waitingBytes += bytes.length + WAITING_OVERHEAD;
    this.watchDrain();
  }

  private pump(): void {
    if (this.pumping) return;
    this.pumping = true;
    while (!this.isClosed && this.waitHead < this.waiting.length && !this.busy) {
      const m = this.waiting[this.waitHead]!;
      this.waiting[this.waitHead++] = undefined as unknown as Waiting;
      this.waitingBytes -= m.bytes.length + WAITING_OVERHEAD;
      this.handle(m.bytes, m.binary);
    }
    this.pumping = false;
    if (this.waitHead === this.waiting.length) {
      this.waiting = [];
      this.waitHead = 0;
    }
  }

  /**
   * The caller, checked again (cached, so it costs a lookup); a check that must wait holds this
   * message and the ones after it until it is done. False: the message is not to be handled now.
   */
  private callerReady(bytes: Uint8Array, binary: boolean, service: Service): boolean {
    if (this.token === null) return true;
    let checked: Principal | Promise<Principal>;
    try {
      checked = this.owner.caller(this.token, service);
    } catch (err) {
      this.refused(asGatewayError(err), binary);
      return false;
    }
    if (!(checked instanceof Promise)) {
      this.principal = checked;
      return true;
    }
    // Put back at the front: it is handled once the check is done.
    this.waiting.splice(this.waitHead, 0, { bytes: bytes.slice(), binary });
    this.waitingBytes += bytes.length + WAITING_OVERHEAD;
    this.checking = checked.then(
      (p) => {
        this.principal = p;
        this.checking = null;
        this.pump();
      },
      (err: unknown) => {
        this.checking = null;
        this.refused(asGatewayError(err), binary);
      },
    );
    return false;
  }

  /** The token no longer works: said once, and the connection closes (1008, policy violation). */
  private refused(err: GatewayError, binary: boolean): void {
    this.sendError(undefined, err, binary);
    this.end(1008, err.message.slice(0, 120));
  }

  /** One message, decoded before this returns (its bytes are uWebSockets.js' until then). */
  private handle(bytes: Uint8Array, binary: boolean): void {
    const startedAt = performance.now();
    let id: string | number | undefined;
    try {
      if (this.owner.draining) throw new GatewayError(503, 'ShuttingDown', 'the gateway is shutting down; send this again on a new connection shortly');
      const service = this.owner.service(this.serviceId);
      if (!service) throw new GatewayError(404, 'ServiceNotFound', `service ${this.serviceId} no longer exists`);
      if (!this.callerReady(bytes, binary, service)) return;
      const value = parseMessage(bytes, binary);
      id = idOf(value);
      const routed = { principal: this.principal, ruleHeaders: this.ruleHeaders, setting: null as [string, string] | null };
      const version = this.versionFor(service, routed);
      if (isReset(value)) {
        this.stream?.state.reset();
        this.send({ ...(id !== undefined ? { id } : {}), reset: true }, binary);
        return;
      }
      const stream = this.streamFor(version);
      const sig = stream ? stream.state.client : version.runner.signature;
      const decoded = decodeMessage(value, binary, sig);
      const request = stream ? stream.state.feed(decoded.request) : decoded.request;
      // A matched rule's setting reaches the version's hooks, as on the HTTP path (such a message runs alone).
      const call = new SocketCall(this, id, binary, decoded, request, version, sig, startedAt, hookContext(version, routed.setting, this.ruleHeaders));
      const log = this.direct ? null : service.log;
      if (log !== null && log.sample()) call.logged = { log, at: log.keepBody(bytes), length: bytes.length };
      this.inflight++;
      this.calls.add(call);
      versionAcquired(version);
      this.owner.inference.track(call);
      version.runner.submit(call);
    } catch (err) {
      if (!(err instanceof GatewayError)) this.owner.error(err);
      this.sendError(id, asGatewayError(err), binary);
    }
  }

  /** The version serving this message: the listener's own, a stream's (state belongs to one model), or a routed one. */
  private versionFor(service: Service, routed: { principal: Principal | null; ruleHeaders: Record<string, string> | null; setting: [string, string] | null }): OnnxVersion {
    if (this.direct) {
      const v = this.direct();
      if (!v) throw new GatewayError(503, 'ServiceUnavailable', `the high-speed listener's version is not serving any more`);
      return v;
    }
    const unavailable = statusError(service);
    if (unavailable) throw unavailable;
    if (this.principal) this.owner.inference.chargeQuotas(this.principal);
    if (service.limiter) {
      const wait = service.limiter.take(performance.now());
      if (wait > 0) throw overLimit(service.name, service.limiter.rate, wait);
    }
    if (this.stream && service.versions.includes(this.stream.version)) return this.stream.version;
    return this.owner.inference.route(service, routed) as OnnxVersion;
  }

  private streamFor(version: OnnxVersion): { version: OnnxVersion; state: StreamState } | null {
    if (!version.runner.signature.stream) return null;
    // A rolling update to another model version starts the stream's state afresh.
    if (this.stream?.version !== version) this.stream = { version, state: new StreamState(version.runner.signature) };
    return this.stream;
  }

  // ---- from the calls ----

  answered(call: SocketCall, result: InferResult): void {
    this.settled(call);
    const v = call.version;
    const own = this.stream?.version === v ? this.stream.state.keep(result) : result;
    let status = 200;
    try {
      this.send(call.answer(own), call.binary);
    } catch (err) {
      this.owner.error(err);
      status = 500;
      this.sendError(call.id, asGatewayError(err), call.binary);
    }
    if (!this.direct) {
      v.metrics.served(result.queueNs, result.runNs);
      v.metrics.request(status, (performance.now() - call.startedAt) / 1000);
    }
    call.commitLog(status, own, null);
    this.pump();
  }

  failed(call: SocketCall, err: GatewayError): void {
    this.settled(call);
    if (!this.direct) call.version.metrics.request(err.status, (performance.now() - call.startedAt) / 1000);
    this.sendError(call.id, err, call.binary);
    call.commitLog(err.status, null, err.message);
    this.pump();
  }

  private settled(call: SocketCall): void {
    this.inflight--;
    this.calls.delete(call);
    this.owner.inference.settle(call);
  }

  private sendError(id: string | number | undefined, err: GatewayError, binary: boolean): void {
    this.send({ id: id ?? null, ...err.toJSON() }, binary);
  }

  /** A frame in the message's encoding: text JSON, or binary msgpack. */
  private send(frame: unknown, binary: boolean): void {
    if (this.isClosed) return;
    const body = typeof frame === 'string' ? frame : binary ? packValue(frame) : JSON.stringify(frame);
    let sent = 1;
    this.ws.cork(() => {
      sent = this.ws.send(body, binary);
    });
    // 2: dropped past the hard limit — an answer lost is worse than a closed connection.
    if (sent === 2) this.end(TRY_AGAIN_LATER, 'the client is too far behind reading its answers');
    else this.watchDrain();
  }
}

/** One message in flight: a batcher job whose answer goes back as a frame. */
class SocketCall implements Job, FrontCall {
  prevLive: LiveCall | null = null;
  nextLive: LiveCall | null = null;
  cancelled = false;
  enqueuedAt = 0;
  /** A sampled message: where the service's inference log kept it. */
  logged: { log: ServiceLog; at: number; length: number } | null = null;

  constructor(
    private readonly socket: InferSocket,
    readonly id: string | number | undefined,
    readonly binary: boolean,
    private readonly decoded: Decoded,
    readonly request: InferRequest,
    readonly version: OnnxVersion,
    /** The signature the message was decoded against (a stream's client view). */
    private readonly sig: ModelSignature,
    readonly startedAt: number,
    readonly ctx: HookContext | undefined,
  ) {}

  resolve(result: InferResult): void {
    if (this.cancelled) return;
    this.cancelled = true;
    this.socket.answered(this, result);
  }

  reject(err: GatewayError): void {
    if (this.cancelled) return;
    this.cancelled = true;
    this.socket.failed(this, err);
  }

  expire(ms: number): void {
    this.reject(new GatewayError(504, 'Timeout', `no answer within ${ms} ms (limits.request_timeout_ms); the message was abandoned`));
  }

  /** The record of a sampled message, named by its id (or a new request id where it has none). */
  commitLog(status: number, result: InferResult | null, error: string | null): void {
    const l = this.logged;
    // A stream's answer that came after the stream moved to another version still holds the
    // state outputs the client view leaves out: not a record of that view.
    if (!l || (result && result.outputs.length !== this.sig.outputs.length)) return;
    const requestId = this.id !== undefined ? String(this.id) : newRequestId();
    l.log.commit(requestId, l.at, l.length, this.binary ? MESSAGE_BINARY : MESSAGE_TEXT, -1, this.version.servedBy, this.sig, status, result, this.request.rows, error, null);
  }

  /** The answer frame: the shape's answer with the message's id at the top (v2 carries its own). */
  answer(result: InferResult): string | Record<string, unknown> {
    const by = this.version.servedBy;
    if (result.custom !== undefined) {
      const v = result.custom;
      return typeof v === 'object' && v !== null && !Array.isArray(v) && this.id !== undefined ? { id: this.id, ...(v as Record<string, unknown>) } : (v as Record<string, unknown>);
    }
    if (this.binary) {
      const value = this.decoded.codec.value(this.decoded, result, this.sig, by);
      if (this.id !== undefined && typeof value === 'object' && value !== null && !Array.isArray(value) && !('id' in value)) return { id: this.id, ...(value as Record<string, unknown>) };
      return value as Record<string, unknown>;
    }
    const text = this.decoded.codec.encode(this.decoded, result, this.sig, by).body as string;
    if (this.id === undefined || this.decoded.codec === openInference || text.charCodeAt(0) !== 123) return text;
    return `{"id":${JSON.stringify(this.id)},${text.slice(1)}`;
  }
}

/** An image service's connection: frames relayed both ways to one instance's own WebSocket. */
class RelaySocket extends Throttled implements Session {
  private upstreamTimer: NodeJS.Timeout | null = null;
  private readonly up: UpstreamSocket;

  constructor(ws: WebSocket<Upgraded>, private readonly opened: OpenedUpstream, settings: WsSettings) {
    super(ws, settings);
    this.up = opened.socket;
  }

  start(): void {
    // The connection counts as load on its instance (for balancing and max_concurrency) while it lasts: since connectUpstream.
    this.opened.handover({
      message: (data, binary) => this.fromUpstream(data, binary),
      close: (code, reason) => this.end(relayable(code), reason),
      error: () => this.end(1011, 'the model instance\'s WebSocket failed'),
    });
  }

  message(data: ArrayBuffer, binary: boolean): void {
    if (this.isClosed || this.up.readyState !== UpstreamSocket.OPEN) return;
    // What the instance has not read of earlier messages: this one, however large, is not "behind" yet.
    const behind = this.up.bufferedAmount;
    // ws sends later: a copy, since the frame's bytes are uWebSockets.js' only until this returns.
    this.up.send(Buffer.from(data.slice(0)), { binary });
    if (behind > UPSTREAM_HARD_FACTOR * this.settings.bufferBytes) {
      // The client sends far faster than the instance reads: nothing is held without bound.
      this.end(TRY_AGAIN_LATER, 'the model instance is too far behind reading');
    } else if (this.up.bufferedAmount > this.settings.bufferBytes && !this.upstreamTimer) {
      // The instance is the slow reader: it gets the same grace as a client.
      this.upstreamTimer = setTimeout(() => {
        this.upstreamTimer = null;
        if (this.up.bufferedAmount > this.settings.bufferBytes) this.end(TRY_AGAIN_LATER, `the model instance did not read for ${this.settings.drainTimeoutMs} ms`);
      }, this.settings.drainTimeoutMs);
      this.upstreamTimer.unref();
    }
  }

  drain(): void {
    this.drained();
    if (!this.overBuffer) this.up.resume();
  }

  closed(code: number, reason: ArrayBuffer): void {
    this.isClosed = true;
    this.stopWatching();
    if (this.upstreamTimer) clearTimeout(this.upstreamTimer);
    this.opened.release();
    // The client's close goes on to the instance as it came (a code no frame may carry, as 1000).
    if (this.up.readyState === UpstreamSocket.OPEN || this.up.readyState === UpstreamSocket.CONNECTING) this.up.close(sendable(code), Buffer.from(reason).subarray(0, 123));
  }

  shutdown(): void {
    this.end(1001, 'the gateway is shutting down');
  }

  held(): number {
    return this.isClosed ? 0 : this.ws.getBufferedAmount() + this.up.bufferedAmount;
  }

  end(code: number, reason: string): void {
    if (this.isClosed) return;
    this.ws.end(code, reason.slice(0, 120));
  }

  private fromUpstream(data: Buffer, binary: boolean): void {
    if (this.isClosed) return;
    let sent = 1;
    this.ws.cork(() => {
      sent = this.ws.send(data, binary);
    });
    if (sent === 2) return this.end(TRY_AGAIN_LATER, 'the client is too far behind reading');
    if (this.overBuffer) {
      // Stop reading the instance until the client catches up.
      this.up.pause();
      this.watchDrain();
    }
  }
}

/** How far past ws_buffer_bytes an instance may fall behind reading before the relay is closed at once. */
const UPSTREAM_HARD_FACTOR = 4;

interface RelayEvents {
  message(data: Buffer, binary: boolean): void;
  close(code: number, reason: string): void;
  error(): void;
}

/** An instance's WebSocket, open; what it says before the relay takes it over is kept for the relay. */
interface OpenedUpstream {
  socket: UpstreamSocket;
  /** Gives the instance's place back (image.max_concurrency); once, whoever calls it first. */
  release(): void;
  /** No relay comes of it: the instance's socket is dropped and its place given back. */
  abandon(): void;
  handover(to: RelayEvents): void;
}

/** Close codes a peer may send on (1005, 1006 and 1015 only describe what happened). */
function relayable(code: number): number {
  return code === 1005 || code === 1006 || code === 1015 || code < 1000 ? 1000 : code;
}

/** An upgrade the gateway will not take because it is stopping. */
const shuttingDown = (): GatewayError => new GatewayError(503, 'ShuttingDown', 'the gateway is shutting down; connect again shortly');

/** A close code a close frame may carry (RFC 6455 §7.4: 1000–1003, 1007–1014, 3000–4999), else 1000. */
function sendable(code: number): number {
  return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) || (code >= 3000 && code <= 4999) ? code : 1000;
}

/**
 * Opens the instance's WebSocket before the client's upgrade is accepted, so failures are HTTP
 * answers. Frames (or a close) the instance sends meanwhile, even with its 101, are kept and
 * handed over to the relay: none is lost between the two.
 */
async function connectUpstream(version: ServiceVersion, path: string, protocol: string, requestId: string, setting: [string, string] | null, settings: WsSettings, signal: AbortSignal): Promise<OpenedUpstream> {
  const balancer = (version.runner as ImageRunner).balancer;
  // The connection holds a place on its instance (image.max_concurrency) from here until it closes.
  const u = await balancer.reserve(version.servedBy.label, settings.requestTimeoutMs, signal);
  let held = true;
  const release = (): void => {
    if (held) balancer.release(u);
    held = false;
  };
  const headers: Record<string, string> = { 'x-request-id': requestId };
  if (setting) headers[setting[0]] = setting[1];
  const protocols = protocol ? protocol.split(',').map((p) => p.trim()).filter(Boolean) : [];
  const sock = new UpstreamSocket(`ws://${u.pool.hostHeader}${path}`, protocols, { headers, perMessageDeflate: false, handshakeTimeout: settings.requestTimeoutMs, maxPayload: settings.maxMessageBytes });
  const abandon = (): void => {
    sock.terminate();
    release();
  };
  const early: ((to: RelayEvents) => void)[] = [];
  let to: RelayEvents | null = null;
  sock.on('message', (data: Buffer | ArrayBuffer | Buffer[], binary: boolean) => {
    const bytes = Array.isArray(data) ? Buffer.concat(data) : Buffer.isBuffer(data) ? data : Buffer.from(data);
    if (to) to.message(bytes, binary);
    else early.push((t) => t.message(bytes, binary));
  });
  sock.on('close', (code: number, reason: Buffer) => {
    if (to) to.close(code, reason.toString());
    else early.push((t) => t.close(code, reason.toString()));
  });
  await new Promise<void>((resolve, reject) => {
    const fail = (why: string): void => {
      signal.removeEventListener('abort', onAbort);
      abandon();
      reject(new GatewayError(502, 'UpstreamError', `${version.servedBy.label}: cannot open a WebSocket to instance ${u.id}: ${why}`));
    };
    // The client gone during the handshake: the instance's socket and place go at once.
    const onAbort = (): void => fail('the client went away');
    signal.addEventListener('abort', onAbort, { once: true });
    sock.once('open', () => {
      signal.removeEventListener('abort', onAbort);
      sock.off('error', onError);
      sock.on('error', () => (to ? to.error() : early.push((t) => t.error())));
      resolve();
    });
    sock.once('unexpected-response', (_req, res) => fail(`it answered the upgrade with ${res.statusCode}`));
    const onError = (err: Error): void => fail(err.message);
    sock.once('error', onError);
  });
  return {
    socket: sock,
    release,
    abandon,
    handover(relay) {
      to = relay;
      for (const replay of early.splice(0)) replay(relay);
    },
  };
}
