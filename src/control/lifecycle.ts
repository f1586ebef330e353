import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import { GatewayError, notFound } from '../errors.js';
import { OnnxRunner } from '../runtime/onnx/runner.js';
import { ImageRunner, type Endpoint, type InstanceView } from '../runtime/image/runner.js';
import type { Db } from '../store/db.js';
import type { EventLevel, EventLog, EventRecord } from '../store/events.js';
import type { Metrics } from '../telemetry/metrics.js';
import { isSuccess, monitorView, type VersionCalls } from '../telemetry/monitor.js';
import { TokenBucket } from '../traffic/bucket.js';
import type { ModelRegistry } from './models.js';
import { batchingOf } from './packages.js';
import { makeServedBy, makeService, versionIdle, type CompiledRules, type RoutingTable, type Service, type ServiceStatus, type ServiceVersion } from './services.js';
import { SERVICE_NAME, parseServiceSpec, splitsTraffic, versionKey, type RuleSpec, type ServiceSpec, type VersionRef, type VersionSpec } from './spec.js';
import { headersOf, parseCondition } from '../traffic/rules.js';
import { ServiceLog, type LogSettings } from '../telemetry/inference-log.js';

export interface ServiceView {
  id: string;
  name: string;
  project: string;
  description: string;
  status: ServiceStatus;
  /** A rolling update is in progress (the service keeps serving the old versions until it is done). */
  updating: boolean;
  auth: 'none' | 'token';
  timeout_minutes: number;
  traffic_limit: number | null;
  high_speed: boolean;
  websocket: boolean;
  rules: RuleSpec[];
  shadow: VersionRef[];
  log_sample_rate: number | null;
  /** Each version as stored: what the client set, with the defaults it did not set filled in. */
  versions: VersionSpec[];
  created_at: string;
  updated_at: string;
}

interface Row { id: string; project_id: string; name: string; description: string; status: ServiceStatus; spec: string; stable_spec: string | null; created_at: number; updated_at: number }

/** Which actions each status allows (ModelArts' rules; anything else is 409). */
const ALLOWED: Record<'start' | 'stop' | 'restart' | 'update', ReadonlySet<ServiceStatus>> = {
  start: new Set(['stopped', 'failed']),
  stop: new Set(['running', 'alarm', 'abnormal', 'failed']),
  restart: new Set(['running', 'alarm', 'abnormal', 'failed']),
  update: new Set(['running', 'alarm', 'abnormal', 'stopped', 'failed']),
};

class DeployTimeout extends Error {}

/** What a service view shows for each value of a version's `env`. */
const HIDDEN = '(hidden)';

/**
 * Services (SPEC §6, §11): their stored desired state, their lifecycle and the runners that
 * serve them. Every change is written to the store before it is acted on, and the data plane's
 * routing table is rebuilt and swapped after it, so a request sees a whole old or a whole new
 * service and a restarted gateway knows what each service was doing.
 */
export class ServiceManager {
  private readonly live = new Map<string, Service>();
  private readonly chains = new Map<string, Promise<void>>();
  private readonly updating = new Set<string>();
  private readonly limiters = new Map<string, TokenBucket>();
  private readonly logs = new Map<string, ServiceLog>();

  constructor(
    private readonly db: Db,
    private readonly events: EventLog,
    private readonly models: ModelRegistry,
    private readonly table: RoutingTable,
    private readonly metrics: Metrics,
    private readonly log: Logger,
    private readonly logSettings: LogSettings,
    /** The gateway's id (see gatewayId), for what image versions start outside the process. */
    private readonly gatewayId: string,
  ) {}

  // ---- queries ----

  /** The services of the given projects (all projects: null). */
  list(projectIds: ReadonlySet<string> | null): ServiceView[] {
    return (this.db.prepare('SELECT * FROM services ORDER BY name, created_at').all() as Row[])
      .filter((r) => projectIds === null || projectIds.has(r.project_id))
      .map((r) => this.view(r));
  }

