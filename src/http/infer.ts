import { newRequestId } from './request-id.js';
import { performance } from 'node:perf_hooks';
import type { HttpRequest, HttpResponse } from 'uWebSockets.js';
import { decodeRequest, encodeResult, type BodyMeta } from '../codecs/index.js';
import type { Decoded } from '../codecs/types.js';
import { pickVersion, versionAcquired, versionReleased, type OnnxVersion, type RoutingTable, type Service, type ServiceVersion } from '../control/services.js';
import { asGatewayError, GatewayError, notFound } from '../errors.js';
import type { Job } from '../runtime/onnx/batcher.js';
import type { InferRequest, InferResult } from '../runtime/types.js';
import type { Metrics } from '../telemetry/metrics.js';
import { tokenOf, type Access } from '../auth/access.js';
import type { Principal } from '../auth/tokens.js';
import { MinuteQuota } from '../traffic/quota.js';
import type { RuleInput } from '../traffic/rules.js';
import { apiPathOf, routeParam } from './params.js';
import type { HookContext } from '../runtime/onnx/protocol.js';
import { recordShadow, type ShadowSlot } from '../telemetry/inference-log.js';
import { errorReply, writeReply, type Reply } from './respond.js';
import { DISCARD_BYTES, ProxyCall, upstreamRequest, type ProxyHost } from './proxy.js';
import { LiveList, type LiveCall } from './live.js';
import { inflateBody, isEncoded } from './content-encoding.js';

/** A call the front tracks until it is answered, holding the version that serves it once routed. */
export interface FrontCall extends LiveCall {
  readonly version: ServiceVersion | null;
}

export interface InferLimits {
  max_body_bytes: number;
  request_timeout_ms: number;
  per_domain_per_minute: number;
  per_user_per_minute: number;
}

const NO_REQUEST: InferRequest = { inputs: [], rows: 0 };

/**
 * One inference call through its whole life: read → decode → queue → encode → reply. The object
 * is also the batcher's Job, so a request costs one allocation of bookkeeping.
 */
class InferCall implements Job, FrontCall {
  prevLive: LiveCall | null = null;
  nextLive: LiveCall | null = null;
  request: InferRequest = NO_REQUEST;
  cancelled = false;
  enqueuedAt = 0;
  decoded: Decoded | null = null;
  /** Over the body limit: the rest is read and dropped, so the client is reading when the 413 comes. */
  discarding = false;
  /** A token whose verification is still running (not in the cache yet): the request waits for it. */
  pendingAuth: Promise<Principal> | null = null;
  /** The body's Content-Encoding ('' when sent as it is): decoded before anything reads it. */
  contentEncoding = '';
  principal: Principal | null = null;
  /** The version that serves the call, chosen once the body and the caller are known. */
  version: OnnxVersion | null = null;
  /** The matched rule's setting (SPEC §7.3), for the version's hooks. */
  setting: [string, string] | null = null;
  /** Hook context: only when a rule setting is to reach hooks (a job with a ctx runs unmerged). */
  ctx: HookContext | undefined = undefined;
  /** Where the inference log kept this request's body, when it was sampled (-1: not sampled). */
  logBodyAt = -1;
  logBodyLen = 0;
  /** Sampled requests of services with shadows: what the shadows answered. */
  shadowSlot: ShadowSlot | null = null;
  /** The shadow label of this call's own version, when a shadow version drew the request itself. */
  ownShadow: string | null = null;
  private chunks: Buffer[] | null = null;
  private received = 0;

  constructor(
    private readonly front: InferenceFront,
    readonly res: HttpResponse,
    readonly requestId: string,
    readonly startedAt: number,
    readonly service: Service,
    /** A version named in the path (v2 /versions/{v}) or by a direct listener, which overrides rules and weights. */
    readonly pinned: OnnxVersion | null,
    /** The request headers the service's rules read (copied: HttpRequest dies with the handler). */
    readonly ruleHeaders: Record<string, string> | null,
    readonly contentType: string,
    readonly inferenceHeaderLength: number,
    readonly accept: string,
    /** From a high-speed listener (SPEC §5.6): not counted in statistics nor logged. */
    readonly direct = false,
  ) {}

