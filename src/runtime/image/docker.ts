import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import http from 'node:http';
import { expandArgs, type LaunchContext, type LaunchedInstance, type Launcher } from './launchers.js';
import { deadline } from './deadline.js';
import { lastOutput, OutputTail } from './output.js';
import { processTree } from './process-tree.js';

/** Where the Docker Engine API answers: DOCKER_HOST (unix:// or tcp://), else the standard socket. */
export function dockerEndpoint(): { socketPath?: string; host?: string; port?: number; shown: string } {
  const env = process.env['DOCKER_HOST'];
  if (env?.startsWith('tcp://')) {
    const u = new URL(env.replace(/^tcp:/, 'http:'));
    return { host: u.hostname, port: Number(u.port || 2375), shown: env };
  }
  const socketPath = env?.startsWith('unix://') ? env.slice('unix://'.length) : '/var/run/docker.sock';
  return { socketPath, shown: socketPath };
}

/** The engine did not answer within the time given (a health command still running, say). */
class ApiTimeout extends Error {}

function target(): { socketPath: string } | { host: string; port: number } {
  const ep = dockerEndpoint();
  return ep.socketPath ? { socketPath: ep.socketPath } : { host: ep.host!, port: ep.port! };
}

/** Calls the Docker Engine API; resolves with the status and the parsed JSON body (or text). */
function api(method: string, path: string, body?: unknown, timeoutMs = 60_000): Promise<{ status: number; body: unknown }> {
  const ep = dockerEndpoint();
  const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
  return new Promise((resolve, reject) => {
    const req = http.request({
      ...target(), method, path: `/v1.41${path}`,
      headers: payload ? { 'content-type': 'application/json', 'content-length': payload.length } : {},
    }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        cancel();
        const text = Buffer.concat(chunks).toString('utf8');
        let parsed: unknown = text;
        try {
          parsed = text ? JSON.parse(text) : null;
        } catch { /* pull progress and logs are not one JSON document */ }
        resolve({ status: res.statusCode ?? 0, body: parsed });
      });
    });
    // Infinity: no deadline (the wait for a container's exit).
    const cancel = !Number.isFinite(timeoutMs) ? (): void => undefined : deadline(timeoutMs, () => req.destroy(new ApiTimeout(`Docker Engine API ${method} ${path.split('?')[0]} took over ${timeoutMs} ms`)));
    req.on('error', (err) => {
      cancel();
      // The code stays: ECONNREFUSED says the engine is not running, which callers may take calmly.
      reject(err instanceof ApiTimeout ? err : Object.assign(new Error(`Docker Engine API at ${ep.shown}: ${err.message}`), { code: (err as NodeJS.ErrnoException).code }));
    });
    req.end(payload);
  });
}

const messageOf = (b: unknown): string => (typeof b === 'object' && b && 'message' in b ? String((b as { message: unknown }).message) : String(b));

async function must(method: string, path: string, body?: unknown, timeoutMs?: number): Promise<unknown> {
  const r = await api(method, path, body, timeoutMs);
  if (r.status >= 300) throw new Error(`Docker Engine API ${method} ${path.split('?')[0]} answered ${r.status}: ${messageOf(r.body)}`);
  return r.body;
}

/**
 * Pulls an image. A reference without a tag or digest means `:latest` (the API would pull every
 * tag), and a pull that fails part-way still answers 200: its progress stream carries the error.
 */
async function pull(image: string): Promise<void> {
  const name = image.slice(image.lastIndexOf('/') + 1);
  const tagged = name.includes(':') || image.includes('@');
  const r = await api('POST', `/images/create?fromImage=${encodeURIComponent(image)}${tagged ? '' : '&tag=latest'}`, undefined, 30 * 60_000);
  if (r.status >= 300) throw new Error(`Docker could not pull ${image}: ${messageOf(r.body)}`);
  // One progress line is parsed already; several are text.
  const failed = (typeof r.body === 'object' && r.body !== null ? [JSON.stringify(r.body)] : String(r.body).split('\n')).map((line) => {
    try {
      return (JSON.parse(line) as { error?: string }).error;
    } catch {
      return undefined;
    }
  }).find((e) => e);
  if (failed) throw new Error(`Docker could not pull ${image}: ${failed}`);
}

/**
 * Docker frames each piece of a container's output with an 8-byte header (stream, 0, 0, 0, size
 * as u32 big-endian) when it has no TTY. Takes the stream in any pieces; hands on whole frames.
 */
class FrameReader {
  private pending: Buffer = Buffer.alloc(0);

