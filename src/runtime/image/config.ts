/**
 * The `image` and `health` blocks of an Image package's config.json (SPEC §4, §8.2), validated at
 * import so a bad package is refused with the field named, not at deploy time.
 */

export type LauncherKind = 'process' | 'docker' | 'static';

export interface ImageConfig {
  /** `process`: argv run with PORT and MODEL_PATH set (a string runs through `sh -c`). */
  command: string[] | null;
  /** The port the server listens on inside a container (`docker`); `process` picks a free one. */
  port: number;
  /** `static`: servers someone else runs, e.g. a Kubernetes Service. */
  endpoints: string[];
  /** `docker`: the image reference. */
  image: string | null;
  env: Record<string, string>;
  /** The launcher the package asks for; by default the first of command, endpoints, image it has. */
  launcher: LauncherKind;
  /** Requests one instance is sent at a time, more wait in the gateway (Knative's containerConcurrency); 0: no limit. */
  max_concurrency: number;
}

export interface HealthConfig {
  /** `TCP` when the package has no health block: the instance is healthy once its port accepts connections. */
  check_method: 'HTTP' | 'EXEC' | 'TCP';
  url: string;
  protocol: 'http' | 'https';
  command: string[] | null;
  initial_delay_seconds: number;
  timeout_seconds: number;
  period_seconds: number;
  failure_threshold: number;
}

export class ImageConfigError extends Error {}

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

function fail(where: string, msg: string): never {
  throw new ImageConfigError(`${where}: ${msg}`);
}

function commandOf(v: unknown, where: string): string[] | null {
  if (v === undefined || v === null) return null;
  if (typeof v === 'string' && v.trim() !== '') return ['sh', '-c', v];
  if (Array.isArray(v) && v.length > 0 && v.every((a) => typeof a === 'string') && v[0] !== '') return v as string[];
  fail(where, `must be a command: an array of strings such as ["node", "server.js"], or one shell string`);
}

/** `config` is the package's config.json; `where` names it in messages. */
export function imageConfigOf(config: Record<string, unknown>, where: string): ImageConfig {
  const raw = config['image'];
  if (!isObj(raw)) fail(where, `an Image package needs an "image" object with "command" (run as a process), "endpoints" (servers already running) or "image" (a Docker image)`);
  const known = ['command', 'port', 'endpoints', 'image', 'env', 'launcher', 'max_concurrency'];
  const extra = Object.keys(raw).find((k) => !known.includes(k));
  if (extra) fail(where, `image: unknown field '${extra}'; expected ${known.join(', ')}`);
  const command = commandOf(raw['command'], `${where}: image.command`);
  const port = raw['port'] ?? 8080;
  if (typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65535) fail(where, `image.port must be a TCP port (1–65535), got ${JSON.stringify(port)}`);
  const endpoints = raw['endpoints'] ?? [];
  if (!Array.isArray(endpoints)) fail(where, `image.endpoints must be an array of URLs such as "http://10.0.0.5:8080"`);
  endpoints.forEach((e, i) => {
    if (typeof e !== 'string') fail(where, `image.endpoints[${i}] must be a URL string`);
    let u: URL;
    try {
      u = new URL(e);
    } catch {
      fail(where, `image.endpoints[${i}] '${e}' is not a URL; expected http://host:port`);
    }
    if (u.protocol !== 'http:') fail(where, `image.endpoints[${i}] '${e}': only http:// upstreams are proxied`);
  });
  const image = raw['image'] ?? null;
  if (image !== null && (typeof image !== 'string' || image === '')) fail(where, `image.image must be a Docker image reference such as "registry/model:1.0"`);
  const env = raw['env'] ?? {};
  if (!isObj(env) || !Object.values(env).every((v) => typeof v === 'string')) fail(where, `image.env must be an object of string values`);
  const launcher = raw['launcher'] ?? (command ? 'process' : endpoints.length ? 'static' : image ? 'docker' : null);
  if (launcher === null) fail(where, `image needs "command", "endpoints" or "image" to say how its instances run`);
  if (launcher !== 'process' && launcher !== 'docker' && launcher !== 'static') fail(where, `image.launcher must be "process", "docker" or "static", got ${JSON.stringify(launcher)}`);
  if (launcher === 'process' && !command) fail(where, `image.launcher "process" needs image.command`);
  if (launcher === 'static' && endpoints.length === 0) fail(where, `image.launcher "static" needs image.endpoints`);
  if (launcher === 'docker' && !image) fail(where, `image.launcher "docker" needs image.image`);
  const maxConcurrency = raw['max_concurrency'] ?? 0;
  if (typeof maxConcurrency !== 'number' || !Number.isInteger(maxConcurrency) || maxConcurrency < 0 || maxConcurrency > 100_000) {
    fail(where, `image.max_concurrency must be an integer from 1 to 100000 (requests one instance is sent at a time), or 0 for no limit, got ${JSON.stringify(maxConcurrency)}`);
  }
  return { command, port, endpoints: endpoints as string[], image: image as string | null, env: env as Record<string, string>, launcher, max_concurrency: maxConcurrency };
}

const HEALTH_DEFAULTS = { initial_delay_seconds: 0, timeout_seconds: 5, period_seconds: 10, failure_threshold: 3 };

export function healthConfigOf(config: Record<string, unknown>, where: string): HealthConfig {
  const raw = config['health'];
  if (raw === undefined || raw === null) return { check_method: 'TCP', url: '/', protocol: 'http', command: null, ...HEALTH_DEFAULTS };
  if (!isObj(raw)) fail(where, `"health" must be an object {"check_method": "HTTP"|"EXEC", "url", "command", "period_seconds", ...}`);
  const known = ['check_method', 'url', 'command', 'protocol', 'initial_delay_seconds', 'timeout_seconds', 'period_seconds', 'failure_threshold'];
  const extra = Object.keys(raw).find((k) => !known.includes(k));
  if (extra) fail(where, `health: unknown field '${extra}'; expected ${known.join(', ')}`);
  const method = String(raw['check_method'] ?? 'HTTP').toUpperCase();
  if (method !== 'HTTP' && method !== 'EXEC') fail(where, `health.check_method must be "HTTP" or "EXEC", got ${JSON.stringify(raw['check_method'])}`);
  const url = raw['url'] ?? '/health';
  if (typeof url !== 'string' || !url.startsWith('/')) fail(where, `health.url must be a path starting with '/', got ${JSON.stringify(url)}`);
  const protocol = String(raw['protocol'] ?? 'http').toLowerCase();
  if (protocol !== 'http' && protocol !== 'https') fail(where, `health.protocol must be "http" or "https"`);
  const command = commandOf(raw['command'], `${where}: health.command`);
  if (method === 'EXEC' && !command) fail(where, `health.check_method "EXEC" needs health.command`);
  const num = (k: keyof typeof HEALTH_DEFAULTS, min: number): number => {
    const v = raw[k] ?? HEALTH_DEFAULTS[k];
    if (typeof v !== 'number' || !Number.isFinite(v) || v < min) fail(where, `health.${k} must be a number ≥ ${min}, got ${JSON.stringify(v)}`);
    return v;
  };
  const threshold = num('failure_threshold', 1);
  if (!Number.isInteger(threshold)) fail(where, `health.failure_threshold must be an integer ≥ 1`);
  return {
    check_method: method, url, protocol: protocol as 'http' | 'https', command,
    initial_delay_seconds: num('initial_delay_seconds', 0),
    timeout_seconds: num('timeout_seconds', 0.05),
    period_seconds: num('period_seconds', 0.05),
    failure_threshold: threshold,
  };
}