  /** uWebSockets.js body chunk: valid only during this callback. */
  onData(chunk: ArrayBuffer, isLast: boolean): void {
    if (this.cancelled) return;
    this.received += chunk.byteLength;
    const limit = this.front.limits.max_body_bytes;
    if (this.discarding || this.received > limit) {
      this.discarding = true;
      this.chunks = null;
      if (isLast) this.reject(tooLarge(limit));
      else if (this.received > limit + DISCARD_BYTES) this.reject(tooLarge(limit), true);
      return;
    }
    if (!isLast) {
      (this.chunks ??= []).push(Buffer.from(chunk.slice(0)));
      return;
    }
    let body: Uint8Array;
    if (this.chunks) {
      this.chunks.push(Buffer.from(chunk));
      body = Buffer.concat(this.chunks);
      this.chunks = null;
    } else {
      body = new Uint8Array(chunk);
    }
    if (this.pendingAuth) {
      // The body outlives this callback now, so it is copied out of uWebSockets.js' buffer.
      const kept = Buffer.isBuffer(body) ? body : Buffer.from(body);
      this.pendingAuth.then((p) => {
        this.principal = p;
        this.callerKnown(kept);
      }, (err: unknown) => this.reject(asGatewayError(err)));
      return;
    }
    this.callerKnown(body);
  }

  /** Body and caller known: a compressed body is decoded now (never for a caller refused), then admitted. */
  private callerKnown(body: Uint8Array): void {
    if (this.cancelled) return;
    if (!isEncoded(this.contentEncoding)) return this.admit(body);
    inflateBody(body, this.contentEncoding, this.front.limits.max_body_bytes, () => this.cancelled).then((plain) => this.admit(plain), (err: unknown) => this.reject(asGatewayError(err)));
  }

  /** Body and caller known: route to a version, decode for its model, queue. */
  private admit(body: Uint8Array): void {
    if (this.cancelled) return;
    // Every version of an ONNX service runs ONNX (a service does not mix runtimes).
    const version = this.pinned ?? (this.front.route(this.service, this) as OnnxVersion);
    this.version = version;
    versionAcquired(version);
    const s = this.service;
    let decoded: Decoded | Promise<Decoded>;
    try {
      decoded = decodeRequest(body, this.bodyMeta(), version.runner.signature);
    } catch (err) {
      this.refuseBody(err);
      return;
    }
    // The body is kept now: it is valid only during this call, and the inputs are moved to a worker.
    if (!this.direct && s.log?.sample()) {
      this.logBodyAt = s.log.keepBody(body);
      this.logBodyLen = body.byteLength;
      if (s.shadows.length) this.shadowSlot = new Map(s.shadowLabels.map((l) => [l, null]));
    }
    const shadows = s.shadows.length > 0 && !this.direct;
    if (decoded instanceof Promise) {
      // Images decode off the main thread (what they need of the body was copied already), and the
      // Arrow codec may be loading: shadows decode once it is there, from a copy of the body.
      const kept = shadows ? Buffer.from(body) : null;
      decoded.then((d) => {
        this.queue(d);
        if (kept) this.front.shadow(s, version, kept, this);
      }, (err: unknown) => this.refuseBody(err));
    } else {
      this.queue(decoded);
      if (shadows) this.front.shadow(s, version, body, this);
    }
  }

  bodyMeta(): BodyMeta {
    return { contentType: this.contentType, inferenceHeaderLength: this.inferenceHeaderLength, accept: this.accept };
  }

  private queue(decoded: Decoded): void {
    if (this.cancelled) return;
    this.decoded = decoded;
    this.request = decoded.request;
    const version = this.version!;
    this.ctx = hookContext(version, this.setting, this.ruleHeaders);
    version.runner.submit(this);
  }

