import { setTimeout as sleep } from 'node:timers/promises';
import type { EventLevel } from '../../store/events.js';
import { Balancer, Upstream } from './balancer.js';
import type { HealthConfig, ImageConfig } from './config.js';
import { probe, startupProbe } from './health.js';
import { launcherFor, type LaunchedInstance, type Launcher } from './launchers.js';
import { lastOutput } from './output.js';
import { hostPort } from './upstream.js';

export interface ImageVersionOptions {
  /** "service s (model@version)", used in events. */
  label: string;
  /** A name for the engine (docker container names). */
  name: string;
  /** The gateway's id (see gatewayId): what the engine's containers are labelled with. */
  owner: string;
  version: string;
  packageDir: string;
  image: ImageConfig;
  health: HealthConfig;
  instances: number;
  env: Record<string, string>;
  event: (level: EventLevel, message: string) => void;
  /** An instance left or rejoined the rotation: the service may be `alarm` or `running` now. */
  onHealthChange: () => void;
}

export type InstanceStatus = 'starting' | 'running' | 'unhealthy' | 'restarting' | 'stopped';

export interface InstanceView {
  id: string;
  version: string;
  launcher: string;
  address: string | null;
  status: InstanceStatus;
  restarts: number;
  started_at: string | null;
}

export interface Endpoint {
  schema: 'http';
  ip: string;
  port: number;
  version: string;
  instance: string;
}

/** How often a starting instance is checked: readiness is noticed within this, whatever `period_seconds` is. */
const STARTUP_POLL_MS = 100;
/** How long a stopping instance gets between SIGTERM and the kill. */
const STOP_GRACE_MS = 10_000;
/** How long an instance taken out of rotation may finish its requests before it is stopped (SPEC §8.2). */
const DRAIN_MS = 180_000;
const RESTART_BACKOFF_MAX_MS = 60_000;

interface Slot {
  index: number;
  status: InstanceStatus;
  launched: LaunchedInstance | null;
  upstream: Upstream | null;
  /** Bumped whenever the slot's instance changes: watchers of an older instance stop. */
  generation: number;
  failures: number;
  restarts: number;
  startedAt: number | null;
  timer: NodeJS.Timeout | null;
  /** The output of the instance this one replaced, for finding out why it failed. */
  previousLogs: string;
}

/**
 * One service version of an Image model: its instances, launched and kept healthy (SPEC §8.2),
 * and the balancer the proxy asks for one. An instance failing its checks while running is taken
 * out of rotation, drained and replaced; an instance that exits is replaced at once.
 */
export class ImageRunner {
  readonly kind = 'image';
  readonly balancer: Balancer;
  private readonly launcher: Launcher;
  private readonly slots: Slot[];
  private closed = false;

  private constructor(private readonly opts: ImageVersionOptions) {
    this.launcher = launcherFor({ label: opts.label, name: opts.name, owner: opts.owner, packageDir: opts.packageDir, image: opts.image, env: opts.env });
    this.balancer = new Balancer((u, ms) => opts.event('Warning', `Instance ${u.id} of ${opts.label} was taken out of load balancing for ${Math.round(ms / 1000)} s after failing requests in a row.`), opts.image.max_concurrency);
    this.slots = Array.from({ length: this.launcher.count(opts.instances) }, (_, index) => ({
      index, status: 'starting' as InstanceStatus, launched: null, upstream: null, generation: 0, failures: 0, restarts: 0, startedAt: null, timer: null, previousLogs: '',
    }));
  }

  /** Launches every instance and resolves once all are healthy; a failing one fails the whole start. */
  static async start(opts: ImageVersionOptions): Promise<ImageRunner> {
    const r = new ImageRunner(opts);
    try {
      await Promise.all(r.slots.map((s) => r.bringUp(s)));
    } catch (err) {
      await r.close();
      throw err;
    }
    for (const s of r.slots) r.watch(s);
    return r;
  }