  /** The services a key names: the one with that id, or those of that name (one per project). */
  locate(key: string): { id: string; projectId: string }[] {
    const rows = (this.db.prepare('SELECT id, project_id FROM services WHERE id = ?').all(key) as Row[]);
    const named = rows.length ? rows : (this.db.prepare('SELECT id, project_id FROM services WHERE name = ? ORDER BY created_at').all(key) as Row[]);
    return named.map((r) => ({ id: r.id, projectId: r.project_id }));
  }

  get(id: string): ServiceView {
    return this.view(this.row(id));
  }

  /** The instances serving the service now: image instances with their addresses and restarts, ONNX worker pools. */
  instances(id: string): InstanceView[] {
    const s = this.live.get(this.row(id).id);
    return (s?.versions ?? []).flatMap((v) => v.runner.kind === 'image'
      ? v.runner.instances()
      : Array.from({ length: v.instances }, (_, i) => ({ id: String(i), version: v.modelVersion, launcher: 'onnx', address: null, status: 'running' as const, restarts: 0, started_at: null })));
  }

  /** ModelArts' service monitor: calls per minute over the last hour and each live version's counts. */
  monitor(id: string): ReturnType<typeof monitorView> {
    const row = this.row(id);
    const versions = (this.live.get(row.id)?.versions ?? []).map((v): VersionCalls => {
      let total = 0, ok = 0;
      for (const [code, n] of v.metrics.byCode) {
        total += n;
        if (isSuccess(code)) ok += n;
      }
      const instances = v.runner.kind === 'image' ? v.runner.instances() : null;
      return {
        model_id: this.models.getVersion(row.project_id, v.model, v.modelVersion).id,
        model_name: v.model,
        model_version: v.modelVersion,
        total,
        failed: total - ok,
        minutes: v.metrics.minutes,
        running: instances ? instances.filter((i) => i.status === 'running').length : v.instances,
        instances: v.instances,
      };
    });
    return monitorView({ id: row.id, name: row.name }, versions, this.metrics.usage);
  }

  /** An image instance's output; `version` picks the service version where it has several. */
  instanceLogs(id: string, instance: string, version: string): string {
    const row = this.row(id);
    const images = (this.live.get(row.id)?.versions ?? []).filter((v) => v.runner.kind === 'image');
    const v = version ? images.find((x) => x.modelVersion === version) : images[0];
    if (!v || v.runner.kind !== 'image') {
      throw notFound(version ? `service '${row.name}' runs no image version '${version}'` : `service '${row.name}' runs no image instances${row.status === 'running' || row.status === 'alarm' ? '' : ` (it is ${row.status})`}`, 'InstanceNotFound');
    }
    const text = v.runner.logs(instance);
    if (text === null) throw notFound(`service '${row.name}' version ${v.modelVersion} has no instance '${instance}'; its instances are ${v.runner.instances().map((i) => i.id).join(', ')}`, 'InstanceNotFound');
    return text;
  }

  /** The image instances' own addresses (SPEC §5.6): for services with high_speed on. */
  imageEndpoints(id: string): Endpoint[] {
    const s = this.live.get(this.row(id).id);
    return (s?.versions ?? []).flatMap((v) => (v.runner.kind === 'image' ? v.runner.endpoints() : []));
  }

  eventsOf(id: string): EventRecord[] {
    return this.events.of('service', this.row(id).id);
  }

  /** The service (by name) deploying a model version, if any: such a version cannot be deleted. */
  usage(projectId: string, model: string, version: string): string | null {
    for (const r of this.db.prepare('SELECT name, spec, stable_spec FROM services WHERE project_id = ?').all(projectId) as Row[]) {
      for (const s of [r.spec, r.stable_spec]) {
        if (s && (JSON.parse(s) as ServiceSpec).versions.some((v) => v.model === model && v.version === version)) return r.name;
      }
    }
    return null;
  }

  // ---- commands ----

