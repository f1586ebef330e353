import { servedBy, type ServedBy } from '../codecs/types.js';
import type { ImageRunner } from '../runtime/image/runner.js';
import type { OnnxRunner } from '../runtime/onnx/runner.js';
import type { TokenBucket } from '../traffic/bucket.js';
import type { Condition } from '../traffic/rules.js';
import type { VersionMetrics } from '../telemetry/metrics.js';
import type { ServiceLog } from '../telemetry/inference-log.js';

export type ServiceStatus = 'deploying' | 'running' | 'stopped' | 'abnormal' | 'alarm' | 'failed' | 'deleting';

/** What serves a version: an ONNX Runtime pool behind a batcher, or instances of an image behind the proxy. */
export type Runner = OnnxRunner | ImageRunner;

/** A model version deployed in a service, with everything the data plane needs to serve it. */
export interface ServiceVersion<R extends Runner = Runner> {
  /** What was deployed (model, version and settings): equal keys can share their runners across an update. */
  key: string;
  model: string;
  modelVersion: string;
  sha256: string;
  weight: number;
  instances: number;
  runner: R;
  servedBy: ServedBy;
  metrics: VersionMetrics;
  /** Calls holding this version (admitted, not yet answered): it drains before its runner closes. */
  active: number;
  idleWaiters: (() => void)[];
}

export type OnnxVersion = ServiceVersion<OnnxRunner>;

export function versionAcquired(v: ServiceVersion): void {
  v.active++;
}

export function versionReleased(v: ServiceVersion): void {
  if (--v.active === 0 && v.idleWaiters.length) {
    const waiters = v.idleWaiters;
    v.idleWaiters = [];
    for (const w of waiters) w();
  }
}

/** Resolves once no call holds the version; the table no longer offers it, so none will come. */
export function versionIdle(v: ServiceVersion): Promise<void> {
  if (v.active === 0) return Promise.resolve();
  return new Promise((resolve) => v.idleWaiters.push(resolve));
}

/** Routing rules compiled against a service's versions. */
export interface CompiledRules {
  list: { holds: Condition; version: ServiceVersion; setting: [string, string] | null }[];
  /** Headers the conditions read (lower case). */
  headers: string[];
}

export interface Service {
  id: string;
  /** How its versions run (a service does not mix runtimes): the front decodes for ONNX and proxies for images. */
  kind: 'onnx' | 'image';
  name: string;
  projectId: string;
  projectName: string;
  rules: CompiledRules | null;
  status: ServiceStatus;
  auth: 'none' | 'token';
  /** traffic_limit's bucket; kept across updates so a rolling update does not refill it. */
  limiter: TokenBucket | null;
  versions: ServiceVersion[];
  /** Versions that get a copy of each request, for the inference log only (SPEC §7.4). */
  shadows: ServiceVersion[];
  /** `out_<version>` labels of the shadows, in order. */
  shadowLabels: string[];
  log: ServiceLog | null;
  /** Direct listeners (ONNX) or the instances' own addresses (images) are offered (SPEC §5.6). */
  highSpeed: boolean;
  /** WebSocket upgrades are taken on the inference URL (SPEC §5.5). */
  websocket: boolean;
  /** Running sums of weights, for drawing a version (gray release). */
  cumulativeWeights: number[];
}

export interface ServiceParts {
  id: string;
  name: string;
  projectId: string;
  projectName: string;
  status: ServiceStatus;
  auth: 'none' | 'token';
  versions: ServiceVersion[];
  limiter: TokenBucket | null;
  rules: CompiledRules | null;
  shadows: ServiceVersion[];
  log: ServiceLog | null;
  highSpeed: boolean;
  websocket: boolean;
}

export function makeService(parts: ServiceParts): Service {
  let sum = 0;
  const cumulativeWeights = parts.versions.map((v) => (sum += v.weight));
  // out_<version>; where two models of the service share a version string, out_<model>@<version>.
  const kind = parts.versions[0]?.runner.kind ?? 'onnx';
  const shadowLabels = parts.shadows.map((v) => (parts.versions.filter((o) => o.modelVersion === v.modelVersion).length > 1 ? `out_${v.model}@${v.modelVersion}` : `out_${v.modelVersion}`));
  return { ...parts, kind, cumulativeWeights, shadowLabels };
}

export function makeServedBy(model: string, modelVersion: string, sha256: string, serviceName: string, split = false): ServedBy {
  return servedBy(model, modelVersion, sha256, `${serviceName}-${modelVersion}`, split);
}

/** Draws a version by weight; a service with one version skips the draw. */
export function pickVersion(s: Service): ServiceVersion {
  const vs = s.versions;
  if (vs.length === 1) return vs[0]!;
  const total = s.cumulativeWeights[s.cumulativeWeights.length - 1]!;
  const x = Math.random() * total;
  for (let i = 0; i < vs.length; i++) if (x < s.cumulativeWeights[i]!) return vs[i]!;
  return vs[vs.length - 1]!;
}

/**
 * The table the data plane reads: services by id and by name. The control plane builds a new
 * table and swaps it in one assignment, so a request sees either the old or the new one whole.
 */
export class RoutingTable {
  private byKey = new Map<string, Service>();
  private list: Service[] = [];
  private readonly watchers: ((services: readonly Service[]) => void)[] = [];

  /** Called after every swap (the high-speed channel opens and closes its listeners). */
  onSwap(watcher: (services: readonly Service[]) => void): void {
    this.watchers.push(watcher);
  }

  get(key: string): Service | undefined {
    return this.byKey.get(key);
  }

  all(): readonly Service[] {
    return this.list;
  }

  swap(services: Service[]): void {
    const next = new Map<string, Service>();
    // A name two projects use reaches the older service (services arrive in creation order), so a
    // tenant reusing a name never takes over another's clients; the newer is reached by id.
    for (const s of services) next.set(s.id, s);
    for (const s of services) if (!next.has(s.name)) next.set(s.name, s);
    this.byKey = next;
    this.list = services;
    for (const w of this.watchers) w(services);
  }
}