  /** Instances out of rotation (failing checks, restarting): the service is `alarm` while any is. */
  get unhealthy(): number {
    let n = 0;
    for (const s of this.slots) if (s.status !== 'running') n++;
    return n;
  }

  /** Requests in flight on the version's instances. */
  get outstanding(): number {
    let n = 0;
    for (const s of this.slots) n += s.upstream?.outstanding ?? 0;
    return n;
  }

  instances(): InstanceView[] {
    return this.slots.map((s) => ({
      id: String(s.index), version: this.opts.version, launcher: this.launcher.kind,
      address: s.launched ? `http://${hostPort(s.launched)}` : null, status: s.status, restarts: s.restarts,
      started_at: s.startedAt ? new Date(s.startedAt).toISOString() : null,
    }));
  }

  /** The instances' own addresses, for the high-speed channel (SPEC §5.6). */
  endpoints(): Endpoint[] {
    return this.slots.filter((s) => s.status === 'running' && s.launched).map((s) => ({
      schema: 'http', ip: s.launched!.host, port: s.launched!.port, version: this.opts.version, instance: String(s.index),
    }));
  }

  /** The output of instance `id` (and of the one it replaced); null for no such instance. */
  logs(id: string): string | null {
    const s = this.slots.find((x) => String(x.index) === id);
    if (!s) return null;
    const current = s.launched?.logs() ?? '';
    return s.previousLogs ? `--- the instance it replaced ---\n${s.previousLogs}--- this instance ---\n${current}` : current;
  }

  async close(): Promise<void> {
    this.closed = true;
    this.balancer.set([]);
    await Promise.all(this.slots.map(async (s) => {
      s.generation++;
      if (s.timer) clearTimeout(s.timer);
      s.status = 'stopped';
      const { launched, upstream } = s;
      s.upstream = null;
      upstream?.pool.close();
      await launched?.stop(STOP_GRACE_MS);
    }));
  }

  // ---- the life of an instance ----

  /** Launches the slot's instance and waits for its first passing check; throws saying why it did not come up. */
  private async bringUp(slot: Slot): Promise<void> {
    slot.status = 'starting';
    const inst = await this.launcher.launch(slot.index);
    slot.launched = inst;
    const why = await this.firstHealthy(inst);
    if (why !== null) {
      await inst.stop(STOP_GRACE_MS);
      throw new Error(`instance ${slot.index} of ${this.opts.label} ${why}${lastOutput(inst.logs())}`);
    }
    slot.upstream = new Upstream(String(slot.index), inst.host, inst.port);
    slot.status = 'running';
    slot.failures = 0;
    slot.startedAt = Date.now();
    this.rotate();
  }

  /**
   * Null once a check passes. A starting instance gets the time Kubernetes would give it
   * (initial delay, then failure_threshold periods) but is checked often, so a fast server is
   * ready fast; exiting ends the wait at once.
   */
  private async firstHealthy(inst: LaunchedInstance): Promise<string | null> {
    const h = this.opts.health;
    const budgetS = h.initial_delay_seconds + h.period_seconds * h.failure_threshold + h.timeout_seconds;
    const deadline = performance.now() + budgetS * 1000;
    let exit: string | null = null;
    void inst.exited.then((r) => (exit = r));
    if (h.initial_delay_seconds > 0) await Promise.race([sleep(h.initial_delay_seconds * 1000), inst.exited]);
    for (;;) {
      if (this.closed) return 'was stopped while starting';
      if (exit !== null) return `${exit} before it became healthy`;
      const why = await startupProbe(h, inst);
      if (why === null) return exit === null ? null : `${exit} before it became healthy`;
      if (performance.now() >= deadline) return `failed its health check for ${+budgetS.toFixed(2)} s after starting: ${why}`;
      await Promise.race([sleep(STARTUP_POLL_MS), inst.exited]);
    }
  }

