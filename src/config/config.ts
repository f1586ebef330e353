import { readFileSync } from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import type { LogSettings } from '../telemetry/inference-log.js';

/** gateway.yaml (SPEC §12). Every field has a default, so the gateway runs with no file at all. */
export interface GatewayConfig {
  server: { host: string; port: number; direct_host: string; direct_ports: string };
  data_dir: string;
  models_dir: string;
  limits: {
    max_body_bytes: number;
    request_timeout_ms: number;
    max_package_bytes: number;
    max_upload_bytes: number;
    /** Requests per minute per domain and per user on token services; 0 is off (the default). */
    per_domain_per_minute: number;
    per_user_per_minute: number;
    /** WebSocket backpressure (SPEC §5.5): answers buffered for a client past which its messages wait. */
    ws_buffer_bytes: number;
    /** A WebSocket client past ws_buffer_bytes this long is closed with 1013. */
    ws_drain_timeout_ms: number;
    /** Messages of one WebSocket connection served at once. */
    ws_max_inflight: number;
  };
  log_level: string;
  /** The inference log (SPEC §10): what share of requests is kept, and how much of it. */
  logs: LogSettings;
  /** An external identity provider (Keycloak and the like), beside the gateway's own tokens. */
  auth: ExternalAuth;
  /**
   * Declarative services applied at start, in the body shape of POST /v1/services (validated
   * there); a package in models_dir that none of them names gets a service of its own name.
   */
  services: DeclaredService[];
}

export interface ExternalAuth {
  /** JWKS endpoint of the identity provider; keys are fetched, cached and re-fetched on rotation. */
  jwks_url?: string;
  /** A public key (PEM) or a JWK / JWKS JSON file, instead of jwks_url. */
  key_file?: string;
  issuer?: string;
  audience?: string;
  /** The claim that names the user (default preferred_username, then sub). */
  username_claim?: string;
}

export interface DeclaredService {
  name: string;
  [field: string]: unknown;
}

export const DEFAULTS: GatewayConfig = {
  server: { host: '127.0.0.1', port: 8080, direct_host: '127.0.0.1', direct_ports: '31000-31999' },
  data_dir: './data',
  models_dir: './models',
  limits: { max_body_bytes: 12 * 1024 * 1024, request_timeout_ms: 40_000, max_package_bytes: 5 * 1024 ** 3, max_upload_bytes: 1024 ** 3, per_domain_per_minute: 0, per_user_per_minute: 0,
    ws_buffer_bytes: 1024 * 1024, ws_drain_timeout_ms: 10_000, ws_max_inflight: 64 },
  log_level: 'info',
  logs: { sample_rate: 1, max_records_per_second: 1000, records_per_service: 10_000, bytes_per_service: 8 * 1024 * 1024, max_record_bytes: 64 * 1024 },
  auth: {},
  services: [],
};

export class ConfigError extends Error {}

export interface ConfigSources {
  /** --config or INFERGATE_CONFIG. */
  file?: string | undefined;
  env: NodeJS.ProcessEnv;
  flags: { host?: string | undefined; port?: string | undefined; dataDir?: string | undefined; modelsDir?: string | undefined };
}

/** Defaults ← file ← INFERGATE_* environment ← command-line flags. */
export function loadConfig(src: ConfigSources): GatewayConfig {
  const file = src.file ?? src.env['INFERGATE_CONFIG'];
  const fromFile = file ? readConfigFile(file) : {};
  const cfg = mergeConfig(DEFAULTS, fromFile, file ?? 'config');
  const env = src.env;
  const host = src.flags.host ?? env['INFERGATE_HOST'];
  const port = src.flags.port ?? env['INFERGATE_PORT'];
  const dataDir = src.flags.dataDir ?? env['INFERGATE_DATA_DIR'];
  const modelsDir = src.flags.modelsDir ?? env['INFERGATE_MODELS_DIR'];
  if (host) cfg.server.host = host;
  if (port !== undefined) cfg.server.port = portNumber(port, '--port / INFERGATE_PORT');
  if (dataDir) cfg.data_dir = dataDir;
  if (modelsDir) cfg.models_dir = modelsDir;
  if (env['INFERGATE_MAX_BODY_BYTES']) cfg.limits.max_body_bytes = positiveInt(env['INFERGATE_MAX_BODY_BYTES'], 'INFERGATE_MAX_BODY_BYTES');
  if (env['INFERGATE_REQUEST_TIMEOUT_MS']) cfg.limits.request_timeout_ms = positiveInt(env['INFERGATE_REQUEST_TIMEOUT_MS'], 'INFERGATE_REQUEST_TIMEOUT_MS');
  if (env['INFERGATE_LOG_LEVEL']) cfg.log_level = env['INFERGATE_LOG_LEVEL'];
  return cfg;
}

