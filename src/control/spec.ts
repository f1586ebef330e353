import { badRequest } from '../errors.js';
import type { BatchingConfig } from '../runtime/onnx/batcher.js';
import type { Provider } from '../runtime/onnx/providers.js';

/** One version of a service as stored: the model version and how to run it. */
export interface VersionSpec {
  model: string;
  version: string;
  weight: number;
  instances: number;
  provider: Provider;
  provider_fallback?: Provider;
  intra_op_threads: number;
  batching?: Partial<BatchingConfig>;
}

/** A service's desired state as stored (SPEC §6 create fields the gateway acts on today). */
export interface ServiceSpec {
  description: string;
  auth: 'none' | 'token';
  timeout_minutes: number;
  /** Requests per second the service admits (token bucket), or null for no limit. */
  traffic_limit: number | null;
  versions: VersionSpec[];
}

export const SERVICE_NAME = /^[A-Za-z0-9_-]{1,64}$/;
const BATCH_KEYS = ['max_batch_size', 'max_queue_delay_us', 'max_queue_size'];

/** Resolves an omitted model version to the model's latest. */
export type LatestVersion = (model: string) => string;

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

function int(v: unknown, where: string, min: number, dflt: number): number {
  if (v === undefined) return dflt;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min) throw badRequest(`${where} must be an integer ≥ ${min}, got ${JSON.stringify(v)}`, 'BadSpec');
  return v;
}

function provider(v: unknown, where: string): Provider | undefined {
  if (v === undefined) return undefined;
  if (v !== 'cpu' && v !== 'cuda') throw badRequest(`${where} must be "cpu" or "cuda", got ${JSON.stringify(v)}`, 'BadSpec');
  return v;
}

function versionSpec(raw: unknown, i: number, single: boolean, latest: LatestVersion): VersionSpec {
  const at = `versions[${i}]`;
  if (!isObj(raw)) throw badRequest(`${at} must be an object {"model", "version", "weight"}`, 'BadSpec');
  const known = new Set(['model', 'version', 'weight', 'instances', 'provider', 'provider_fallback', 'intra_op_threads', 'batching']);
  const extra = Object.keys(raw).find((k) => !known.has(k));
  if (extra) throw badRequest(`${at}: unknown field '${extra}'; expected ${[...known].join(', ')}`, 'BadSpec');
  if (typeof raw['model'] !== 'string' || raw['model'] === '') throw badRequest(`${at}.model must name a model`, 'BadSpec');
  const model = raw['model'];
  if (raw['version'] !== undefined && typeof raw['version'] !== 'string') throw badRequest(`${at}.version must be a string such as "0.0.1"`, 'BadSpec');
  const version = (raw['version'] as string | undefined) ?? latest(model);
  if (raw['weight'] === undefined && !single) throw badRequest(`${at}.weight is required when a service has several versions (weights sum to 100)`, 'BadSpec');
  const weight = int(raw['weight'], `${at}.weight`, 0, 100);
  let batching: Partial<BatchingConfig> | undefined;
  if (raw['batching'] !== undefined) {
    if (!isObj(raw['batching'])) throw badRequest(`${at}.batching must be an object`, 'BadSpec');
    batching = {};
    for (const [k, v] of Object.entries(raw['batching'])) {
      if (!BATCH_KEYS.includes(k)) throw badRequest(`${at}.batching: unknown field '${k}'; expected ${BATCH_KEYS.join(', ')}`, 'BadSpec');
      batching[k as keyof BatchingConfig] = int(v, `${at}.batching.${k}`, k === 'max_queue_delay_us' ? 0 : 1, 0);
    }
  }
  const out: VersionSpec = {
    model,
    version,
    weight,
    instances: int(raw['instances'], `${at}.instances`, 1, 1),
    provider: provider(raw['provider'], `${at}.provider`) ?? 'cpu',
    intra_op_threads: int(raw['intra_op_threads'], `${at}.intra_op_threads`, 1, 1),
  };
  const fallback = provider(raw['provider_fallback'], `${at}.provider_fallback`);
  if (fallback) out.provider_fallback = fallback;
  if (batching) out.batching = batching;
  return out;
}

/** Validates a create body (or a PATCH merged over the stored spec) into the stored form. */
export function parseServiceSpec(body: Record<string, unknown>, latest: LatestVersion, base?: ServiceSpec): ServiceSpec {
  const versionsRaw = body['versions'] ?? base?.versions;
  if (!Array.isArray(versionsRaw) || versionsRaw.length === 0) throw badRequest(`'versions' must be a non-empty array of {"model", "version", "weight"}`, 'BadSpec');
  const versions = body['versions'] === undefined && base ? base.versions : versionsRaw.map((v, i) => versionSpec(v, i, versionsRaw.length === 1, latest));
  const seen = new Set<string>();
  for (const v of versions) {
    const key = `${v.model}@${v.version}`;
    if (seen.has(key)) throw badRequest(`versions: ${key} is listed twice; each model version may appear once`, 'BadSpec');
    seen.add(key);
  }
  const total = versions.reduce((a, v) => a + v.weight, 0);
  if (total !== 100) throw badRequest(`versions: weights sum to ${total}; they must sum to 100`, 'BadSpec');
  const auth = body['auth'] ?? base?.auth ?? 'token';
  if (auth !== 'none' && auth !== 'token') throw badRequest(`'auth' must be "token" or "none"`, 'BadSpec');
  const description = body['description'] ?? base?.description ?? '';
  if (typeof description !== 'string') throw badRequest(`'description' must be a string`, 'BadSpec');
  const timeout = body['timeout_minutes'] ?? base?.timeout_minutes ?? 20;
  if (typeof timeout !== 'number' || !(timeout > 0)) throw badRequest(`'timeout_minutes' must be a positive number`, 'BadSpec');
  const limit = body['traffic_limit'] === undefined ? (base?.traffic_limit ?? null) : body['traffic_limit'];
  if (limit !== null && (typeof limit !== 'number' || !(limit > 0))) throw badRequest(`'traffic_limit' must be a positive number of requests per second, or null for none`, 'BadSpec');
  return { description, auth, timeout_minutes: timeout, traffic_limit: limit as number | null, versions };
}

/** A version's deployment identity: an update reuses the runners of versions whose key is unchanged. */
export function versionKey(v: VersionSpec): string {
  return JSON.stringify([v.model, v.version, v.instances, v.provider, v.provider_fallback ?? null, v.intra_op_threads, v.batching ?? null]);
}
