import { existsSync } from 'node:fs';
import http from 'node:http';
import type { LaunchContext, LaunchedInstance, Launcher } from './launchers.js';
import { OutputTail } from './output.js';

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

/** Calls the Docker Engine API; resolves with the status and the parsed JSON body (or text). */
function api(method: string, path: string, body?: unknown, timeoutMs = 60_000): Promise<{ status: number; body: unknown }> {
  const ep = dockerEndpoint();
  const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
  return new Promise((resolve, reject) => {
    const req = http.request({
      ...(ep.socketPath ? { socketPath: ep.socketPath } : { host: ep.host, port: ep.port }),
      method, path: `/v1.41${path}`, timeout: timeoutMs,
      headers: payload ? { 'content-type': 'application/json', 'content-length': payload.length } : {},
    }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let parsed: unknown = text;
        try {
          parsed = text ? JSON.parse(text) : null;
        } catch { /* pull progress and logs are not one JSON document */ }
        resolve({ status: res.statusCode ?? 0, body: parsed });
      });
    });
    req.on('timeout', () => req.destroy(new Error(`Docker Engine API ${method} ${path} took over ${timeoutMs} ms`)));
    req.on('error', (err) => reject(new Error(`Docker Engine API at ${ep.shown}: ${err.message}`)));
    req.end(payload);
  });
}

const messageOf = (b: unknown): string => (typeof b === 'object' && b && 'message' in b ? String((b as { message: unknown }).message) : String(b));

async function must(method: string, path: string, body?: unknown, timeoutMs?: number): Promise<unknown> {
  const r = await api(method, path, body, timeoutMs);
  if (r.status >= 300) throw new Error(`Docker Engine API ${method} ${path.split('?')[0]} answered ${r.status}: ${messageOf(r.body)}`);
  return r.body;
}

/** Docker's log stream frames each piece with an 8-byte header when the container has no TTY. */
function demux(raw: string): string {
  return raw.replace(/[\u0000-\u0002]\u0000\u0000\u0000[\s\S]{4}/g, '');
}

/**
 * `docker`: each instance is a container of `image.image` with the package mounted read-only at
 * /model (MODEL_PATH), PORT set to `image.port`, that port published on 127.0.0.1 at a port the
 * engine picks. Where no engine is reachable the deployment fails saying so.
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
    const env = { ...this.ctx.image.env, ...this.ctx.env, PORT: String(port), MODEL_PATH: '/model' };
    const spec = {
      Image: image,
      Env: Object.entries(env).map(([k, v]) => `${k}=${v}`),
      ExposedPorts: { [`${port}/tcp`]: {} },
      Labels: { 'infergate.instance': this.ctx.name },
      HostConfig: {
        PortBindings: { [`${port}/tcp`]: [{ HostIp: '127.0.0.1', HostPort: '' }] },
        Binds: [`${this.ctx.packageDir}:/model:ro`],
      },
      ...(this.ctx.image.command ? { Cmd: this.ctx.image.command } : {}),
    };
    const name = `${this.ctx.name}-${index}-${Date.now().toString(36)}`;
    let created = await api('POST', `/containers/create?name=${encodeURIComponent(name)}`, spec);
    if (created.status === 404) {
      await must('POST', `/images/create?fromImage=${encodeURIComponent(image)}`, undefined, 30 * 60_000);
      created = await api('POST', `/containers/create?name=${encodeURIComponent(name)}`, spec);
    }
    if (created.status >= 300) throw new Error(`Docker could not create a container of ${image}: ${messageOf(created.body)}`);
    const id = (created.body as { Id: string }).Id;
    await must('POST', `/containers/${id}/start`);
    const info = (await must('GET', `/containers/${id}/json`)) as { NetworkSettings?: { Ports?: Record<string, { HostPort: string }[] | null> } };
    const bound = info.NetworkSettings?.Ports?.[`${port}/tcp`]?.[0]?.HostPort;
    if (!bound) throw new Error(`Docker published no host port for ${port}/tcp of container ${name}`);
    const output = new OutputTail();
    let gone = false;
    const exited = api('POST', `/containers/${id}/wait`, undefined, 2 ** 31 - 1).then(
      (r) => `exited with code ${(r.body as { StatusCode?: number } | null)?.StatusCode ?? '?'}`,
      (err: Error) => `could not be watched: ${err.message}`,
    ).finally(() => (gone = true));
    const fetchLogs = async (): Promise<void> => {
      const r = await api('GET', `/containers/${id}/logs?stdout=1&stderr=1&tail=200`).catch(() => null);
      if (r && typeof r.body === 'string') output.push(demux(r.body));
    };
    return {
      host: '127.0.0.1',
      port: Number(bound),
      exited,
      logs: () => output.text() || `container ${name}: ask \`docker logs ${name}\`\n`,
      async exec(command, timeoutMs) {
        const ex = (await must('POST', `/containers/${id}/exec`, { Cmd: command, AttachStdout: false, AttachStderr: false })) as { Id: string };
        await must('POST', `/exec/${ex.Id}/start`, { Detach: false }, timeoutMs);
        const res = (await must('GET', `/exec/${ex.Id}/json`)) as { ExitCode?: number | null };
        return res.ExitCode ?? -1;
      },
      async stop(graceMs) {
        await fetchLogs();
        if (!gone) await api('POST', `/containers/${id}/stop?t=${Math.ceil(graceMs / 1000)}`, undefined, graceMs + 30_000).catch(() => undefined);
        await api('DELETE', `/containers/${id}?force=true`).catch(() => undefined);
      },
    };
  }
}