  constructor(private readonly out: (text: string) => void) {}

  push(chunk: Buffer): void {
    const b = this.pending.length ? Buffer.concat([this.pending, chunk]) : chunk;
    let p = 0;
    while (b.length - p >= 8) {
      const size = b.readUInt32BE(p + 4);
      if (b.length - p - 8 < size) break;
      this.out(b.toString('utf8', p + 8, p + 8 + size));
      p += 8 + size;
    }
    this.pending = b.subarray(p);
  }
}

/** Reads a container's output from its start: to its end (`follow`: until the container stops). */
function readLogs(id: string, follow: boolean, out: (text: string) => void): { ended: Promise<void>; cancel(): void } {
  let req: http.ClientRequest | null = null;
  const ended = new Promise<void>((resolve) => {
    req = http.get({ ...target(), path: `/v1.41/containers/${id}/logs?stdout=1&stderr=1${follow ? '&follow=1' : ''}` }, (res) => {
      const frames = new FrameReader(out);
      res.on('data', (chunk: Buffer) => frames.push(chunk));
      res.on('end', resolve);
      res.on('error', () => resolve());
    });
    req.on('error', () => resolve());
  });
  return { ended, cancel: () => req?.destroy() };
}

/** Waits for `p`, but no longer than `ms`. */
const within = (p: Promise<unknown>, ms: number): Promise<unknown> => Promise.race([p, new Promise((r) => setTimeout(r, ms).unref())]);

interface ContainerInfo {
  State?: { Running?: boolean; ExitCode?: number; Error?: string };
  NetworkSettings?: { Ports?: Record<string, { HostPort: string }[] | null> };
}

/**
 * Stops a health command that ran past its timeout. The Engine API cannot kill an exec, so its
 * process (and what it started) is killed from here, where the engine runs on this host and the
 * process shows in our /proc as a member of the container's cgroup. A remote engine, or a gateway
 * in a PID namespace of its own, leaves it running until it ends by itself, as before.
 */
async function killExec(execId: string, containerId: string): Promise<void> {
  const info = (await api('GET', `/exec/${execId}/json`, undefined, 5000).catch(() => null))?.body as { Pid?: number; Running?: boolean } | undefined;
  if (!info?.Running || !info.Pid) return;
  for (const pid of await processTree(info.Pid)) {
    try {
      // The same number may name another process in another PID namespace: only the container's is killed.
      if ((await readFile(`/proc/${pid}/cgroup`, 'latin1')).includes(containerId)) process.kill(pid, 'SIGKILL');
    } catch {
      // gone already, or not ours to see or kill
    }
  }
}

const INSTANCE_LABEL = 'infergate.instance';
const OWNER_LABEL = 'infergate.gateway';

/**
 * Removes the containers a previous run of this gateway (same data dir) left behind: a gateway
 * killed with SIGKILL cannot stop its containers, and the restart deploys new ones. Returns their
 * names; none (and no call) where no engine is configured here.
 */