  private refuseBody(err: unknown): void {
    if (!(err instanceof GatewayError)) this.front.log(err);
    this.reject(asGatewayError(err));
  }

  resolve(result: InferResult): void {
    if (this.cancelled) return;
    const v = this.version!;
    let reply: Reply;
    try {
      const enc = encodeResult(this.decoded!, result, v.runner.signature, v.servedBy);
      reply = { status: 200, contentType: enc.contentType, body: enc.body, headers: enc.headers };
    } catch (err) {
      this.front.log(err);
      reply = errorReply(asGatewayError(err));
    }
    if (!this.direct) v.metrics.served(result.queueNs, result.runNs);
    if (this.logBodyAt >= 0) this.logged(reply.status, result, null);
    this.reply(reply);
  }

  reject(err: GatewayError, close = false): void {
    if (this.cancelled) return;
    if (err.status >= 500 && err.status !== 503 && err.status !== 504) this.front.log(err);
    if (this.logBodyAt >= 0) this.logged(err.status, null, err.message);
    this.reply(errorReply(err, close));
  }

  private logged(status: number, result: InferResult | null, error: string | null): void {
    const v = this.version!;
    const sig = v.runner.signature;
    if (this.ownShadow !== null && this.shadowSlot) recordShadow(this.shadowSlot, this.ownShadow, sig, result, this.request.rows, error);
    this.service.log!.commit(this.requestId, this.logBodyAt, this.logBodyLen, this.contentType, this.inferenceHeaderLength, v.servedBy, sig, status, result, this.request.rows, error, this.shadowSlot);
  }

  /** The client went away: nothing may touch `res` any more. */
  abort(): void {
    if (this.cancelled) return;
    this.cancelled = true;
    this.front.settle(this);
    this.release();
  }

  expire(ms: number): void {
    this.reject(new GatewayError(504, 'Timeout', `no answer within ${ms} ms (limits.request_timeout_ms); the request was abandoned`));
  }

  private reply(reply: Reply): void {
    this.cancelled = true;
    const v = this.version;
    writeReply(this.res, reply, this.requestId, v ? v.servedBy.label : null);
    if (this.direct) { /* the high-speed channel keeps no statistics */ }
    else if (v) v.metrics.request(reply.status, (performance.now() - this.startedAt) / 1000);
    else this.front.unrouted(reply.status);
    this.front.settle(this);
    this.release();
  }

  /**
   * uWebSockets.js keeps the onData/onAborted closures, and through them this call, alive well
   * after the reply; dropping the request's data here keeps it out of the old generation
   * (the profile showed most of each request promoted and a GC cost larger than the codecs').
   */
  private release(): void {
    this.decoded = null;
    this.request = NO_REQUEST;
    this.chunks = null;
    this.shadowSlot = null;
  }
}

/**
 * A shadow version's copy of a request (SPEC §7.4): runs on the shadow's own runner, answers
 * nobody, and puts its outputs in the request's log record. It releases the version the front
 * acquired for it (before decoding), so a rolling update waits for it before closing the runner.
 */
class ShadowJob implements Job {
  cancelled = false;
  enqueuedAt = 0;

  constructor(
    readonly request: InferRequest,
    private readonly version: OnnxVersion,
    private readonly slot: ShadowSlot | null,
    private readonly label: string,
  ) {}

  resolve(result: InferResult): void {
    if (this.slot) recordShadow(this.slot, this.label, this.version.runner.signature, result, this.request.rows, null);
    versionReleased(this.version);
  }

  reject(err: GatewayError): void {
    if (this.slot) recordShadow(this.slot, this.label, this.version.runner.signature, null, this.request.rows, err.message);
    versionReleased(this.version);
  }
}

/** The v2 binary extension's Inference-Header-Content-Length: -1 when absent; digits only. */
function inferenceHeaderLength(req: HttpRequest): number | GatewayError {
  const ihcl = req.getHeader('inference-header-content-length');
  if (!ihcl) return -1;
  if (!/^\d{1,10}$/.test(ihcl)) return new GatewayError(400, 'BadHeader', `Inference-Header-Content-Length must be a non-negative integer (digits only), got '${ihcl}'`);
  return Number(ihcl);
}

