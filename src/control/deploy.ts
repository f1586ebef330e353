import type { Logger } from 'pino';
import type { GatewayConfig, ServiceSpec } from '../config/config.js';
import { batchingOf, listPackageDirs, readPackage, type ModelPackage } from './packages.js';
import { makeServedBy, makeService, type Service, type ServiceVersion } from './services.js';
import { OnnxRunner } from '../runtime/onnx/runner.js';
import type { Metrics } from '../telemetry/metrics.js';

/**
 * Start: read every package under models_dir and deploy the configured services, plus one service
 * per package that no configured service names (the quick start's `iris`, `ccfraud`, …).
 */
export async function deployFromConfig(cfg: GatewayConfig, metrics: Metrics, log: Logger): Promise<Service[]> {
  const packages = new Map<string, ModelPackage>();
  for (const dir of await listPackageDirs(cfg.models_dir)) {
    try {
      const pkg = await readPackage(dir);
      if (pkg.modelType !== 'ONNX') {
        log.warn({ model: pkg.name }, `model ${pkg.name}: model_type ${pkg.modelType} is not served by this build yet; skipped`);
        continue;
      }
      packages.set(pkg.name, pkg);
    } catch (err) {
      log.error({ dir }, `skipping package: ${(err as Error).message}`);
    }
  }
  const specs: ServiceSpec[] = [...cfg.services];
  const named = new Set(specs.map((s) => s.name));
  for (const name of packages.keys()) {
    if (!named.has(name)) specs.push({ name, auth: 'none', versions: [{ model: name, weight: 100 }] });
  }
  const services: Service[] = [];
  for (const spec of specs) {
    try {
      services.push(await deployService(spec, packages, metrics, log));
      log.info({ service: spec.name }, `Service ${spec.name} started.`);
    } catch (err) {
      log.error({ service: spec.name }, `Service ${spec.name} failed to deploy: ${(err as Error).message}`);
    }
  }
  return services;
}

export async function deployService(spec: ServiceSpec, packages: ReadonlyMap<string, ModelPackage>, metrics: Metrics, log: Logger): Promise<Service> {
  const weights = spec.versions.map((v) => v.weight ?? (spec.versions.length === 1 ? 100 : undefined));
  if (weights.some((w) => w === undefined || w < 0)) throw new Error(`service ${spec.name}: every version of a multi-version service needs a weight`);
  const total = weights.reduce<number>((a, w) => a + w!, 0);
  if (total !== 100) throw new Error(`service ${spec.name}: version weights sum to ${total}; they must sum to 100`);
  const versions: ServiceVersion[] = [];
  try {
    for (let i = 0; i < spec.versions.length; i++) {
      const v = spec.versions[i]!;
      const pkg = packages.get(v.model);
      if (!pkg) throw new Error(`service ${spec.name}: model '${v.model}' is not in the models directory`);
      if (v.version !== undefined && v.version !== pkg.version) throw new Error(`service ${spec.name}: model ${v.model} has no version ${v.version} (have ${pkg.version})`);
      const label = `service ${spec.name} (${pkg.name}@${pkg.version})`;
      const instances = v.instances ?? 1;
      let runner: OnnxRunner | null = null;
      const vm = metrics.forVersion(spec.name, pkg.version, () => ({ depth: runner?.queueDepth ?? 0, running: runner?.running ?? 0 }));
      runner = await OnnxRunner.start({
        label,
        packageDir: pkg.dir,
        modelPath: pkg.modelPath,
        hookPath: pkg.hookPath,
        instances,
        provider: v.provider ?? 'cpu',
        providerFallback: v.provider_fallback,
        intraOpThreads: v.intra_op_threads ?? 1,
        batching: batchingOf(v.batching, label, pkg.batching),
        features: pkg.features,
        observer: { batch: (rows) => vm.batch(rows) },
      });
      for (const note of runner.notes) log.warn({ service: spec.name }, note);
      versions.push({
        model: pkg.name,
        modelVersion: pkg.version,
        sha256: pkg.sha256,
        weight: weights[i]!,
        instances,
        runner,
        servedBy: makeServedBy(pkg.name, pkg.version, pkg.sha256, spec.name),
        metrics: vm,
      });
    }
  } catch (err) {
    await Promise.all(versions.map((v) => v.runner.close()));
    throw err;
  }
  return makeService(spec.name, spec.auth ?? 'none', versions);
}
