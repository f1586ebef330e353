import { listenExclusive } from './listen.js';
import uWS from 'uWebSockets.js';
import type { TemplatedApp, us_listen_socket } from 'uWebSockets.js';
import type { OnnxVersion, RoutingTable, Service } from '../control/services.js';
import { GatewayError, notFound } from '../errors.js';
import type { Endpoint } from '../runtime/image/runner.js';
import type { InferenceFront } from './infer.js';
import type { WebSocketFront } from './websocket.js';
import { newRequestId } from './request-id.js';
import { errorReply, upgradeOrPost, writeReply } from './respond.js';

interface Listener {
  serviceId: string;
  model: string;
  version: string;
  port: number;
  app: TemplatedApp;
  socket: us_listen_socket;
}

/** Parses `server.direct_ports`: "31000-31999" or one port. */
export function portRange(spec: string): [number, number] {
  const m = /^\s*(\d+)\s*(?:-\s*(\d+))?\s*$/.exec(spec);
  const lo = m ? Number(m[1]) : NaN;
  const hi = m ? Number(m[2] ?? m[1]) : NaN;
  if (!(lo >= 1 && hi <= 65535 && lo <= hi)) throw new Error(`server.direct_ports must be a port range such as "31000-31999", got '${spec}'`);
  return [lo, hi];
}

/**
 * The high-speed channel (SPEC §5.6, ModelArts "VPC high-speed access"): every version of an
 * ONNX service with `high_speed: true` gets a listener of its own that feeds its batcher
 * directly, skipping authentication, rules, limits, load balancing and statistics. Listeners
 * follow the routing table: opened when such a version starts serving, closed when it stops.
 */
export class DirectChannel {
  private readonly listeners = new Map<string, Listener>();
  private readonly range: [number, number];
  private closed = false;

  constructor(
    private readonly table: RoutingTable,
    private readonly front: InferenceFront,
    private readonly sockets: WebSocketFront,
    private readonly host: string,
    ports: string,
    private readonly warn: (msg: string) => void,
  ) {
    this.range = portRange(ports);
    table.onSwap((services) => this.sync(services));
    this.sync(table.all());
  }

  /** The listeners of a service, as the endpoints API reports them. */
  endpointsOf(serviceId: string): Endpoint[] {
    return [...this.listeners.values()].filter((l) => l.serviceId === serviceId).map((l) => ({ schema: 'http', ip: this.host, port: l.port, version: l.version, instance: `${l.model}@${l.version}` }));
  }

  private sync(services: readonly Service[]): void {
    if (this.closed) return;
    const wanted = new Set<string>();
    for (const s of services) {
      if (!s.highSpeed || s.kind !== 'onnx' || (s.status !== 'running' && s.status !== 'alarm')) continue;
      for (const v of s.versions) {
        const key = `${s.id}\u0000${v.model}@${v.modelVersion}`;
        wanted.add(key);
        if (!this.listeners.has(key)) this.open(key, s.id, v.model, v.modelVersion);
      }
    }
    for (const [key, l] of this.listeners) {
      if (!wanted.has(key)) {
        uWS.us_listen_socket_close(l.socket);
        l.app.close();
        this.listeners.delete(key);
      }
    }
  }

  private open(key: string, serviceId: string, model: string, version: string): void {
    const app = uWS.App();
    // The version is looked up per request: a rolling update swaps its runner under the same listener.
    const pick = (): { service: Service; version: OnnxVersion } | null => {
      const s = this.table.get(serviceId);
      const v = s?.versions.find((x) => x.model === model && x.modelVersion === version) as OnnxVersion | undefined;
      return s && v ? { service: s, version: v } : null;
    };
    this.sockets.registerDirect(app, serviceId, pick);
    app.post('/', (res, req) => {
      const found = pick();
      if (!found) {
        writeReply(res, errorReply(new GatewayError(503, 'ServiceUnavailable', `${model}@${version} is not serving on this listener any more`)), req.getHeader('x-request-id') || newRequestId(), null);
        return;
      }
      this.front.handleDirect(res, req, found.service, found.version);
    });
    app.any('/*', (res, req) => {
      // `/` takes POST and a WebSocket upgrade (a GET), as the routed inference URL does.
      if (req.getUrl() === '/') return upgradeOrPost(res, req, 'the high-speed listener (/)');
      const err = notFound(`no route for ${req.getCaseSensitiveMethod()} ${req.getUrl()}; the high-speed listener serves POST / and WebSocket upgrades on /`, 'RouteNotFound');
      writeReply(res, errorReply(err), req.getHeader('x-request-id') || newRequestId(), null);
    });
    const used = new Set([...this.listeners.values()].map((l) => l.port));
    for (let port = this.range[0]; port <= this.range[1]; port++) {
      if (used.has(port)) continue;
      let socket: us_listen_socket | false = false;
      listenExclusive(app, this.host, port, (s) => {
        socket = s;
      });
      if (socket) {
        this.listeners.set(key, { serviceId, model, version, port, app, socket });
        return;
      }
    }
    app.close();
    this.warn(`no free port in server.direct_ports ${this.range[0]}-${this.range[1]} on ${this.host} for the high-speed listener of ${model}@${version}`);
  }

  /** Graceful stop, first step: no new connections; requests in flight finish. */
  stopAccepting(): void {
    this.closed = true;
    for (const l of this.listeners.values()) uWS.us_listen_socket_close(l.socket);
  }

  close(): void {
    this.stopAccepting();
    for (const l of this.listeners.values()) l.app.close();
    this.listeners.clear();
  }
}