const tooLarge = (limit: number): GatewayError =>
  new GatewayError(413, 'PayloadTooLarge', `the request body is over the limit of ${limit} bytes (limits.max_body_bytes)`);

/** The data plane's inference entry: resolves the service, admits the call and tracks deadlines. */
export class InferenceFront implements ProxyHost {
  /** Calls in arrival order; with one timeout for all, the oldest expire first. */
  private readonly live = new LiveList();
  private readonly sweeper: NodeJS.Timeout;
  private readonly domainQuota: MinuteQuota | null;
  private readonly userQuota: MinuteQuota | null;
  private idleWaiters: (() => void)[] = [];

  constructor(
    readonly table: RoutingTable,
    readonly limits: InferLimits,
    private readonly metrics: Metrics,
    private readonly access: Access,
    readonly log: (err: unknown) => void,
  ) {
    this.domainQuota = limits.per_domain_per_minute > 0 ? new MinuteQuota(limits.per_domain_per_minute, 'domain') : null;
    this.userQuota = limits.per_user_per_minute > 0 ? new MinuteQuota(limits.per_user_per_minute, 'user') : null;
    const tick = Math.max(5, Math.min(250, Math.floor(limits.request_timeout_ms / 5)));
    this.sweeper = setInterval(() => this.expire(), tick);
    this.sweeper.unref();
  }

  get inflight(): number {
    return this.live.size;
  }

  get maxBodyBytes(): number {
    return this.limits.max_body_bytes;
  }

  /**
   * Route handler. `serviceParam` is the route parameter holding the service id or name;
   * `versionParam` (v2 `/versions/{version}`) pins a service version. `forwardsPath`: the route is
   * ModelArts' `/v1/infers/{service}/{api path}`, whose api path an Image model receives.
   */
  handle(res: HttpResponse, req: HttpRequest, serviceParam: number, versionParam = -1, forwardsPath = false): void {
    const startedAt = performance.now();
    const key = routeParam(req, serviceParam);
    const requestId = req.getHeader('x-request-id') || newRequestId();
    const service = this.table.get(key);
    if (!service) return this.refuse(res, requestId, notFound(`service '${key}' does not exist`, 'ServiceNotFound'));
    let pendingAuth: Promise<Principal> | null = null;
    let principal: Principal | null = null;
    if (service.auth === 'token') {
      try {
        const p = this.access.authenticate(tokenOf(req.getHeader('x-auth-token'), req.getHeader('authorization')));
        if (p instanceof Promise) {
          pendingAuth = p.then((q) => {
            this.authorize(q, service);
            return q;
          });
          // Handled when the body is in; until then a refusal must not count as unhandled.
          pendingAuth.catch(() => undefined);
        } else {
          this.authorize(p, service);
          principal = p;
        }
      } catch (err) {
        return this.refuse(res, requestId, asGatewayError(err));
      }
    }
    const unavailable = statusError(service);
    if (unavailable) return this.refuse(res, requestId, unavailable);
    if (service.limiter) {
      const wait = service.limiter.take(startedAt);
      if (wait > 0) return this.refuse(res, requestId, overLimit(service.name, service.limiter.rate, wait));
    }
    let pinned: ServiceVersion | null = null;
    if (versionParam >= 0) {
      const wanted = routeParam(req, versionParam);
      pinned = service.versions.find((v) => v.modelVersion === wanted) ?? null;
      if (!pinned) return this.refuse(res, requestId, notFound(`service '${service.name}' has no version '${wanted}'`, 'VersionNotFound'));
    }
    let ruleHeaders: Record<string, string> | null = null;
    if (service.rules) {
      ruleHeaders = {};
      for (const h of service.rules.headers) ruleHeaders[h] = req.getHeader(h);
    }
    if (service.kind === 'image') {
      const upstream = upstreamRequest(req, forwardsPath ? apiPathOf(req.getUrl()) : '/', service.auth === 'token');
      if (upstream.contentLength > this.limits.max_body_bytes + DISCARD_BYTES) {
        return this.refuse(res, requestId, tooLarge(this.limits.max_body_bytes), true);
      }
      const call = new ProxyCall(this, res, requestId, startedAt, service, pinned, ruleHeaders, upstream);
      call.principal = principal;
      call.pendingAuth = pendingAuth;
      this.live.add(call);
      res.onAborted(() => call.abort());
      res.onData((chunk, isLast) => call.onData(chunk, isLast));
      return;
    }
    const declared = Number(req.getHeader('content-length') || 0);
    if (declared > this.limits.max_body_bytes + DISCARD_BYTES) {
      return this.refuse(res, requestId, tooLarge(this.limits.max_body_bytes), true);
    }
    const ihLength = inferenceHeaderLength(req);
    if (ihLength instanceof GatewayError) return this.refuse(res, requestId, ihLength);
    const call = new InferCall(this, res, requestId, startedAt, service, pinned as OnnxVersion | null, ruleHeaders, req.getHeader('content-type'), ihLength, req.getHeader('accept'));
    call.contentEncoding = req.getHeader('content-encoding');
    call.principal = principal;
    call.pendingAuth = pendingAuth;
    if (declared > this.limits.max_body_bytes) call.discarding = true;
    this.live.add(call);
    res.onAborted(() => call.abort());
    res.onData((chunk, isLast) => call.onData(chunk, isLast));
  }