  create(body: Record<string, unknown>, projectId: string): ServiceView {
    const name = body['name'];
    if (typeof name !== 'string' || !SERVICE_NAME.test(name)) throw new GatewayError(400, 'BadSpec', `'name' must be 1–64 of A-Za-z0-9_-`);
    if (this.db.prepare('SELECT 1 FROM services WHERE name = ? AND project_id = ?').get(name, projectId)) {
      throw new GatewayError(409, 'NameTaken', `a service named '${name}' already exists in this project`);
    }
    const spec = this.checkedSpec(body, projectId);
    const now = Date.now();
    const row: Row = { id: randomUUID(), project_id: projectId, name, description: spec.description, status: 'deploying', spec: JSON.stringify(spec), stable_spec: null, created_at: now, updated_at: now };
    this.db.prepare('INSERT INTO services (id, project_id, name, description, status, spec, stable_spec, created_at, updated_at) VALUES (@id, @project_id, @name, @description, @status, @spec, @stable_spec, @created_at, @updated_at)').run(row);
    this.event(row.id, 'Normal', 'The service starts to deploy.');
    this.publish(this.service(row, 'deploying', spec, []));
    this.enqueue(row.id, () => this.deploy(row.id, spec, 'deploy'));
    return this.view(row);
  }

  update(id: string, body: Record<string, unknown>): ServiceView {
    const row = this.row(id);
    this.allow(row, 'update');
    if (this.updating.has(row.id)) throw new GatewayError(409, 'Busy', `service '${row.name}' is already being updated; wait for the update to finish`);
    if (body['name'] !== undefined && body['name'] !== row.name) throw new GatewayError(400, 'BadSpec', `a service cannot be renamed ('name' is '${row.name}')`);
    const stable = JSON.parse(row.stable_spec ?? row.spec) as ServiceSpec;
    const spec = this.checkedSpec(body, row.project_id, stable);
    // The desired state is written first: a restart in the middle rolls back to stable_spec.
    this.setRow(row.id, { spec: JSON.stringify(spec), description: spec.description });
    if (row.status === 'stopped') {
      this.setRow(row.id, { stable_spec: JSON.stringify(spec) });
      this.event(row.id, 'Normal', 'Service updated. It stays stopped until started.');
      return this.get(row.id);
    }
    if (row.status === 'failed') {
      this.setStatus(row.id, 'deploying');
      this.event(row.id, 'Normal', 'The service starts to deploy.');
      this.enqueue(row.id, () => this.deploy(row.id, spec, 'deploy'));
      return this.get(row.id);
    }
    this.updating.add(row.id);
    this.event(row.id, 'Normal', 'The service starts to update.');
    this.enqueue(row.id, () => this.rollingUpdate(row.id, spec, stable).finally(() => this.updating.delete(row.id)));
    return this.get(row.id);
  }

  start(id: string): ServiceView {
    const row = this.row(id);
    this.allow(row, 'start');
    const spec = JSON.parse(row.spec) as ServiceSpec;
    this.setStatus(row.id, 'deploying');
    this.event(row.id, 'Normal', 'The service starts to deploy.');
    this.enqueue(row.id, () => this.deploy(row.id, spec, 'deploy'));
    return this.get(row.id);
  }

  restart(id: string): ServiceView {
    const row = this.row(id);
    this.allow(row, 'restart');
    const spec = JSON.parse(row.stable_spec ?? row.spec) as ServiceSpec;
    this.event(row.id, 'Normal', 'The service is restarting.');
    if (row.status === 'failed') {
      this.setStatus(row.id, 'deploying');
      this.enqueue(row.id, () => this.deploy(row.id, spec, 'deploy'));
    } else {
      // New instances first, then the old ones drain: a restart drops no request.
      this.enqueue(row.id, () => this.deploy(row.id, spec, 'restart'));
    }
    return this.get(row.id);
  }

