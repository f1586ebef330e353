import { readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import * as tar from 'tar';
import { GatewayClient } from './client.js';

/** One path segment from a name the user typed: encoded, and never '.' or '..' (which a URL resolves away). */
function segment(s: string): string {
  if (s === '.' || s === '..') throw new Error(`'${s}' is not a name or version`);
  return encodeURIComponent(s);
}

/** `infergate model …`, `infergate service …`, `infergate predict …`: thin clients of the running gateway's API. */

const common = { url: { type: 'string' as const }, token: { type: 'string' as const }, help: { type: 'boolean' as const, short: 'h' } };

function client(v: { url?: string | undefined; token?: string | undefined }): GatewayClient {
  return new GatewayClient((v.url ?? process.env['INFERGATE_URL'] ?? 'http://127.0.0.1:8080').replace(/\/$/, ''), v.token ?? process.env['INFERGATE_TOKEN']);
}

const out = (s: string): void => {
  process.stdout.write(s + '\n');
};

function table(rows: string[][]): void {
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
  for (const r of rows) out(r.map((cell, c) => cell.padEnd(widths[c]!)).join('  ').trimEnd());
}

export const MODEL_HELP = `infergate model import <path> --name NAME [--version V] [--description D] [--url URL]
    <path>: a package folder (sent as .tar.gz), a .tar.gz/.tgz/.zip package or a bare .onnx file
infergate model list [--url URL]
infergate model delete NAME [--version V] [--url URL]`;

export async function modelCommand(argv: string[]): Promise<void> {
  const [sub, ...rest] = argv;
  const { values, positionals } = parseArgs({ args: rest, allowPositionals: true, options: { ...common, name: { type: 'string' }, version: { type: 'string' }, description: { type: 'string' } } });
  if (values.help || !sub) return out(MODEL_HELP);
  const api = client(values);
  switch (sub) {
    case 'import': {
      const src = positionals[0];
      if (!src || !values.name) throw new Error(`usage: ${MODEL_HELP.split('\n')[0]}`);
      const st = statSync(src);
      let data: Uint8Array;
      let filename = path.basename(src);
      if (st.isDirectory()) {
        process.stderr.write(`packing ${src} …\n`);
        data = await packFolder(src);
        filename = `${values.name}.tar.gz`;
      } else {
        data = readFileSync(src);
      }
      process.stderr.write(`uploading ${filename} (${data.byteLength} bytes) …\n`);
      const form = new FormData();
      form.append('metadata', JSON.stringify({ name: values.name, version: values.version, description: values.description }));
      form.append('file', new Blob([data]), filename);
      const v = await api.request('POST', '/v1/models', form);
      out(`imported ${v.name} version ${v.version} (${v.model_type}, sha256 ${v.sha256})`);
      return;
    }
    case 'list': {
      const { models } = await api.request('GET', '/v1/models');
      const rows = [['NAME', 'VERSION', 'TYPE', 'SHA256', 'CREATED']];
      for (const m of models) for (const v of m.versions) rows.push([m.name, v.version, v.model_type, v.sha256.slice(0, 12), v.created_at]);
      return table(rows);
    }
    case 'delete': {
      const name = positionals[0];
      if (!name) throw new Error('usage: infergate model delete NAME [--version V]');
      await api.request('DELETE', values.version ? `/v1/models/${segment(name)}/versions/${segment(values.version)}` : `/v1/models/${segment(name)}`);
      return out(`deleted ${name}${values.version ? ` version ${values.version}` : ''}`);
    }
    default:
      throw new Error(`unknown model command '${sub}'\n${MODEL_HELP}`);
  }
}

async function packFolder(dir: string): Promise<Uint8Array> {
  const chunks: Buffer[] = [];
  const stream = tar.c({ gzip: true, cwd: dir, portable: true }, ['.']);
  for await (const chunk of stream as AsyncIterable<Buffer>) chunks.push(chunk);
  return Buffer.concat(chunks);
}

export const SERVICE_HELP = `infergate service deploy --name NAME --model MODEL[@VERSION] [--model …] [--weight W …] [--instances N] [--auth none|token] [--wait] [--url URL]
infergate service deploy --file service.json [--wait]       (the POST /v1/services body)
infergate service list [--url URL]
infergate service start|stop|restart|delete ID_OR_NAME [--wait] [--url URL]`;

export async function serviceCommand(argv: string[]): Promise<void> {
  const [sub, ...rest] = argv;
  const { values, positionals } = parseArgs({
    args: rest, allowPositionals: true,
    options: { ...common, name: { type: 'string' }, model: { type: 'string', multiple: true }, weight: { type: 'string', multiple: true }, instances: { type: 'string' }, auth: { type: 'string' }, file: { type: 'string' }, wait: { type: 'boolean' } },
  });
  if (values.help || !sub) return out(SERVICE_HELP);
  const api = client(values);
  switch (sub) {
    case 'deploy': {
      const body = values.file ? JSON.parse(readFileSync(values.file, 'utf8')) : deployBody(values);
      const s = await api.request('POST', '/v1/services', body);
      out(`service ${s.name} (${s.id}) is ${s.status}`);
      if (values.wait) await waitFor(api, s.id, ['running', 'failed']);
      return;
    }
    case 'list': {
      const { services } = await api.request('GET', '/v1/services');
      const rows = [['NAME', 'ID', 'STATUS', 'VERSIONS']];
      for (const s of services) rows.push([s.name, s.id, s.status + (s.updating ? ' (updating)' : ''), s.versions.map((v: { model: string; version: string; weight: number }) => `${v.model}@${v.version}:${v.weight}%`).join(' ')]);
      return table(rows);
    }
    case 'start':
    case 'stop':
    case 'restart':
    case 'delete': {
      const id = positionals[0];
      if (!id) throw new Error(`usage: infergate service ${sub} ID_OR_NAME`);
      if (sub === 'delete') {
        await api.request('DELETE', `/v1/services/${segment(id)}`);
        out(`service ${id} is being deleted`);
        return;
      }
      const s = await api.request('POST', `/v1/services/${segment(id)}/${sub}`);
      out(`service ${s.name} is ${s.status}`);
      if (values.wait) await waitFor(api, s.id, sub === 'stop' ? ['stopped'] : ['running', 'failed']);
      return;
    }
    default:
      throw new Error(`unknown service command '${sub}'\n${SERVICE_HELP}`);
  }
}

function deployBody(v: { name?: string; model?: string[]; weight?: string[]; instances?: string; auth?: string }): unknown {
  if (!v.name || !v.model?.length) throw new Error(`usage: ${SERVICE_HELP.split('\n')[0]}`);
  const versions = v.model.map((m, i) => {
    const [model, version] = m.split('@');
    const entry: Record<string, unknown> = { model };
    if (version) entry['version'] = version;
    if (v.weight?.[i] !== undefined) entry['weight'] = Number(v.weight[i]);
    if (v.instances) entry['instances'] = Number(v.instances);
    return entry;
  });
  return { name: v.name, versions, ...(v.auth ? { auth: v.auth } : {}) };
}

/** Shows each status change until one of `final` (long work shows progress). */
async function waitFor(api: GatewayClient, id: string, final: string[]): Promise<void> {
  let last = '';
  for (;;) {
    const s = await api.request('GET', `/v1/services/${segment(id)}`);
    const status = s.status + (s.updating ? ' (updating)' : '');
    if (status !== last) process.stderr.write(`  ${new Date().toISOString()} ${s.name}: ${status}\n`);
    last = status;
    if (final.includes(s.status) && !s.updating) {
      if (s.status === 'failed') {
        const { events } = await api.request('GET', `/v1/services/${segment(id)}/events`);
        throw new Error(`service ${s.name} failed: ${events.at(-1)?.message ?? 'see its events'}`);
      }
      return;
    }
    await new Promise((r) => setTimeout(r, 250));
  }
}

export const PREDICT_HELP = `infergate predict SERVICE --data FILE [--content-type TYPE] [--url URL]
    FILE holds the request body in any format the gateway takes (ModelArts, Watson ML, v2, pandas-records)`;

export async function predictCommand(argv: string[]): Promise<void> {
  const { values, positionals } = parseArgs({ args: argv, allowPositionals: true, options: { ...common, data: { type: 'string' }, 'content-type': { type: 'string' } } });
  if (values.help) return out(PREDICT_HELP);
  const service = positionals[0];
  if (!service || !values.data) throw new Error(`usage: ${PREDICT_HELP.split('\n')[0]}`);
  const body = readFileSync(values.data, 'utf8');
  const answer = await client(values).request('POST', `/v1/infers/${segment(service)}`, body, { 'content-type': values['content-type'] ?? 'application/json' });
  out(typeof answer === 'string' ? answer : JSON.stringify(answer, null, 2));
}