  /**
   * The high-speed channel (SPEC §5.6): straight to one version's batcher, without
   * authentication, rules, limits or statistics.
   */
  handleDirect(res: HttpResponse, req: HttpRequest, service: Service, version: OnnxVersion): void {
    const requestId = req.getHeader('x-request-id') || newRequestId();
    const ihLength = inferenceHeaderLength(req);
    if (ihLength instanceof GatewayError) return writeReply(res, errorReply(ihLength), requestId, null);
    const call = new InferCall(this, res, requestId, performance.now(), service, version, null, req.getHeader('content-type'), ihLength, req.getHeader('accept'), true);
    call.contentEncoding = req.getHeader('content-encoding');
    if (Number(req.getHeader('content-length') || 0) > this.limits.max_body_bytes) call.discarding = true;
    this.live.add(call);
    res.onAborted(() => call.abort());
    res.onData((chunk, isLast) => call.onData(chunk, isLast));
  }

  /** The first rule whose condition holds picks the version (and its setting); otherwise the weights do (SPEC §7.3, §7.4). */
  route(service: Service, call: { principal: Principal | null; ruleHeaders: Record<string, string> | null; setting: [string, string] | null }): ServiceVersion {
    const rules = service.rules;
    if (rules) {
      const input = ruleInput(service, call.principal, call.ruleHeaders ?? {});
      for (const r of rules.list) {
        if (r.holds(input)) {
          call.setting = r.setting;
          return r.version;
        }
      }
    }
    return pickVersion(service);
  }

  /** Copies of the request for the service's shadow versions; a copy that cannot be made is logged as such. */
  shadow(service: Service, primary: ServiceVersion, body: Uint8Array, call: InferCall): void {
    for (let i = 0; i < service.shadows.length; i++) {
      const v = service.shadows[i]! as OnnxVersion;
      const label = service.shadowLabels[i]!;
      if (v === primary) {
        call.ownShadow = label;
        continue;
      }
      const slot = call.shadowSlot;
      const refused = (err: unknown): void => {
        if (slot) recordShadow(slot, label, v.runner.signature, null, 0, asGatewayError(err).message);
      };
      // Held while a multipart body's images decode for it (a rolling update waits for the shadow too).
      versionAcquired(v);
      try {
        const decoded = decodeRequest(body, call.bodyMeta(), v.runner.signature);
        if (decoded instanceof Promise) {
          decoded.then((d) => v.runner.submit(new ShadowJob(d.request, v, slot, label)), (err: unknown) => {
            refused(err);
            versionReleased(v);
          });
        } else {
          v.runner.submit(new ShadowJob(decoded.request, v, slot, label));
        }
      } catch (err) {
        refused(err);
        versionReleased(v);
      }
    }
  }