  stop(id: string): ServiceView {
    const row = this.row(id);
    this.allow(row, 'stop');
    this.setStatus(row.id, 'stopped');
    const old = this.live.get(row.id);
    this.publish(this.service(row, 'stopped', JSON.parse(row.spec) as ServiceSpec, []));
    this.event(row.id, 'Normal', `Service ${row.name} stopped.`);
    this.enqueue(row.id, () => this.retire(old?.versions ?? [], []));
    return this.get(row.id);
  }

  remove(id: string): void {
    const row = this.row(id);
    if (row.status === 'deleting') throw new GatewayError(409, 'Busy', `service '${row.name}' is already being deleted`);
    this.setStatus(row.id, 'deleting');
    this.event(row.id, 'Normal', `The service ${row.name} is being deleted.`);
    const old = this.live.get(row.id);
    this.live.delete(row.id);
    this.table.swap([...this.live.values()]);
    this.enqueue(row.id, async () => {
      await this.retire(old?.versions ?? [], []);
      this.db.prepare('DELETE FROM services WHERE id = ?').run(row.id);
      this.logs.delete(row.id);
      this.limiters.delete(row.id);
    });
  }

  /**
   * Declarative services: created when absent; with `converge` (gateway.yaml) also updated when
   * their stored desired state differs, so the file wins and applying it twice changes nothing.
   * The models directory's own services are only created: changes made through the API stay.
   */
  async ensure(body: Record<string, unknown>, projectId: string, converge = true): Promise<void> {
    const name = body['name'] as string;
    const existing = this.db.prepare('SELECT * FROM services WHERE name = ? AND project_id = ?').get(name, projectId) as Row | undefined;
    if (!existing) {
      this.create(body, projectId);
    } else {
      if (!converge) return;
      const spec = this.checkedSpec(body, projectId);
      if (JSON.stringify(spec) === existing.spec) return;
      this.update(existing.id, body);
    }
    await this.settled((this.db.prepare('SELECT id FROM services WHERE name = ? AND project_id = ?').get(name, projectId) as Row).id);
  }

  /** Resolves when the service's queued lifecycle work is done (start-up, shutdown). */
  async settled(id: string): Promise<void> {
    const row = this.row(id);
    await this.chains.get(row.id);
  }

  /**
   * After a restart: every service returns to its last stable state. Interrupted deployments
   * run again, interrupted updates roll back, interrupted deletions finish.
   */
  async recover(): Promise<void> {
    const rows = this.db.prepare('SELECT * FROM services').all() as Row[];
    for (const row of rows) {
      const stable = row.stable_spec ? (JSON.parse(row.stable_spec) as ServiceSpec) : null;
      const desired = JSON.parse(row.spec) as ServiceSpec;
      switch (row.status) {
        case 'deleting':
          this.db.prepare('DELETE FROM services WHERE id = ?').run(row.id);
          continue;
        case 'stopped':
        case 'failed':
          this.publish(this.service(row, row.status, desired, []));
          continue;
        default: {
          if (stable && row.spec !== row.stable_spec && row.status !== 'deploying') {
            this.setRow(row.id, { spec: row.stable_spec!, description: stable.description });
            this.event(row.id, 'Warning', 'Failed to update the service. The update has been rolled back. Error: the gateway restarted during the update.');
          }
          const spec = row.status === 'deploying' ? desired : (stable ?? desired);
          this.setStatus(row.id, 'deploying');
          this.publish(this.service(row, 'deploying', spec, []));
          this.enqueue(row.id, () => this.deploy(row.id, spec, 'deploy'));
        }
      }
    }
    await Promise.all([...this.chains.values()]);
  }

  /** Graceful stop: every runner closes once its in-flight requests are answered. */
  async shutdown(): Promise<void> {
    await Promise.all([...this.chains.values()]);
    await Promise.all([...this.live.values()].map((s) => this.retire(s.versions, [])));
  }

  // ---- the work behind the commands ----

