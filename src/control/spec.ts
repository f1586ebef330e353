import { badRequest, GatewayError } from '../errors.js';
import type { BatchingConfig } from '../runtime/onnx/batcher.js';
import { BATCHING_RANGE } from './packages.js';
import type { Provider } from '../runtime/onnx/providers.js';
import { parseCondition, RuleSyntaxError } from '../traffic/rules.js';

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
  /** Image models: environment variables for the instances, over the package's image.env. */
  env?: Record<string, string>;
}

/** A service's desired state as stored (SPEC §6 create fields the gateway acts on today). */
export interface ServiceSpec {
  description: string;
  auth: 'none' | 'token';
  timeout_minutes: number;
  /** Requests per second the service admits (token bucket), or null for no limit. */
  traffic_limit: number | null;
  versions: VersionSpec[];
  rules: RuleSpec[];
  /** Versions that get a copy of every request; their outputs go to the inference log only (SPEC §7.4). */
  shadow: VersionRef[];
  /** Share of requests recorded in the inference log, 0–1; null: the gateway's logs.sample_rate. */
  log_sample_rate: number | null;
  /** Direct listeners that skip auth, rules, limits and statistics (SPEC §5.6). */
  high_speed: boolean;
  /** WebSocket streaming on the inference URL (SPEC §5.5). */
  websocket: boolean;
}

/** A service version named by its model version (`model` where the service mixes models). */
export interface VersionRef {
  model: string;
  version: string;
}

/** A routing rule (SPEC §7.3): the first whose condition holds sends the request to its version. */
export interface RuleSpec {
  condition: string;
  model: string;
  version: string;
  setting_name?: string;
  setting_value?: string;
}

const MAX_RULES = 10;
/** RFC 9110 token characters. */
const HEADER_NAME = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

function rulesOf(raw: unknown, versions: VersionSpec[]): RuleSpec[] {
  if (raw === undefined || raw === null) return [];
  if (!Array.isArray(raw)) throw badRequest(`'rules' must be an array of {"condition", "version", "model"?, "setting_name"?, "setting_value"?}`, 'BadSpec');
  if (raw.length > MAX_RULES) throw badRequest(`'rules' has ${raw.length} rules; at most ${MAX_RULES} are allowed`, 'BadSpec');
  return raw.map((r, i) => {
    const at = `rules[${i}]`;
    if (!isObj(r)) throw badRequest(`${at} must be an object {"condition", "version"}`, 'BadSpec');
    const known = new Set(['condition', 'version', 'model', 'setting_name', 'setting_value']);
    const extra = Object.keys(r).find((k) => !known.has(k));
    if (extra) throw badRequest(`${at}: unknown field '${extra}'; expected ${[...known].join(', ')}`, 'BadSpec');
    if (typeof r['condition'] !== 'string') throw badRequest(`${at}.condition must be a string such as "#HEADER_uid.hashCode() % 100 < 10"`, 'BadSpec');
    try {
      parseCondition(r['condition']);
    } catch (err) {
      if (err instanceof RuleSyntaxError) throw badRequest(`${at}.condition: ${err.message}`, 'BadRule');
      throw err;
    }
    if (typeof r['version'] !== 'string') throw badRequest(`${at}.version must name one of the service's versions: ${names(versions)}`, 'BadSpec');
    const model = r['model'];
    if (model !== undefined && typeof model !== 'string') throw badRequest(`${at}.model must be a model name`, 'BadSpec');
    const out: RuleSpec = { condition: r['condition'], ...versionRef(versions, r['version'], model, at) };
    for (const k of ['setting_name', 'setting_value'] as const) {
      if (r[k] !== undefined) {
        if (typeof r[k] !== 'string') throw badRequest(`${at}.${k} must be a string`, 'BadSpec');
        out[k] = r[k] as string;
      }
    }
    if ((out.setting_name === undefined) !== (out.setting_value === undefined)) throw badRequest(`${at}: give setting_name and setting_value together`, 'BadSpec');
    // The setting travels as a header to image instances: a name must be a header name, a value one line.
    if (out.setting_name !== undefined && !HEADER_NAME.test(out.setting_name)) {
      throw badRequest(`${at}.setting_name must be a header name (letters, digits and !#$%&'*+-.^_\`|~), got ${JSON.stringify(out.setting_name)}`, 'BadSpec');
    }
    if (out.setting_value !== undefined && /[\r\n\0]/.test(out.setting_value)) throw badRequest(`${at}.setting_value must be one line (no CR, LF or NUL)`, 'BadSpec');
    return out;
  });
}

const names = (versions: VersionSpec[]): string => versions.map((v) => `${v.model}@${v.version}`).join(', ');

