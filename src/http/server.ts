import { listenExclusive } from './listen.js';
import { newRequestId } from './request-id.js';
import uWS from 'uWebSockets.js';
import type { HttpRequest, HttpResponse, TemplatedApp, us_listen_socket } from 'uWebSockets.js';
import type { RoutingTable, Service } from '../control/services.js';
import { GatewayError, notFound } from '../errors.js';
import { v2Datatype } from '../codecs/v2.js';
import type { IoSpec } from '../runtime/onnx/signature.js';
import type { Metrics } from '../telemetry/metrics.js';
import { InferenceFront, type InferLimits } from './infer.js';
import type { Access } from '../auth/access.js';
import { registerManagement, type ManagementDeps } from './manage.js';
import { DirectChannel } from './direct.js';
import { WebSocketFront, type WsSettings } from './websocket.js';
import { routeParam } from './params.js';
import { errorReply, isHead, jsonReply, methodNotAllowed, upgradeOrPost, writeReply, type Reply } from './respond.js';

export interface ServerState {
  /** Services are deployed and the listener is open. */
  ready: boolean;
  /** SIGTERM received: finishing in-flight requests. */
  draining: boolean;
}

export interface HttpServerOptions {
  table: RoutingTable;
  metrics: Metrics;
  limits: InferLimits;
  state: ServerState;
  version: string;
  logError: (err: unknown) => void;
  management?: Omit<ManagementDeps, 'logError' | 'directEndpoints'>;
  access: Access;
  /** The high-speed channel's listeners (server.direct_host, server.direct_ports). */
  direct?: { host: string; ports: string; warn: (msg: string) => void };
  /** WebSocket backpressure and limits (SPEC §5.5). */
  websocket: Omit<WsSettings, 'maxMessageBytes' | 'requestTimeoutMs'>;
}

/** Inference routes: [pattern, route parameter holding the service, parameter holding the version, forwards its api path to images]. */
const INFER_ROUTES: [string, number, number, boolean?][] = [
  ['/v1/infers/:service', 0, -1],
  ['/v1/infers/:service/*', 0, -1, true],
  ['/v2/models/:service/infer', 0, -1],
  ['/v2/models/:service/versions/:version/infer', 0, 1],
  ['/ml/v4/deployments/:service/predictions', 0, -1],
  ['/v1/api/pipelines/infer/:service', 0, -1],
  // Wallaroo forms the deployment as {pipeline}-{id}; the service is the last segment.
  ['/v1/api/pipelines/infer/:deployment/:service', 1, -1],
];

const V2_EXTENSIONS = ['binary_tensor_data'];

/** The listener: uWebSockets.js routes onto the inference front and the operational endpoints. */
export class HttpServer {
  readonly app: TemplatedApp;
  readonly front: InferenceFront;
  readonly sockets: WebSocketFront;
  readonly direct: DirectChannel | null;
  private listenSocket: us_listen_socket | null = null;

  constructor(private readonly opts: HttpServerOptions) {
    this.front = new InferenceFront(opts.table, opts.limits, opts.metrics, opts.access, opts.logError);
    this.sockets = new WebSocketFront(this.front, opts.table, opts.access, {
      ...opts.websocket, maxMessageBytes: opts.limits.max_body_bytes, requestTimeoutMs: opts.limits.request_timeout_ms,
    }, opts.logError);
    opts.metrics.gauge('infergate_websocket_connections', 'Open WebSocket connections', () => this.sockets.connections);
    opts.metrics.gauge('infergate_websocket_held_bytes', 'Bytes held for WebSocket clients: answers not yet read, messages waiting', () => this.sockets.heldBytes);
    this.direct = opts.direct ? new DirectChannel(opts.table, this.front, this.sockets, opts.direct.host, opts.direct.ports, opts.direct.warn) : null;
    const app = (this.app = uWS.App());
    // A GET with Upgrade: websocket on the inference URL (SPEC §5.5); other GETs fall through to 426.
    this.sockets.register(app, '/v1/infers/:service', false);
    this.sockets.register(app, '/v1/infers/:service/*', true);
    for (const [pattern, svc, ver, api] of INFER_ROUTES) {
      app.post(pattern, (res, req) => this.front.handle(res, req, svc, ver, api === true));
      // The ModelArts paths take a WebSocket upgrade too, which is a GET.
      if (pattern.startsWith('/v1/infers/')) app.any(pattern, (res, req) => upgradeOrPost(res, req, req.getUrl()));
      else app.any(pattern, (res, req) => methodNotAllowed(res, req, 'POST'));
    }
    this.get('/healthz', () => jsonReply(200, { status: 'ok' }));
    this.get('/readyz', () => (this.isReady() ? jsonReply(200, { status: 'ready' }) : jsonReply(503, { status: opts.state.draining ? 'draining' : 'starting' })));
    this.get('/v2/health/live', () => jsonReply(200, { live: true }));
    this.get('/v2/health/ready', () => jsonReply(this.isReady() ? 200 : 503, { ready: this.isReady() }));
    this.get('/v2', () => jsonReply(200, { name: 'infergate', version: opts.version, extensions: V2_EXTENSIONS }));
    this.get('/v2/models/:service', (req) => modelMetadata(this.service(req)));
    this.get('/v2/models/:service/versions/:version', (req) => modelMetadata(this.service(req), routeParam(req, 1)));
    this.get('/v2/models/:service/ready', (req) => {
      const s = this.service(req);
      return jsonReply(s.status === 'running' ? 200 : 503, { name: s.name, ready: s.status === 'running' });
    });
    this.get('/v2/models/:service/versions/:version/ready', (req) => {
      const s = this.service(req);
      const version = routeParam(req, 1);
      if (!s.versions.some((v) => v.modelVersion === version)) throw notFound(`service '${s.name}' has no version '${version}'`, 'VersionNotFound');
      return jsonReply(s.status === 'running' ? 200 : 503, { name: s.name, version, ready: s.status === 'running' });
    });
    app.get('/metrics', (res) => this.metrics(res));
    app.any('/metrics', (res, req) => methodNotAllowed(res, req, 'GET'));
    if (opts.management) registerManagement(app, { ...opts.management, logError: opts.logError, directEndpoints: (id) => this.direct?.endpointsOf(id) ?? [] });
    app.any('/*', (res, req) => {
      const err = notFound(`no route for ${req.getCaseSensitiveMethod()} ${req.getUrl()}`, 'RouteNotFound');
      writeReply(res, errorReply(err), req.getHeader('x-request-id') || newRequestId(), null, isHead(req.getMethod()));
    });
  }