  private async deploy(id: string, spec: ServiceSpec, mode: 'deploy' | 'restart'): Promise<void> {
    const row = this.row(id);
    const before = this.live.get(id);
    let versions: ServiceVersion[];
    try {
      checkRules(spec);
      versions = await this.startVersions(row, spec, new Map());
    } catch (err) {
      const timedOut = err instanceof DeployTimeout;
      const msg = (err as Error).message;
      if (mode === 'restart') {
        this.event(id, 'Abnormal', `Failed to restart the service; it keeps its running instances. Error: ${msg}`);
        return;
      }
      // Deleted meanwhile: nothing is published for it (a failed one would linger in the routing table under its name).
      if (!this.stillWanted(id)) return;
      this.setStatus(id, 'failed');
      this.publish(this.service(row, 'failed', spec, []));
      this.event(id, 'Abnormal', timedOut ? `Service deployment timed out. Error: ${msg}` : `Failed to deploy the service. Error: ${msg}`);
      return;
    }
    if (!this.stillWanted(id)) {
      await this.retire(versions, before?.versions ?? []);
      return;
    }
    this.setRow(id, { stable_spec: JSON.stringify(spec), spec: JSON.stringify(spec) });
    this.setStatus(id, 'running');
    this.publish(this.service(row, 'running', spec, versions));
    this.event(id, 'Normal', `Service ${row.name} started.`);
    this.healthChanged(id);
    await this.retire(before?.versions ?? [], versions);
  }

  private async rollingUpdate(id: string, spec: ServiceSpec, stable: ServiceSpec): Promise<void> {
    const row = this.row(id);
    const before = this.live.get(id);
    const reusable = new Map((before?.versions ?? []).map((v) => [v.key, v]));
    let versions: ServiceVersion[];
    try {
      checkRules(spec);
      versions = await this.startVersions(row, spec, reusable);
    } catch (err) {
      this.setRow(id, { spec: JSON.stringify(stable), description: stable.description });
      this.event(id, 'Abnormal', `Failed to update the service. The update has been rolled back. Error: ${(err as Error).message}`);
      return;
    }
    if (!this.stillWanted(id)) {
      await this.retire(versions, before?.versions ?? []);
      return;
    }
    this.setRow(id, { stable_spec: JSON.stringify(spec) });
    this.publish(this.service(row, this.row(id).status, spec, versions));
    this.event(id, 'Normal', 'Service updated.');
    this.healthChanged(id);
    await this.retire(before?.versions ?? [], versions);
  }

