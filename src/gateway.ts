// First: ONNX Runtime's telemetry switch must be set before the library loads.
import './runtime/onnx/telemetry.js';
import { randomBytes, randomUUID } from 'node:crypto';
import { Access } from './auth/access.js';
import { ExternalIssuer } from './auth/external.js';
import { Identity, type UserRow } from './auth/identity.js';
import { TokenService } from './auth/tokens.js';
import { existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import type { Logger } from 'pino';
import type { GatewayConfig } from './config/config.js';
import { ServiceManager } from './control/lifecycle.js';
import { ModelRegistry } from './control/models.js';
import { listPackageDirs, readPackage } from './control/packages.js';
import { RoutingTable } from './control/services.js';
import { HttpServer, type ServerState } from './http/server.js';
import { reapContainers } from './runtime/image/docker.js';
import { openStore, type Db } from './store/db.js';
import { gatewayId } from './store/gateway-id.js';
import { lockDataDir } from './store/lock.js';
import { EventLog } from './store/events.js';
import { Metrics } from './telemetry/metrics.js';
import { VERSION } from './version.js';

export interface Gateway {
  port: number;
  /** A token for the admin created by this (first) start: shown once, never stored. */
  firstAdminToken: string | null;
  table: RoutingTable;
  services: ServiceManager;
  /** Graceful stop: stop accepting, finish in-flight requests, release the runtimes. */
  stop(): Promise<void>;
}

function defaultProject(db: Db): string {
  const row = db.prepare("SELECT id FROM projects WHERE name = 'default'").get() as { id: string } | undefined;
  if (row) return row.id;
  const id = randomUUID();
  db.prepare('INSERT INTO projects (id, name, created_at) VALUES (?, ?, ?)').run(id, 'default', Date.now());
  return id;
}

export async function startGateway(cfg: GatewayConfig, log: Logger): Promise<Gateway> {
  mkdirSync(cfg.data_dir, { recursive: true });
  const unlock = lockDataDir(cfg.data_dir);
  const db = openStore(cfg.data_dir);
  const events = new EventLog(db);
  events.pruneOld();
  const projectId = defaultProject(db);
  const identity = new Identity(db);
  const { admin, created } = await ensureAdmin(identity, projectId);
  const tokens = await TokenService.open(db, identity, cfg.data_dir, process.env['INFERGATE_ADMIN_TOKEN'] || undefined, admin, await ExternalIssuer.open(cfg.auth));
  const access = new Access(tokens, identity);
  // The first start prints a token for the admin it created, unless one was preset.
  const firstAdminToken = created && !process.env['INFERGATE_ADMIN_TOKEN'] ? (await tokens.issue(admin)).access_token : null;
  const metrics = new Metrics();
  const table = new RoutingTable();
  const state: ServerState = { ready: false, draining: false };
  const models: ModelRegistry = new ModelRegistry(db, events, cfg.data_dir, cfg.limits.max_package_bytes, (p, m, v) => services.usage(p, m, v));
  const owner = gatewayId(cfg.data_dir);
  const services: ServiceManager = new ServiceManager(db, events, models, table, metrics, log, cfg.logs, owner);
  await models.recover();
  await reapContainers(owner).then(
    (names) => names.length && log.warn(`removed ${names.length} Docker container(s) a previous run of this gateway left running: ${names.join(', ')}`),
    (err: Error) => log.warn(`could not look for Docker containers a previous run left running: ${err.message}`),
  );
  let server: HttpServer | null = null;
  let port: number;
  try {
    await services.recover();
    await applyModelsDir(cfg, models, services, projectId, log);
    for (const declared of cfg.services) {
      await Promise.resolve().then(() => services.ensure(declared, typeof declared['project'] === 'string' ? identity.project(declared['project']).id : projectId)).catch((err: Error) => log.error({ service: declared.name }, `service ${declared.name} from the config: ${err.message}`));
    }
    const logError = (err: unknown): void => log.error({ err }, 'request failed inside the gateway');
    server = new HttpServer({
      table, metrics, limits: cfg.limits, state, version: VERSION, logError,
      access,
      management: { models, services, access, maxUploadBytes: cfg.limits.max_upload_bytes },
      direct: { host: cfg.server.direct_host, ports: cfg.server.direct_ports, warn: (msg) => log.warn(msg) },
      websocket: { bufferBytes: cfg.limits.ws_buffer_bytes, drainTimeoutMs: cfg.limits.ws_drain_timeout_ms, maxInflight: cfg.limits.ws_max_inflight },
    });
    port = await server.listen(cfg.server.host, cfg.server.port);
  } catch (err) {
    // Not serving after all (the port is taken, say): what was started for it stops, containers too.
    server?.close();
    await services.shutdown().catch((e: Error) => log.error({ err: e }, 'stopping the services of a gateway that could not start'));
    db.close();
    unlock();
    throw err;
  }
  state.ready = true;
  const listening = server;
  let stopping: Promise<void> | null = null;
  return {
    port,
    firstAdminToken,
    table,
    services,
    stop() {
      stopping ??= (async () => {
        state.draining = true;
        listening.stopAccepting();
        await listening.front.idle();
        // Every WebSocket answer owed was sent (its calls were in flight): the connections go now.
        listening.sockets.closeAll();
        await services.shutdown();
        listening.close();
        db.close();
        unlock();
      })();
      return stopping;
    },
  };
}

/** A new admin access token from the data dir's store and signing key (`infergate token`). */
export async function adminToken(dataDir: string): Promise<string> {
  if (!existsSync(path.join(dataDir, 'infergate.db'))) throw new Error(`no gateway data in ${dataDir}: start \`infergate serve\` there once first (--data-dir)`);
  const db = openStore(dataDir);
  try {
    const projectId = defaultProject(db);
    const identity = new Identity(db);
    const { admin } = await ensureAdmin(identity, projectId);
    const tokens = await TokenService.open(db, identity, dataDir, undefined, admin);
    return (await tokens.issue(admin)).access_token;
  } finally {
    db.close();
  }
}

/** The `admin` user, admin of the default project, created on the first start. */
export async function ensureAdmin(identity: Identity, projectId: string): Promise<{ admin: UserRow; created: boolean }> {
  const existing = identity.userByName('admin');
  if (existing) return { admin: existing, created: false };
  // Nobody logs in with this password: the admin uses the printed token, API keys or `infergate token`.
  const { id } = await identity.createUser('admin', randomBytes(24).toString('base64url'), 'default');
  identity.setMember(projectId, id, 'admin');
  return { admin: identity.user(id), created: true };
}

/**
 * Every package under models_dir becomes a model version (once: a package whose model file the
 * model already has is skipped) and, unless the config declares a service for it, a service of
 * its own name with no auth (the quick start's iris, ccfraud, credit-risk).
 */
async function applyModelsDir(cfg: GatewayConfig, models: ModelRegistry, services: ServiceManager, projectId: string, log: Logger): Promise<void> {
  const declared = new Set(cfg.services.map((s) => s.name));
  for (const dir of await listPackageDirs(cfg.models_dir)) {
    const name = path.basename(dir);
    try {
      await models.importFolder({ name, projectId }, dir, true);
    } catch (err) {
      log.error({ dir }, `skipping package ${dir}: ${(err as Error).message}`);
      continue;
    }
    if (declared.has(name)) continue;
    // A streaming model (stream.state) is of use over WebSocket, so its service takes them.
    const streaming = await readPackage(dir, name).then((p) => p.stream !== null, () => false);
    await services.ensure({ name, auth: 'none', versions: [{ model: name }], ...(streaming ? { websocket: true } : {}) }, projectId, false)
      .catch((err: Error) => log.error({ service: name }, `service ${name}: ${err.message}`));
  }
}
