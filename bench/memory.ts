// The memory targets of SPEC §14: idle RSS with the sample models, and no growth over a soak.
// They are absolutes (megabytes), not ratios, so they get their own table in RESULTS.md.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import os from 'node:os';
import { join, resolve } from 'node:path';
import type { LoadOptions, LoadResult } from './load.js';

/** The sample models SPEC §2 names; the other packages under models/ came with later issues. */
export const SPEC_SAMPLES = ['iris', 'ccfraud', 'credit-risk'];

export interface MemoryServer {
  pid: number;
  port: number;
  readonly dead: boolean;
  tail(): string;
  stop(): Promise<void>;
}

/** What a memory check needs from the harness (passed in, so this module starts nothing of its own kind). */
export interface MemoryDeps {
  root: string;
  startInfergate(config: Record<string, unknown> | null, opts: { modelsDir?: string; cleanup?: () => void }): Promise<MemoryServer>;
  runLoad(opts: LoadOptions): Promise<LoadResult>;
  /** The ccfraud batch-1 load the throughput scenarios use. */
  load: Omit<LoadOptions, 'port' | 'seconds'>;
  soakSeconds: number;
}

export interface MemoryResult {
  name: string;
  description: string;
  /** Megabytes (2^20 bytes). */
  valueMb: number;
  /** The most it may be, in megabytes. */
  limitMb: number;
  limitText: string;
  detail: string;
}

export interface MemoryCheck {
  name: string;
  description: string;
  run(deps: MemoryDeps): Promise<MemoryResult>;
}

/** Resident set of a process in megabytes: all its threads (the ONNX workers included). */
export function rssMb(pid: number): number {
  try {
    const kb = /^VmRSS:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    if (kb) return Number(kb[1]) / 1024;
  } catch { /* not Linux: ps below */ }
  return Number(execFileSync('ps', ['-o', 'rss=', '-p', String(pid)], { encoding: 'utf8' }).trim()) / 1024;
}

/** A models folder holding links to some of the sample packages. */
function samplesDir(root: string, names: string[]): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(os.tmpdir(), 'infergate-bench-models-'));
  for (const n of names) symlinkSync(resolve(root, 'models', n), join(dir, n));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/**
 * Resolves once the gateway is ready (every service's sessions open) and serves each of
 * `models` (a package it skipped would make the number meaningless); throws after `ms`.
 */
async function ready(s: MemoryServer, models: string[], ms = 60_000): Promise<void> {
  const base = `http://127.0.0.1:${s.port}`;
  const end = Date.now() + ms;
  for (;;) {
    const r = await fetch(`${base}/readyz`).catch(() => null);
    if (r?.status === 200) break;
    if (s.dead) throw new Error(`infergate exited before it was ready; its output:\n${s.tail()}`);
    if (Date.now() > end) throw new Error(`infergate was not ready within ${ms} ms`);
    await new Promise((r2) => setTimeout(r2, 100));
  }
  for (const m of models) {
    const r = await fetch(`${base}/v2/models/${m}/ready`);
    if (r.status !== 200) throw new Error(`infergate does not serve the sample '${m}': ${r.status} ${await r.text()}; its output:\n${s.tail()}`);
  }
}

/** Idle: ready, then left alone long enough for start-up garbage to be collected. */
const SETTLE_MS = 3000;

async function idleRss(deps: MemoryDeps, names: string[] | null): Promise<{ mb: number; server: MemoryServer }> {
  const models = names ? samplesDir(deps.root, names) : null;
  const server = await deps.startInfergate(null, models ? { modelsDir: models.dir, cleanup: models.cleanup } : {});
  await ready(server, names ?? SPEC_SAMPLES);
  await new Promise((r) => setTimeout(r, SETTLE_MS));
  return { mb: rssMb(server.pid), server };
}

const mb = (n: number): string => `${n.toFixed(1)} MB`;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

export const MEMORY_CHECKS: MemoryCheck[] = [
  {
    name: 'idle_rss',
    description: `infergate serve on the SPEC §2 sample models (${SPEC_SAMPLES.join(', ')}), ready and idle: resident set of the process (main and worker threads)`,
    async run(deps) {
      const { mb: value, server } = await idleRss(deps, SPEC_SAMPLES);
      await server.stop();
      return { name: this.name, description: this.description, valueMb: value, limitMb: 150, limitText: '≤ 150 MB', detail: 'SPEC §14' };
    },
  },
  {
    name: 'idle_rss_all',
    description: 'the same on every package under models/ (the image model\'s own process not counted)',
    async run(deps) {
      const { mb: value, server } = await idleRss(deps, null);
      await server.stop();
      // Context: no target of its own; each ONNX service version adds a worker thread with its session.
      return { name: this.name, description: this.description, valueMb: value, limitMb: Number.POSITIVE_INFINITY, limitText: '—', detail: 'context' };
    },
  },
  {
    name: 'soak',
    description: 'infergate on the SPEC §2 samples under the ccfraud batch-1 load (after a 10 s warm-up load), RSS read after each ~30 s slice: the median of the last third of the slices against that of the first third',
    async run(deps) {
      const models = samplesDir(deps.root, SPEC_SAMPLES);
      const server = await deps.startInfergate(null, { modelsDir: models.dir, cleanup: models.cleanup });
      try {
        await ready(server, SPEC_SAMPLES);
        const load = { ...deps.load, port: server.port };
        await deps.runLoad({ ...load, seconds: 10 });
        const start = rssMb(server.pid);
        // Slices, so a steady climb shows as one and a GC's saw-tooth does not read as growth.
        const slices = Math.max(1, Math.round(deps.soakSeconds / 30));
        const seen: number[] = [];
        let requests = 0;
        for (let i = 0; i < slices; i++) {
          const r = await deps.runLoad({ ...load, seconds: deps.soakSeconds / slices });
          if (server.dead) throw new Error(`infergate died during the soak; its output:\n${server.tail()}`);
          if (r.non2xx || r.errors) throw new Error(`the soak load had ${r.non2xx} non-2xx answers and ${r.errors} socket errors`);
          requests += r.rps * r.duration_s;
          seen.push(rssMb(server.pid));
        }
        // Growth is the median of the last third of the slices against that of the first third, so
        // neither the first slice's settling nor one collection's timing reads as growth.
        const third = Math.max(1, Math.floor(seen.length / 3));
        const early = median(seen.slice(0, third));
        const late = median(seen.slice(-third));
        return {
          name: this.name,
          description: this.description,
          valueMb: late - early,
          limitMb: early * 0.05,
          limitText: `≤ 5 % of ${mb(early)}`,
          detail: `${Math.round(deps.soakSeconds)} s, ${Math.round(requests).toLocaleString('en-US')} requests; RSS after warm-up ${mb(start)}, then per slice ${seen.map(mb).join(' → ')}; medians of the first and last third ${mb(early)} → ${mb(late)}`,
        };
      } finally {
        await server.stop();
      }
    },
  },
];

export function memoryTable(results: MemoryResult[]): string[] {
  return [
    '| check | MB | limit | verdict | measured |',
    '|---|---:|---:|---|---|',
    ...results.map((r) => {
      const verdict = r.limitMb === Number.POSITIVE_INFINITY ? 'context' : r.valueMb <= r.limitMb ? 'PASS' : 'MISS';
      const value = r.name === 'soak' ? `${r.valueMb >= 0 ? '+' : ''}${r.valueMb.toFixed(1)}` : r.valueMb.toFixed(1);
      return `| ${r.name} | ${value} | ${r.limitText} | ${verdict} | ${r.detail} |`;
    }),
  ];
}