  /** Starts (or reuses) a runner for every version, within the deployment timeout. */
  private async startVersions(row: Row, spec: ServiceSpec, reusable: ReadonlyMap<string, ServiceVersion>): Promise<ServiceVersion[]> {
    const started = new Map<string, ServiceVersion>();
    let abandoned = false;
    const work = (async () => {
      for (const v of spec.versions) {
        const key = versionKey(v);
        if (abandoned) return;
        if (!reusable.has(key)) started.set(key, await this.startVersion(row, v, key));
      }
    })();
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new DeployTimeout(`the instances were not ready within ${spec.timeout_minutes} minutes`)), spec.timeout_minutes * 60_000);
    });
    try {
      await Promise.race([work, timeout]);
    } catch (err) {
      // Whatever started (now or after the timeout) is closed; nothing half-deployed stays running.
      abandoned = true;
      void work.then(() => undefined, () => undefined).then(() => Promise.all([...started.values()].map((v) => v.runner.close())));
      throw err;
    } finally {
      clearTimeout(timer);
    }
    // Reused runners get a fresh version object (new weight, own drain count); the old object drains alone.
    return spec.versions.map((v) => {
      const key = versionKey(v);
      const base = started.get(key) ?? reusable.get(key)!;
      const servedBy = makeServedBy(v.model, v.version, base.sha256, row.name, splitsTraffic(spec));
      return { ...base, weight: v.weight, servedBy, active: 0, idleWaiters: [] };
    });
  }

  private async startVersion(row: Row, v: VersionSpec, key: string): Promise<ServiceVersion> {
    const service = row.name;
    const pkg = await this.models.package(row.project_id, v.model, v.version);
    const label = `service ${service} (${v.model}@${v.version})`;
    if (pkg.image) {
      let image: ImageRunner | null = null;
      // Its queue is the requests and upgrades waiting for room on an instance (image.max_concurrency).
      const metrics = this.metrics.forVersion(service, v.version, () => ({ depth: image?.balancer.waitingCount ?? 0, running: image?.outstanding ?? 0 }));
      image = await ImageRunner.start({
        label, name: `infergate-${service}-${v.version}`.replace(/[^A-Za-z0-9_.-]/g, '_'), owner: this.gatewayId, version: v.version, packageDir: pkg.dir,
        image: pkg.image.image, health: pkg.image.health, instances: v.instances, env: v.env ?? {},
        event: (level, message) => this.event(row.id, level, message),
        onHealthChange: () => this.healthChanged(row.id),
      }).catch((err: unknown) => {
        this.metrics.forget(metrics);
        throw err;
      });
      return {
        key, model: v.model, modelVersion: v.version, sha256: pkg.sha256, weight: v.weight, instances: v.instances, runner: image,
        servedBy: makeServedBy(v.model, v.version, pkg.sha256, service), metrics, active: 0, idleWaiters: [],
      };
    }
    let runner: OnnxRunner | null = null;
    const metrics = this.metrics.forVersion(service, v.version, () => ({ depth: runner?.queueDepth ?? 0, running: runner?.running ?? 0 }));
    runner = await OnnxRunner.start({
      label,
      packageDir: pkg.dir,
      modelPath: pkg.modelPath,
      hookPath: pkg.hookPath,
      instances: v.instances,
      provider: v.provider,
      providerFallback: v.provider_fallback,
      intraOpThreads: v.intra_op_threads,
      batching: batchingOf(v.batching, label, pkg.batching),
      features: pkg.features,
      image: pkg.preprocess,
      stream: pkg.stream,
      observer: { batch: (rows) => metrics.batch(rows) },
    });
    for (const note of runner.notes) this.log.warn({ service }, note);
    return {
      key, model: v.model, modelVersion: v.version, sha256: pkg.sha256, weight: v.weight, instances: v.instances, runner,
      servedBy: makeServedBy(v.model, v.version, pkg.sha256, service), metrics, active: 0, idleWaiters: [],
    };
  }

  /** Closes the runners of `old` versions that `kept` does not reuse, once their calls are answered. */
  private async retire(old: readonly ServiceVersion[], kept: readonly ServiceVersion[]): Promise<void> {
    const keep = new Set(kept.map((v) => v.runner));
    await Promise.all(old.filter((v) => !keep.has(v.runner)).map(async (v) => {
      await versionIdle(v);
      await v.runner.close();
      this.metrics.forget(v.metrics);
    }));
  }

  // ---- helpers ----

  /** The data plane's view of a service: versions to serve, its bucket, its compiled rules. */
  private service(row: Row, status: ServiceStatus, spec: ServiceSpec, versions: ServiceVersion[]): Service {
    const projectName = (this.db.prepare('SELECT name FROM projects WHERE id = ?').get(row.project_id) as { name: string } | undefined)?.name ?? '';
    const serving = versions.length > 0;
    const shadows = serving ? (spec.shadow ?? []).map((r) => versions.find((v) => v.model === r.model && v.modelVersion === r.version)!) : [];
    return makeService({
      id: row.id, name: row.name, projectId: row.project_id, projectName, status, auth: spec.auth, versions,
      limiter: serving ? this.limiterFor(row.id, spec) : null,
      rules: serving ? compileRules(spec.rules ?? [], versions) : null,
      shadows,
      highSpeed: spec.high_speed === true,
      websocket: spec.websocket === true,
      log: serving ? this.logFor(row.id, spec) : null,
    });
  }

  /** The service's inference log: kept across updates and restarts of the service (not of the gateway). */
  private logFor(id: string, spec: ServiceSpec): ServiceLog {
    let log = this.logs.get(id);
    if (!log) this.logs.set(id, (log = new ServiceLog(this.logSettings, 0)));
    log.sampleRate = spec.log_sample_rate ?? this.logSettings.sample_rate;
    return log;
  }

  /** A service's inference log (empty until it has served). */
  logOf(id: string): ServiceLog {
    return this.logs.get(id) ?? new ServiceLog({ ...this.logSettings, records_per_service: 1 }, 0);
  }

  /** The service's bucket: the same one while its traffic_limit is unchanged. */
  private limiterFor(id: string, spec: ServiceSpec): TokenBucket | null {
    const rate = spec.traffic_limit ?? null;
    const current = this.limiters.get(id);
    if (rate === null) {
      this.limiters.delete(id);
      return null;
    }
    if (current?.rate === rate) return current;
    const bucket = new TokenBucket(rate);
    this.limiters.set(id, bucket);
    return bucket;
  }

  /**
   * An image instance left or rejoined the rotation: a serving service is `alarm` while any of its
   * instances fails its checks or restarts, and `running` again once all pass (SPEC §6).
   */
  private healthChanged(id: string): void {
    const s = this.live.get(id);
    const row = this.db.prepare('SELECT * FROM services WHERE id = ?').get(id) as Row | undefined;
    if (!s || !row || (row.status !== 'running' && row.status !== 'alarm')) return;
    const failing = s.versions.reduce((n, v) => n + (v.runner.kind === 'image' ? v.runner.unhealthy : 0), 0);
    const next: ServiceStatus = failing > 0 ? 'alarm' : 'running';
    if (next === row.status) return;
    this.setStatus(id, next);
    this.publish({ ...s, status: next });
    if (next === 'alarm') this.event(id, 'Warning', `Service ${row.name} is in alarm: ${failing} instance(s) failing health checks or restarting.`);
    else this.event(id, 'Normal', `Service ${row.name} is running again: every instance passes its health check.`);
  }

  /** A deletion asked for while the service deployed: what was just started is closed instead. */
  private stillWanted(id: string): boolean {
    const r = this.db.prepare('SELECT status FROM services WHERE id = ?').get(id) as { status: ServiceStatus } | undefined;
    return r !== undefined && r.status !== 'deleting';
  }

  /** The spec, its models looked up in the service's project. */
  private checkedSpec(body: Record<string, unknown>, projectId: string, base?: ServiceSpec): ServiceSpec {
    const spec = parseServiceSpec(body, (model) => this.latestVersion(projectId, model), base);
    const types = spec.versions.map((v) => ({ v, type: this.models.getVersion(projectId, v.model, v.version).model_type }));
    const image = types.find((t) => t.type === 'Image');
    const onnx = types.find((t) => t.type !== 'Image');
    if (image && onnx) {
      throw new GatewayError(400, 'BadSpec', `a service runs one kind of model: ${image.v.model}@${image.v.version} is an Image model and ${onnx.v.model}@${onnx.v.version} is ONNX; deploy them as two services`);
    }
    if (image && spec.shadow.length) throw new GatewayError(400, 'BadSpec', `'shadow' is for ONNX services: the gateway cannot compare an image model's answers (service versions here are Image models)`);
    return spec;
  }

  private latestVersion(projectId: string, model: string): string {
    const versions = this.models.get(projectId, model).versions;
    if (versions.length === 0) throw notFound(`model '${model}' has no versions`, 'VersionNotFound');
    return versions[versions.length - 1]!.version;
  }

  /** Work on one service runs one piece at a time, in the order asked. */
  private enqueue(id: string, work: () => Promise<void>): void {
    const next = (this.chains.get(id) ?? Promise.resolve()).then(work).catch((err: unknown) => {
      this.log.error({ err, service: id }, 'service lifecycle step failed');
    });
    this.chains.set(id, next);
  }

  private publish(s: Service): void {
    this.live.set(s.id, s);
    this.table.swap([...this.live.values()]);
  }

  private allow(row: Row, action: keyof typeof ALLOWED): void {
    if (action !== 'update' && this.updating.has(row.id)) {
      throw new GatewayError(409, 'Busy', `service '${row.name}' is being updated; ${action} it once the update is done`);
    }
    if (!ALLOWED[action].has(row.status)) {
      throw new GatewayError(409, 'WrongStatus', `service '${row.name}' is ${row.status}; ${action} is allowed only when it is ${[...ALLOWED[action]].join(', ')}`);
    }
  }

  /** By id: names are per project, so callers resolve them first (locate()). */
  private row(id: string): Row {
    const r = this.db.prepare('SELECT * FROM services WHERE id = ?').get(id) as Row | undefined;
    if (!r) throw notFound(`service '${id}' does not exist`, 'ServiceNotFound');
    return r;
  }

  private setStatus(id: string, status: ServiceStatus): void {
    this.setRow(id, { status });
  }

  private setRow(id: string, fields: Partial<Pick<Row, 'status' | 'spec' | 'stable_spec' | 'description'>>): void {
    const sets = Object.keys(fields).map((k) => `${k} = @${k}`).join(', ');
    this.db.prepare(`UPDATE services SET ${sets}, updated_at = @updated_at WHERE id = @id`).run({ ...fields, updated_at: Date.now(), id });
  }

  private event(id: string, level: EventLevel, message: string): void {
    this.events.record('service', id, level, message);
    this.log.info({ service: id }, message);
  }

  private view(r: Row): ServiceView {
    const spec = JSON.parse(r.spec) as ServiceSpec;
    const project = (this.db.prepare('SELECT name FROM projects WHERE id = ?').get(r.project_id) as { name: string } | undefined)?.name ?? r.project_id;
    return {
      id: r.id, name: r.name, project, description: r.description, status: r.status, updating: this.updating.has(r.id), auth: spec.auth,
      timeout_minutes: spec.timeout_minutes,
      traffic_limit: spec.traffic_limit ?? null,
      high_speed: spec.high_speed === true,
      websocket: spec.websocket === true,
      rules: spec.rules ?? [],
      shadow: spec.shadow ?? [],
      log_sample_rate: spec.log_sample_rate ?? null,
      // An instance's environment often holds credentials: anyone who may read the service sees its names only.
      versions: spec.versions.map((v) => (v.env ? { ...v, env: Object.fromEntries(Object.keys(v.env).map((k) => [k, HIDDEN])) } : v)),
      created_at: new Date(r.created_at).toISOString(), updated_at: new Date(r.updated_at).toISOString(),
    };
  }
}

/** Rules against the versions now deployed (validated at create/update, so each version exists). */
/**
 * A stored spec's rules still compile (one from an older release may not): checked before any
 * instance starts, so a refusal fails the deployment with its reason instead of leaving the
 * service "running" with nothing routed to it.
 */
function checkRules(spec: ServiceSpec): void {
  (spec.rules ?? []).forEach((r, i) => {
    try {
      parseCondition(r.condition);
    } catch (err) {
      throw new Error(`rules[${i}]: ${(err as Error).message}`);
    }
  });
}

function compileRules(rules: RuleSpec[], versions: ServiceVersion[]): CompiledRules | null {
  if (rules.length === 0) return null;
  return {
    list: rules.map((r) => ({
      holds: parseCondition(r.condition),
      version: versions.find((v) => v.model === r.model && v.modelVersion === r.version)!,
      setting: r.setting_name !== undefined ? [r.setting_name, r.setting_value!] as [string, string] : null,
    })),
    headers: [...new Set(rules.flatMap((r) => headersOf(r.condition)))],
  };
}