  unrouted(status: number): void {
    this.metrics.unrouted(status);
  }

  /** May this caller infer on this service now: its role, then its domain's and its own quotas. */
  authorize(p: Principal, service: Service): void {
    this.access.require(p, service.projectId, 'infer', `inference on service '${service.name}'`);
    this.chargeQuotas(p);
  }

  /** One request against the caller's domain and user quotas (429 when over). */
  chargeQuotas(p: Principal): void {
    this.domainQuota?.take(p.domain);
    this.userQuota?.take(p.username);
  }

  /** Tracks a call admitted elsewhere (a WebSocket message) for its deadline and for shutdown. */
  track(call: FrontCall): void {
    this.live.add(call);
  }

  private refuse(res: HttpResponse, requestId: string, err: GatewayError, close = false): void {
    writeReply(res, errorReply(err, close), requestId, null);
    this.metrics.unrouted(err.status);
  }

  settle(call: FrontCall): void {
    if (!this.live.remove(call)) return;
    if (call.version) versionReleased(call.version);
    if (this.live.size === 0 && this.idleWaiters.length) {
      const waiters = this.idleWaiters;
      this.idleWaiters = [];
      for (const w of waiters) w();
    }
  }

  /** Resolves when no call is in flight (graceful shutdown). */
  idle(): Promise<void> {
    if (this.live.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private expire(): void {
    const deadline = performance.now() - this.limits.request_timeout_ms;
    for (const call of this.live.startedBy(deadline)) call.expire(this.limits.request_timeout_ms);
  }

  close(): void {
    clearInterval(this.sweeper);
  }
}


/**
 * The context a matched rule's setting gives the version's hooks (SPEC §7.3); undefined without
 * one or without hooks, so the request may still be merged with others.
 */
export function hookContext(version: OnnxVersion, setting: [string, string] | null, headers: Record<string, string> | null): HookContext | undefined {
  if (!setting || !version.runner.hookDir) return undefined;
  return { modelPath: version.runner.hookDir, settings: { [setting[0]]: setting[1] }, headers: headers ?? {} };
}

export function ruleInput(service: Service, p: Principal | null, headers: Record<string, string>): RuleInput {
  return {
    header: (h) => headers[h] || null,
    variable: (name) => {
      switch (name) {
        case 'PROJECT_NAME': return service.projectName;
        case 'PROJECT_ID': return service.projectId;
        case 'USER_NAME': return p?.username ?? null;
        case 'USER_ID': return p?.userId ?? null;
        default: return p?.domain ?? null; // DOMAIN_NAME, DOMAIN_ID: a user's domain is its tenant
      }
    },
  };
}

export function overLimit(name: string, rate: number, waitSeconds: number): GatewayError {
  // Whole seconds, as Retry-After takes them (a limit of 1e-9 requests/s would otherwise say 1e+9 in exponent form).
  const after = Math.min(86_400, Math.max(1, Math.ceil(waitSeconds)));
  return new GatewayError(429, 'TrafficLimit', `service '${name}' is over its traffic limit of ${rate} requests/s; retry after ${after} s`, { 'Retry-After': String(after) });
}

export function statusError(s: Service): GatewayError | null {
  switch (s.status) {
    case 'running':
    case 'alarm':
      return null;
    case 'deploying':
      return new GatewayError(503, 'ServiceDeploying', `service '${s.name}' is still deploying; retry when it is running`);
    case 'stopped':
      return new GatewayError(409, 'ServiceStopped', `service '${s.name}' is stopped; start it to send inference requests`);
    default:
      return new GatewayError(503, 'ServiceUnavailable', `service '${s.name}' is ${s.status} and cannot serve requests`);
  }
}
