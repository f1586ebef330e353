#!/usr/bin/env node
// First: ONNX Runtime's telemetry switch must be set before the library loads.
import '../runtime/onnx/telemetry.js';
import { parseArgs } from 'node:util';
import pino from 'pino';
import { ConfigError, loadConfig } from '../config/config.js';
import { adminToken, startGateway } from '../gateway.js';
import { VERSION } from '../version.js';
import { ApiError } from './client.js';
import { MODEL_HELP, PREDICT_HELP, SERVICE_HELP, modelCommand, predictCommand, serviceCommand } from './commands.js';

const HELP = () => `infergate ${VERSION} — high-throughput inference gateway

Usage:
  infergate serve [--host H] [--port P] [--data-dir D] [--models-dir M] [--config gateway.yaml]
  ${MODEL_HELP.replaceAll('\n', '\n  ')}
  ${SERVICE_HELP.replaceAll('\n', '\n  ')}
  ${PREDICT_HELP.replaceAll('\n', '\n  ')}
  infergate token [--data-dir D]       a fresh admin token from the data dir
  infergate --version
  infergate <command> --help

The model, service and predict commands talk to a running gateway: --url or INFERGATE_URL
(default http://127.0.0.1:8080), with --token or INFERGATE_TOKEN.

serve   Deploys every model package under the models directory as a service of the same name
        (plus the services in the config file) and serves the inference API.
        Environment: INFERGATE_HOST, INFERGATE_PORT, INFERGATE_DATA_DIR, INFERGATE_MODELS_DIR,
        INFERGATE_CONFIG, INFERGATE_MAX_BODY_BYTES, INFERGATE_REQUEST_TIMEOUT_MS, INFERGATE_LOG_LEVEL.
`;

async function serve(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      host: { type: 'string' },
      port: { type: 'string' },
      'data-dir': { type: 'string' },
      'models-dir': { type: 'string' },
      config: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(HELP());
    return;
  }
  const cfg = loadConfig({
    file: values.config,
    env: process.env,
    flags: { host: values.host, port: values.port, dataDir: values['data-dir'], modelsDir: values['models-dir'] },
  });
  // Structured logs go to stderr so stdout carries only the lines people and scripts read.
  const log = pino({ level: cfg.log_level, base: { pid: process.pid } }, pino.destination(2));
  // A bug that loses a promise must not take every client's requests down with it.
  process.on('unhandledRejection', (err) => log.error({ err }, 'unhandled rejection (a bug): the gateway keeps serving'));
  const gw = await startGateway(cfg, log);
  // Before the listening line: whoever reads it may send SIGTERM at once, and a signal with no
  // handler yet would end the process without the graceful stop.
  let stopping = false;
  const shutdown = (signal: string): void => {
    if (stopping) {
      log.warn(`${signal} again: exiting without waiting for requests in flight`);
      process.exit(1);
    }
    stopping = true;
    log.info(`${signal}: no longer accepting requests; finishing those in flight`);
    gw.stop().then(
      () => process.exit(0),
      (err: unknown) => {
        log.error({ err }, 'error while stopping');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
  const base = `http://${cfg.server.host}:${gw.port}`;
  const names = gw.table.all().map((s) => s.name);
  // The token first: whoever waits for the listening line has it already.
  if (gw.firstAdminToken) {
    process.stdout.write(`admin token (shown once; \`infergate token\` prints a new one):\n${gw.firstAdminToken}\n`);
  }
  process.stdout.write(`infergate listening on ${base}\n`);
  if (names.length) {
    process.stdout.write(`services: ${names.join(', ')}\n`);
    if (names.includes('iris')) {
      process.stdout.write(`try: curl -s -X POST ${base}/v1/infers/iris -H 'Content-Type: application/json' -d '{"data":{"req_data":[{"sepal_length":5.1,"sepal_width":3.5,"petal_length":1.4,"petal_width":0.2}]}}'\n`);
    }
  } else {
    process.stdout.write(`no services deployed: no model packages under ${cfg.models_dir}\n`);
  }
}

/** `infergate token`: a fresh admin token, signed with the key in the data dir (no server needed). */
async function tokenCommand(argv: string[]): Promise<void> {
  const { values } = parseArgs({ args: argv, options: { 'data-dir': { type: 'string' }, config: { type: 'string' }, help: { type: 'boolean', short: 'h' } } });
  if (values.help) {
    process.stdout.write('infergate token [--data-dir D] [--config gateway.yaml]\n    prints a new access token for the admin user, from the data dir\n');
    return;
  }
  const cfg = loadConfig({ file: values.config, env: process.env, flags: { dataDir: values['data-dir'] } });
  process.stdout.write(`${await adminToken(cfg.data_dir)}\n`);
}

async function main(): Promise<void> {
  const [cmd, ...rest] = process.argv.slice(2);
  switch (cmd) {
    case 'serve':
      return serve(rest);
    case 'model':
      return modelCommand(rest);
    case 'service':
      return serviceCommand(rest);
    case 'predict':
      return predictCommand(rest);
    case 'token':
      return tokenCommand(rest);
    case '--version':
    case '-v':
      process.stdout.write(`${VERSION}\n`);
      return;
    case undefined:
    case '--help':
    case '-h':
    case 'help':
      process.stdout.write(HELP());
      return;
    default:
      process.stderr.write(`infergate: unknown command '${cmd}'\n\n${HELP()}`);
      process.exitCode = 2;
  }
}

main().catch((err: unknown) => {
  const msg = err instanceof ApiError ? `${err.message} (${err.code})` : err instanceof ConfigError || err instanceof Error ? err.message : String(err);
  process.stderr.write(`infergate: ${msg}\n`);
  process.exit(1);
});