export async function reapContainers(owner: string): Promise<string[]> {
  const ep = dockerEndpoint();
  if (ep.socketPath && !existsSync(ep.socketPath)) return [];
  const filters = encodeURIComponent(JSON.stringify({ label: [`${OWNER_LABEL}=${owner}`] }));
  let listed: { Id: string; Names?: string[] }[];
  try {
    listed = (await must('GET', `/containers/json?all=1&filters=${filters}`, undefined, 10_000)) as typeof listed;
  } catch (err) {
    // An engine that is installed but not running runs none of them (they are removed at a start that finds it up).
    if ((err as NodeJS.ErrnoException).code === 'ECONNREFUSED') return [];
    throw err;
  }
  const names: string[] = [];
  for (const c of listed) {
    await must('DELETE', `/containers/${c.Id}?force=true`, undefined, 60_000);
    names.push(c.Names?.[0]?.replace(/^\//, '') ?? c.Id.slice(0, 12));
  }
  return names;
}

/**
 * `docker`: each instance is a container of `image.image` with the package mounted read-only at
 * /model (MODEL_PATH), PORT set to `image.port` and HOST to 0.0.0.0 (the published port reaches
 * the container's own address, not its loopback), that port published on 127.0.0.1 at a port the
 * engine picks. `image.command`, where given, is the container's command, run in /model. The
 * engine's init runs as PID 1, so a server that ignores SIGTERM still stops at once. Where no
 * engine is reachable the deployment fails saying so.
 */
export class DockerLauncher implements Launcher {
  readonly kind = 'docker';
  readonly restartable = true;

  constructor(private readonly ctx: LaunchContext) {}

  count(instances: number): number {
    return instances;
  }

  async launch(index: number): Promise<LaunchedInstance> {
    const ep = dockerEndpoint();
    if (ep.socketPath && !existsSync(ep.socketPath)) {
      throw new Error(`no Docker engine here: ${ep.socketPath} does not exist (start Docker, set DOCKER_HOST, or give the package image.command to run it with the process launcher)`);
    }
    const image = this.ctx.image.image!;
    const port = this.ctx.image.port;
    const env: Record<string, string> = { HOST: '0.0.0.0', ...this.ctx.image.env, ...this.ctx.env, PORT: String(port), MODEL_PATH: '/model' };
    const command = this.ctx.image.command;
    const spec = {
      Image: image,
      Env: Object.entries(env).map(([k, v]) => `${k}=${v}`),
      ExposedPorts: { [`${port}/tcp`]: {} },
      Labels: { [INSTANCE_LABEL]: this.ctx.name, [OWNER_LABEL]: this.ctx.owner },
      HostConfig: {
        PortBindings: { [`${port}/tcp`]: [{ HostIp: '127.0.0.1', HostPort: '' }] },
        Binds: [`${this.ctx.packageDir}:/model:ro`],
        Init: true,
      },
      ...(command ? { Cmd: expandArgs(command, env), WorkingDir: '/model' } : {}),
    };
    const name = `${this.ctx.name}-${index}-${Date.now().toString(36)}`;
    let created = await api('POST', `/containers/create?name=${encodeURIComponent(name)}`, spec);
    if (created.status === 404) {
      await pull(image);
      created = await api('POST', `/containers/create?name=${encodeURIComponent(name)}`, spec);
    }
    if (created.status >= 300) throw new Error(`Docker could not create a container of ${image}: ${messageOf(created.body)}`);
    const id = (created.body as { Id: string }).Id;
    const remove = (): Promise<unknown> => api('DELETE', `/containers/${id}?force=true`).catch(() => undefined);
    let bound: string | undefined;
    try {
      await must('POST', `/containers/${id}/start`);
      const info = (await must('GET', `/containers/${id}/json`)) as ContainerInfo;
      bound = info.NetworkSettings?.Ports?.[`${port}/tcp`]?.[0]?.HostPort;
      if (!bound && info.State && !info.State.Running) {
        const output = new OutputTail();
        await within(readLogs(id, false, (t) => output.push(t)).ended, 5000);
        throw new Error(`container ${name} exited with code ${info.State.ExitCode ?? '?'} as it started${info.State.Error ? ` (${info.State.Error})` : ''}${lastOutput(output.text())}`);
      }
      if (!bound) throw new Error(`Docker published no host port for ${port}/tcp of container ${name}`);
    } catch (err) {
      // A container that was created but cannot serve is not left behind (each retry would add one).
      await remove();
      throw err;
    }
    const output = new OutputTail();
    const logs = readLogs(id, true, (t) => output.push(t));
    let gone = false;
    const exited = api('POST', `/containers/${id}/wait`, undefined, Infinity).then(
      async (r) => {
        // The last lines may still be on their way: the exit's event quotes them.
        await within(logs.ended, 1000);
        return `exited with code ${(r.body as { StatusCode?: number } | null)?.StatusCode ?? '?'}`;
      },
      (err: Error) => `could not be watched: ${err.message}`,
    ).finally(() => (gone = true));
    return {
      host: '127.0.0.1',
      port: Number(bound),
      exited,
      logs: () => output.text(),
      async exec(cmd, timeoutMs) {
        const ex = (await must('POST', `/containers/${id}/exec`, { Cmd: cmd, AttachStdout: true, AttachStderr: true })) as { Id: string };
        // Attached, the start answers with the command's output and ends when the command does
        // (detached, it would answer at once, before there is an exit code).
        try {
          await must('POST', `/exec/${ex.Id}/start`, { Detach: false }, timeoutMs);
        } catch (err) {
          if (!(err instanceof ApiTimeout)) throw err;
          await killExec(ex.Id, id);
          return -1;
        }
        const res = (await must('GET', `/exec/${ex.Id}/json`)) as { ExitCode?: number | null };
        return res.ExitCode ?? -1;
      },
      async stop(graceMs) {
        if (!gone) await api('POST', `/containers/${id}/stop?t=${Math.ceil(graceMs / 1000)}`, undefined, graceMs + 30_000).catch(() => undefined);
        await within(logs.ended, 1000);
        logs.cancel();
        await remove();
      },
    };
  }
}
