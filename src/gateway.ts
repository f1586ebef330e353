import { mkdirSync } from 'node:fs';
import type { Logger } from 'pino';
import type { GatewayConfig } from './config/config.js';
import { deployFromConfig } from './control/deploy.js';
import { RoutingTable } from './control/services.js';
import { HttpServer, type ServerState } from './http/server.js';
import { Metrics } from './telemetry/metrics.js';
import { VERSION } from './version.js';

export interface Gateway {
  port: number;
  table: RoutingTable;
  /** Graceful stop: stop accepting, finish in-flight requests, release the runtimes. */
  stop(): Promise<void>;
}

export async function startGateway(cfg: GatewayConfig, log: Logger): Promise<Gateway> {
  mkdirSync(cfg.data_dir, { recursive: true });
  const metrics = new Metrics();
  const table = new RoutingTable();
  const state: ServerState = { ready: false, draining: false };
  table.swap(await deployFromConfig(cfg, metrics, log));
  const logError = (err: unknown): void => log.error({ err }, 'request failed inside the gateway');
  const server = new HttpServer({ table, metrics, limits: cfg.limits, state, version: VERSION, logError });
  const port = await server.listen(cfg.server.host, cfg.server.port);
  state.ready = true;
  let stopping: Promise<void> | null = null;
  return {
    port,
    table,
    stop() {
      stopping ??= (async () => {
        state.draining = true;
        server.stopAccepting();
        await server.front.idle();
        await Promise.all(table.all().flatMap((s) => s.versions.map((v) => v.runner.close())));
        server.close();
      })();
      return stopping;
    },
  };
}