function readConfigFile(file: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(`cannot read config file ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  let parsed: unknown;
  try {
    parsed = path.extname(file) === '.json' ? JSON.parse(text) : YAML.parse(text);
  } catch (err) {
    throw new ConfigError(`${file}: not valid ${path.extname(file) === '.json' ? 'JSON' : 'YAML'}: ${(err as Error).message}`);
  }
  if (parsed === null || parsed === undefined) return {};
  if (typeof parsed !== 'object' || Array.isArray(parsed)) throw new ConfigError(`${file}: expected a mapping at the top level`);
  return parsed as Record<string, unknown>;
}

const KNOWN_TOP = new Set(['server', 'data_dir', 'models_dir', 'limits', 'log_level', 'logs', 'services', 'auth']);

function mergeConfig(base: GatewayConfig, raw: Record<string, unknown>, where: string): GatewayConfig {
  for (const k of Object.keys(raw)) if (!KNOWN_TOP.has(k)) throw new ConfigError(`${where}: unknown key '${k}'; expected one of ${[...KNOWN_TOP].join(', ')}`);
  const cfg: GatewayConfig = structuredClone(base);
  const server = section(raw, 'server', where);
  if (server['host'] !== undefined) cfg.server.host = str(server['host'], `${where}: server.host`);
  if (server['port'] !== undefined) cfg.server.port = portNumber(server['port'], `${where}: server.port`);
  if (server['direct_host'] !== undefined) cfg.server.direct_host = str(server['direct_host'], `${where}: server.direct_host`);
  if (server['direct_ports'] !== undefined) cfg.server.direct_ports = String(server['direct_ports']);
  if (raw['data_dir'] !== undefined) cfg.data_dir = str(raw['data_dir'], `${where}: data_dir`);
  if (raw['models_dir'] !== undefined) cfg.models_dir = str(raw['models_dir'], `${where}: models_dir`);
  if (raw['log_level'] !== undefined) cfg.log_level = str(raw['log_level'], `${where}: log_level`);
  const limits = section(raw, 'limits', where);
  if (limits['max_body_bytes'] !== undefined) cfg.limits.max_body_bytes = positiveInt(limits['max_body_bytes'], `${where}: limits.max_body_bytes`);
  if (limits['request_timeout_ms'] !== undefined) cfg.limits.request_timeout_ms = positiveInt(limits['request_timeout_ms'], `${where}: limits.request_timeout_ms`);
  if (limits['max_package_bytes'] !== undefined) cfg.limits.max_package_bytes = positiveInt(limits['max_package_bytes'], `${where}: limits.max_package_bytes`);
  if (limits['max_upload_bytes'] !== undefined) cfg.limits.max_upload_bytes = positiveInt(limits['max_upload_bytes'], `${where}: limits.max_upload_bytes`);
  if (limits['per_domain_per_minute'] !== undefined) cfg.limits.per_domain_per_minute = positiveInt(limits['per_domain_per_minute'], `${where}: limits.per_domain_per_minute`);
  if (limits['per_user_per_minute'] !== undefined) cfg.limits.per_user_per_minute = positiveInt(limits['per_user_per_minute'], `${where}: limits.per_user_per_minute`);
  for (const k of ['ws_buffer_bytes', 'ws_drain_timeout_ms', 'ws_max_inflight'] as const) {
    if (limits[k] !== undefined) cfg.limits[k] = positiveInt(limits[k], `${where}: limits.${k}`);
  }
  const logs = section(raw, 'logs', where);
  const LOG_KEYS = ['sample_rate', 'max_records_per_second', 'records_per_service', 'bytes_per_service', 'max_record_bytes'];
  for (const k of Object.keys(logs)) if (!LOG_KEYS.includes(k)) throw new ConfigError(`${where}: unknown key logs.${k}; expected ${LOG_KEYS.join(', ')}`);
  if (logs['sample_rate'] !== undefined) {
    const r = logs['sample_rate'];
    if (typeof r !== 'number' || !(r >= 0 && r <= 1)) throw new ConfigError(`${where}: logs.sample_rate must be a number from 0 to 1, got ${JSON.stringify(r)}`);
    cfg.logs.sample_rate = r;
  }
  if (logs['records_per_service'] !== undefined) cfg.logs.records_per_service = positiveInt(logs['records_per_service'], `${where}: logs.records_per_service`);
  if (logs['max_records_per_second'] !== undefined) cfg.logs.max_records_per_second = positiveInt(logs['max_records_per_second'], `${where}: logs.max_records_per_second`);
  if (logs['bytes_per_service'] !== undefined) cfg.logs.bytes_per_service = positiveInt(logs['bytes_per_service'], `${where}: logs.bytes_per_service`);
  if (logs['max_record_bytes'] !== undefined) cfg.logs.max_record_bytes = positiveInt(logs['max_record_bytes'], `${where}: logs.max_record_bytes`);
  if (raw['services'] !== undefined) cfg.services = servicesOf(raw['services'], where);
  const auth = section(raw, 'auth', where);
  for (const k of Object.keys(auth)) {
    if (!['jwks_url', 'key_file', 'issuer', 'audience', 'username_claim'].includes(k)) throw new ConfigError(`${where}: unknown key auth.${k}; expected jwks_url, key_file, issuer, audience, username_claim`);
    (cfg.auth as Record<string, string>)[k] = str(auth[k], `${where}: auth.${k}`);
  }
  if (cfg.auth.jwks_url && cfg.auth.key_file) throw new ConfigError(`${where}: give auth.jwks_url or auth.key_file, not both`);
  return cfg;
}

function servicesOf(v: unknown, where: string): DeclaredService[] {
  if (!Array.isArray(v)) throw new ConfigError(`${where}: services must be a list`);
  return v.map((s, i) => {
    const at = `${where}: services[${i}]`;
    if (typeof s !== 'object' || s === null || Array.isArray(s)) throw new ConfigError(`${at}: expected a mapping`);
    str((s as Record<string, unknown>)['name'], `${at}.name`);
    return s as DeclaredService;
  });
}

function section(raw: Record<string, unknown>, key: string, where: string): Record<string, unknown> {
  const v = raw[key];
  if (v === undefined || v === null) return {};
  if (typeof v !== 'object' || Array.isArray(v)) throw new ConfigError(`${where}: ${key} must be a mapping`);
  return v as Record<string, unknown>;
}

function str(v: unknown, what: string): string {
  if (typeof v !== 'string' || v === '') throw new ConfigError(`${what} must be a non-empty string`);
  return v;
}

function positiveInt(v: unknown, what: string): number {
  const n = typeof v === 'string' ? Number(v) : v;
  if (typeof n !== 'number' || !Number.isInteger(n) || n <= 0) throw new ConfigError(`${what} must be a positive integer, got ${JSON.stringify(v)}`);
  return n;
}

function portNumber(v: unknown, what: string): number {
  const n = typeof v === 'string' ? Number(v) : v;
  if (typeof n !== 'number' || !Number.isInteger(n) || n < 0 || n > 65535) throw new ConfigError(`${what} must be a port number 0–65535, got ${JSON.stringify(v)}`);
  return n;
}