  private isReady(): boolean {
    return this.opts.state.ready && !this.opts.state.draining;
  }

  private service(req: HttpRequest): Service {
    const key = routeParam(req, 0);
    const s = this.opts.table.get(key);
    if (!s) throw notFound(`service '${key}' does not exist`, 'ServiceNotFound');
    return s;
  }

  /** A synchronous GET (and HEAD) endpoint answering JSON; GatewayErrors become their replies; other methods 405. */
  private get(pattern: string, answer: (req: HttpRequest) => Reply): void {
    const handler = (res: HttpResponse, req: HttpRequest): void => {
      const requestId = req.getHeader('x-request-id') || newRequestId();
      let reply: Reply;
      try {
        reply = answer(req);
      } catch (err) {
        reply = errorReply(err instanceof GatewayError ? err : new GatewayError(500, 'Internal', 'internal error'));
        if (!(err instanceof GatewayError)) this.opts.logError(err);
      }
      writeReply(res, reply, requestId, null, isHead(req.getMethod()));
    };
    this.app.get(pattern, handler);
    this.app.head(pattern, handler);
    this.app.any(pattern, (res, req) => methodNotAllowed(res, req, 'GET, HEAD'));
  }

  private metrics(res: HttpResponse): void {
    let aborted = false;
    res.onAborted(() => (aborted = true));
    this.opts.metrics.render().then(
      (text) => {
        if (!aborted) writeReply(res, { status: 200, contentType: this.opts.metrics.contentType, body: text }, newRequestId(), null);
      },
      (err: unknown) => {
        this.opts.logError(err);
        if (!aborted) writeReply(res, errorReply(new GatewayError(500, 'Internal', 'metrics collection failed')), newRequestId(), null);
      },
    );
  }

  listen(host: string, port: number): Promise<number> {
    return new Promise((resolve, reject) => {
      listenExclusive(this.app, host, port, (socket) => {
        if (!socket) {
          reject(new Error(`cannot listen on ${host}:${port} (address in use or not available)`));
          return;
        }
        this.listenSocket = socket;
        resolve(uWS.us_socket_local_port(socket as unknown as uWS.us_socket));
      });
    });
  }

  /** Stops accepting new connections; open ones finish what they started. */
  stopAccepting(): void {
    if (this.listenSocket) uWS.us_listen_socket_close(this.listenSocket);
    this.listenSocket = null;
    this.direct?.stopAccepting();
    // Open WebSockets would otherwise keep bringing new messages while the gateway waits for quiet.
    this.sockets.stopTaking();
  }

  close(): void {
    this.stopAccepting();
    this.direct?.close();
    this.front.close();
    this.app.close();
  }
}

function ioMetadata(s: IoSpec): { name: string; datatype: string; shape: number[] } {
  return { name: s.name, datatype: v2Datatype(s.type), shape: s.dims };
}

function modelMetadata(s: Service, version?: string): Reply {
  const v = version === undefined ? s.versions[0]! : s.versions.find((x) => x.modelVersion === version);
  if (!v) throw notFound(`service '${s.name}' has no version '${version}'`, 'VersionNotFound');
  const versions = s.versions.map((x) => x.modelVersion);
  // An image model's server owns its protocol: the gateway knows no tensors to describe.
  if (v.runner.kind === 'image') return jsonReply(200, { name: s.name, versions, platform: 'custom_image', inputs: [], outputs: [] });
  const sig = v.runner.signature;
  return jsonReply(200, {
    name: s.name,
    versions,
    platform: 'onnxruntime_onnx',
    inputs: sig.inputs.map(ioMetadata),
    outputs: sig.outputs.map(ioMetadata),
  });
}