/** The one service version a `version` (and optional `model`) names. */
function versionRef(versions: VersionSpec[], version: string, model: string | undefined, at: string): VersionRef {
  const matches = versions.filter((v) => v.version === version && (model === undefined || v.model === model));
  if (matches.length === 0) throw badRequest(`${at}: the service has no version '${version}'${model ? ` of model '${model}'` : ''}; name one of ${names(versions)}`, 'BadSpec');
  if (matches.length > 1) throw badRequest(`${at}: version '${version}' is ambiguous (several models have it); add "model"`, 'BadSpec');
  return { model: matches[0]!.model, version: matches[0]!.version };
}

function shadowOf(raw: unknown, versions: VersionSpec[]): VersionRef[] {
  if (raw === undefined || raw === null) return [];
  if (!Array.isArray(raw)) throw badRequest(`'shadow' must be an array of {"version", "model"?} naming service versions (weight 0 keeps them out of the split)`, 'BadSpec');
  const seen = new Set<string>();
  return raw.map((r, i) => {
    const at = `shadow[${i}]`;
    if (!isObj(r)) throw badRequest(`${at} must be an object {"version", "model"?}`, 'BadSpec');
    const extra = Object.keys(r).find((k) => k !== 'version' && k !== 'model');
    if (extra) throw badRequest(`${at}: unknown field '${extra}'; expected version, model`, 'BadSpec');
    if (typeof r['version'] !== 'string') throw badRequest(`${at}.version must name one of the service's versions: ${names(versions)}`, 'BadSpec');
    if (r['model'] !== undefined && typeof r['model'] !== 'string') throw badRequest(`${at}.model must be a model name`, 'BadSpec');
    const ref = versionRef(versions, r['version'], r['model'] as string | undefined, at);
    const key = `${ref.model}@${ref.version}`;
    if (seen.has(key)) throw badRequest(`${at}: ${key} is listed twice`, 'BadSpec');
    seen.add(key);
    return ref;
  });
}

export const SERVICE_NAME = /^[A-Za-z0-9_-]{1,64}$/;
const BATCH_KEYS = Object.keys(BATCHING_RANGE);

/** Resolves an omitted model version to the model's latest. */
export type LatestVersion = (model: string) => string;

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

function int(v: unknown, where: string, min: number, dflt: number, max = Number.MAX_SAFE_INTEGER): number {
  if (v === undefined) return dflt;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    throw badRequest(`${where} must be an integer ${max === Number.MAX_SAFE_INTEGER ? `≥ ${min}` : `from ${min} to ${max}`}, got ${JSON.stringify(v)}`, 'BadSpec');
  }
  return v;
}

/** Per version: one caller may not take the host's memory (an ONNX instance is ~10 MB and up) or threads. */
const MAX_INSTANCES = 128;
const MAX_INTRA_OP_THREADS = 64;
/** A week: the deploy timer must fit setTimeout (past 2^31 ms it fires at once). */
const MAX_TIMEOUT_MINUTES = 7 * 24 * 60;

function provider(v: unknown, where: string): Provider | undefined {
  if (v === undefined) return undefined;
  if (v !== 'cpu' && v !== 'cuda') throw badRequest(`${where} must be "cpu" or "cuda", got ${JSON.stringify(v)}`, 'BadSpec');
  return v;
}

function versionSpec(raw: unknown, i: number, single: boolean, latest: LatestVersion): VersionSpec {
  const at = `versions[${i}]`;
  if (!isObj(raw)) throw badRequest(`${at} must be an object {"model", "version", "weight"}`, 'BadSpec');
  const known = new Set(['model', 'version', 'weight', 'instances', 'provider', 'provider_fallback', 'intra_op_threads', 'batching', 'env']);
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
      const [min, max] = BATCHING_RANGE[k as keyof BatchingConfig];
      batching[k as keyof BatchingConfig] = int(v, `${at}.batching.${k}`, min, 0, max);
    }
  }
  const out: VersionSpec = {
    model,
    version,
    weight,
    instances: int(raw['instances'], `${at}.instances`, 1, 1, MAX_INSTANCES),
    provider: provider(raw['provider'], `${at}.provider`) ?? 'cpu',
    intra_op_threads: int(raw['intra_op_threads'], `${at}.intra_op_threads`, 1, 1, MAX_INTRA_OP_THREADS),
  };
  const fallback = provider(raw['provider_fallback'], `${at}.provider_fallback`);
  if (fallback) out.provider_fallback = fallback;
  if (batching) out.batching = batching;
  if (raw['env'] !== undefined) {
    const env = raw['env'];
    if (!isObj(env) || !Object.values(env).every((v) => typeof v === 'string')) throw badRequest(`${at}.env must be an object of string values, such as {"LOG_LEVEL": "debug"}`, 'BadSpec');
    out.env = env as Record<string, string>;
  }
  return out;
}