  /** Checks a running instance every period; watches for it exiting. */
  private watch(slot: Slot): void {
    const inst = slot.launched!;
    const gen = slot.generation;
    const h = this.opts.health;
    const current = (): boolean => !this.closed && slot.generation === gen;
    void inst.exited.then((how) => {
      if (current()) void this.replace(slot, `${how}`, 'Abnormal');
    });
    const tick = async (): Promise<void> => {
      const why = await probe(h, inst);
      if (!current()) return;
      if (why === null) {
        slot.failures = 0;
        if (slot.status === 'unhealthy') {
          slot.status = 'running';
          this.rotate();
          this.opts.event('Normal', `Instance ${slot.index} of ${this.opts.label} passes its health check again.`);
          this.opts.onHealthChange();
        }
      } else if (++slot.failures >= h.failure_threshold && slot.status === 'running') {
        const reason = `failed its health check ${slot.failures} times in a row (${why})`;
        if (this.launcher.restartable) {
          void this.replace(slot, reason, 'Warning');
          return;
        }
        slot.status = 'unhealthy';
        this.rotate();
        this.opts.event('Warning', `Instance ${slot.index} of ${this.opts.label} ${reason}; it is out of rotation until it passes again.`);
        this.opts.onHealthChange();
      }
      slot.timer = setTimeout(() => void tick(), h.period_seconds * 1000);
      slot.timer.unref();
    };
    slot.timer = setTimeout(() => void tick(), h.period_seconds * 1000);
    slot.timer.unref();
  }

  /** Takes the instance out of rotation, drains and stops it, and launches another until one is healthy. */
  private async replace(slot: Slot, why: string, level: EventLevel): Promise<void> {
    slot.generation++;
    if (slot.timer) clearTimeout(slot.timer);
    const old = { launched: slot.launched, upstream: slot.upstream };
    slot.status = 'restarting';
    slot.upstream = null;
    this.rotate();
    const lastLine = old.launched?.logs().trimEnd().split('\n').pop()?.slice(0, 300);
    this.opts.event(level, `Instance ${slot.index} of ${this.opts.label} ${why}; restarting it.${lastLine ? ` Its last output: ${lastLine}` : ''}`);
    this.opts.onHealthChange();
    if (old.upstream) await drained(old.upstream, () => this.closed);
    old.upstream?.pool.close();
    if (old.launched) {
      await old.launched.stop(STOP_GRACE_MS);
      slot.previousLogs = old.launched.logs();
    }
    let backoff = 0;
    while (!this.closed) {
      if (backoff) await sleep(backoff);
      if (this.closed) return;
      try {
        await this.bringUp(slot);
      } catch (err) {
        backoff = Math.min(RESTART_BACKOFF_MAX_MS, Math.max(1000, backoff * 2));
        this.opts.event('Abnormal', `Instance ${slot.index} of ${this.opts.label} could not be restarted: ${(err as Error).message.split('\n')[0]}; trying again in ${backoff / 1000} s.`);
        continue;
      }
      if (this.closed) {
        // close() ran while this instance started: it would outlive the runner.
        (slot.upstream as Upstream | null)?.pool.close();
        await slot.launched?.stop(STOP_GRACE_MS);
        return;
      }
      slot.restarts++;
      this.opts.event('Normal', `Instance ${slot.index} of ${this.opts.label} was restarted and is healthy.`);
      this.opts.onHealthChange();
      this.watch(slot);
      return;
    }
  }

  private rotate(): void {
    if (this.closed) return;
    this.balancer.set(this.slots.filter((s) => s.status === 'running' && s.upstream).map((s) => s.upstream!));
  }
}

/** Resolves when the instance has answered what it was sent, or the drain budget is spent. */
async function drained(u: Upstream, stop: () => boolean): Promise<void> {
  const until = performance.now() + DRAIN_MS;
  while (u.outstanding > 0 && performance.now() < until && !stop()) await sleep(50);
}