/** The fields of a service's body (POST, PATCH, gateway.yaml): its spec, its name and its project. */
const SERVICE_FIELDS = ['name', 'project', 'description', 'auth', 'versions', 'rules', 'shadow', 'traffic_limit', 'timeout_minutes', 'log_sample_rate', 'high_speed', 'websocket'];

/** Validates a create body (or a PATCH merged over the stored spec) into the stored form. */
export function parseServiceSpec(body: Record<string, unknown>, latest: LatestVersion, base?: ServiceSpec): ServiceSpec {
  // A misspelt field ("trafic_limit") would otherwise be dropped and the change silently not made.
  const extra = Object.keys(body).find((k) => !SERVICE_FIELDS.includes(k));
  if (extra) throw badRequest(`unknown field '${extra}'; a service takes ${SERVICE_FIELDS.join(', ')}`, 'BadSpec');
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
  if (auth !== 'none' && auth !== 'token') throw badRequest(`'auth' must be "token" or "none", got ${JSON.stringify(auth)}`, 'BadSpec');
  const description = body['description'] ?? base?.description ?? '';
  if (typeof description !== 'string') throw badRequest(`'description' must be a string`, 'BadSpec');
  const timeout = body['timeout_minutes'] ?? base?.timeout_minutes ?? 20;
  if (typeof timeout !== 'number' || !(timeout > 0) || timeout > MAX_TIMEOUT_MINUTES) throw badRequest(`'timeout_minutes' must be a positive number of minutes, at most ${MAX_TIMEOUT_MINUTES} (a week), got ${JSON.stringify(timeout)}`, 'BadSpec');
  const limit = body['traffic_limit'] === undefined ? (base?.traffic_limit ?? null) : body['traffic_limit'];
  if (limit !== null && (typeof limit !== 'number' || !(limit > 0))) throw badRequest(`'traffic_limit' must be a positive number of requests per second, or null for none`, 'BadSpec');
  const rules = storedOrSent(body, base, 'rules', (raw) => rulesOf(raw, versions));
  const shadow = storedOrSent(body, base, 'shadow', (raw) => shadowOf(raw, versions));
  const rate = body['log_sample_rate'] === undefined ? (base?.log_sample_rate ?? null) : body['log_sample_rate'];
  if (rate !== null && (typeof rate !== 'number' || !(rate >= 0 && rate <= 1))) throw badRequest(`'log_sample_rate' must be a number from 0 to 1 (the share of requests kept in the inference log), or null for the gateway's logs.sample_rate`, 'BadSpec');
  const highSpeed = body['high_speed'] ?? base?.high_speed ?? false;
  if (typeof highSpeed !== 'boolean') throw badRequest(`'high_speed' must be true or false`, 'BadSpec');
  const websocket = body['websocket'] ?? base?.websocket ?? false;
  if (typeof websocket !== 'boolean') throw badRequest(`'websocket' must be true or false`, 'BadSpec');
  return { description, auth, timeout_minutes: timeout, traffic_limit: limit as number | null, versions, rules, shadow, log_sample_rate: rate as number | null, high_speed: highSpeed, websocket };
}

/**
 * A PATCH keeps the stored rules and shadow unless it sends them; where new versions leave a
 * stored one naming a version no longer there, the refusal says it is the stored one.
 */
function storedOrSent<T>(body: Record<string, unknown>, base: ServiceSpec | undefined, field: 'rules' | 'shadow', parse: (raw: unknown) => T): T {
  if (body[field] !== undefined || !base) return parse(body[field]);
  try {
    return parse(base[field]);
  } catch (err) {
    if (!(err instanceof GatewayError)) throw err;
    const remedy = body['versions'] !== undefined ? `send '${field}' with the new versions, or [] to drop them` : `send '${field}' to replace them`;
    throw new GatewayError(err.status, err.code.slice(err.code.lastIndexOf('.') + 1), `${err.message} (in the service's stored '${field}', which this update keeps; ${remedy})`);
  }
}

/** A version's deployment identity: an update reuses the runners of versions whose key is unchanged. */
export function versionKey(v: VersionSpec): string {
  return JSON.stringify([v.model, v.version, v.instances, v.provider, v.provider_fallback ?? null, v.intra_op_threads, v.batching ?? null, v.env ?? null]);
}

/** Requests may reach more than one version (weights or rules): replies then say which answered. */
export function splitsTraffic(spec: ServiceSpec): boolean {
  const reachable = new Set([...spec.versions.filter((v) => v.weight > 0).map((v) => `${v.model}@${v.version}`), ...(spec.rules ?? []).map((r) => `${r.model}@${r.version}`)]);
  return reachable.size > 1;
}
