import uWS from 'uWebSockets.js';
import type { HttpRequest, HttpResponse, TemplatedApp } from 'uWebSockets.js';
import type { ServiceManager } from '../control/lifecycle.js';
import type { ModelRegistry } from '../control/models.js';
import { PackageError } from '../control/packages.js';
import { asGatewayError, GatewayError } from '../errors.js';
import { parseJsonObject, readBody } from './body.js';
import { routeParam } from './params.js';
import { newRequestId } from './request-id.js';
import { errorReply, jsonReply, writeReply, type Reply } from './respond.js';

export interface ManagementDeps {
  models: ModelRegistry;
  services: ServiceManager;
  /** The project a request acts in (auth comes later: every caller is in the default project). */
  projectId: () => string;
  maxUploadBytes: number;
  logError: (err: unknown) => void;
}

interface Call {
  params: string[];
  contentType: string;
  body: Buffer | null;
}

type Handler = (call: Call) => Promise<Reply> | Reply;
type Method = 'get' | 'post' | 'patch' | 'del';

const JSON_LIMIT = 1024 * 1024;

/** The management API (SPEC §6): models and services, JSON in and out, errors in the §5.4 shape. */
export function registerManagement(app: TemplatedApp, deps: ManagementDeps): void {
  const { models, services } = deps;
  const route = (method: Method, pattern: string, handler: Handler, body: 'none' | 'json' | 'upload' = 'none'): void => {
    app[method](pattern, (res, req) => serve(res, req, pattern, handler, body === 'none' ? -1 : body === 'json' ? JSON_LIMIT : deps.maxUploadBytes, deps.logError));
  };
  const json = (status: number, v: unknown): Reply => jsonReply(status, v);

  route('post', '/v1/models', async (c) => json(201, await importModel(c, deps)), 'upload');
  route('get', '/v1/models', () => json(200, { models: models.list() }));
  route('get', '/v1/models/:name', (c) => json(200, models.get(c.params[0]!)));
  route('del', '/v1/models/:name', async (c) => {
    await models.deleteModel(c.params[0]!);
    return { status: 204, contentType: 'application/json', body: '' };
  });
  route('get', '/v1/models/:name/events', (c) => json(200, { events: models.events(c.params[0]!) }));
  route('get', '/v1/models/:name/versions/:version', (c) => json(200, models.getVersion(c.params[0]!, c.params[1]!)));
  route('del', '/v1/models/:name/versions/:version', async (c) => {
    await models.deleteVersion(c.params[0]!, c.params[1]!);
    return { status: 204, contentType: 'application/json', body: '' };
  });

  route('post', '/v1/services', (c) => json(202, services.create(parseJsonObject(c.body!, 'POST /v1/services'), deps.projectId())), 'json');
  route('get', '/v1/services', () => json(200, { services: services.list() }));
  route('get', '/v1/services/:id', (c) => json(200, services.get(c.params[0]!)));
  route('patch', '/v1/services/:id', (c) => json(202, services.update(c.params[0]!, parseJsonObject(c.body!, 'PATCH /v1/services'))), 'json');
  route('del', '/v1/services/:id', (c) => {
    services.remove(c.params[0]!);
    return json(202, { id: c.params[0], status: 'deleting' });
  });
  route('post', '/v1/services/:id/start', (c) => json(202, services.start(c.params[0]!)));
  route('post', '/v1/services/:id/stop', (c) => json(202, services.stop(c.params[0]!)));
  route('post', '/v1/services/:id/restart', (c) => json(202, services.restart(c.params[0]!)));
  route('get', '/v1/services/:id/events', (c) => json(200, { events: services.eventsOf(c.params[0]!) }));
}

function serve(res: HttpResponse, req: HttpRequest, pattern: string, handler: Handler, bodyLimit: number, logError: (err: unknown) => void): void {
  const requestId = req.getHeader('x-request-id') || newRequestId();
  const paramCount = (pattern.match(/:/g) ?? []).length;
  const params = Array.from({ length: paramCount }, (_, i) => routeParam(req, i));
  const contentType = req.getHeader('content-type');
  const aborted = { value: false };
  const answer = async (): Promise<Reply> => {
    const body = bodyLimit >= 0 ? await readBody(res, bodyLimit, aborted) : null;
    if (aborted.value) return errorReply(new GatewayError(400, 'Aborted', 'client went away'));
    return handler({ params, contentType, body });
  };
  if (bodyLimit < 0) res.onAborted(() => (aborted.value = true));
  answer().then(
    (reply) => {
      if (!aborted.value) writeReply(res, reply, requestId, null);
    },
    (err: unknown) => {
      const gerr = err instanceof PackageError ? new GatewayError(400, 'BadPackage', err.message) : asGatewayError(err);
      if (gerr.status === 500) logError(err);
      if (!aborted.value) writeReply(res, errorReply(gerr), requestId, null);
    },
  );
}

/** POST /v1/models: multipart (`metadata` JSON + `file`), or JSON {"name", "version", "source": {"path"}}. */
async function importModel(c: Call, deps: ManagementDeps) {
  const ct = c.contentType.toLowerCase();
  const project = deps.projectId();
  if (ct.startsWith('multipart/form-data')) {
    const parts = uWS.getParts(c.body!, c.contentType);
    if (!parts) throw new GatewayError(400, 'BadMultipart', 'the multipart body could not be parsed (check the boundary in Content-Type)');
    const metaPart = parts.find((p) => p.name === 'metadata');
    const filePart = parts.find((p) => p.name === 'file');
    if (!metaPart) throw new GatewayError(400, 'MissingPart', `the upload needs a 'metadata' part with JSON {"name", "version"?, "description"?}`);
    if (!filePart) throw new GatewayError(400, 'MissingPart', `the upload needs a 'file' part: a .onnx model, a .tar.gz or a .zip package`);
    const meta = parseJsonObject(Buffer.from(metaPart.data), `the 'metadata' part`);
    const filename = filePart.filename ?? '';
    return deps.models.importUpload(importMeta(meta, project), filename, new Uint8Array(filePart.data));
  }
  if (ct.startsWith('application/json') || ct === '') {
    const body = parseJsonObject(c.body!, 'POST /v1/models');
    const source = body['source'];
    if (typeof source !== 'object' || source === null || typeof (source as Record<string, unknown>)['path'] !== 'string') {
      throw new GatewayError(400, 'BadSpec', `a JSON import needs "source": {"path": "<package folder on the gateway's machine>"}; to upload a file use multipart/form-data`);
    }
    return deps.models.importFolder(importMeta(body, project), (source as { path: string }).path);
  }
  throw new GatewayError(415, 'UnsupportedMediaType', `Content-Type '${c.contentType}' is not supported here; send multipart/form-data or application/json`);
}

function importMeta(meta: Record<string, unknown>, projectId: string) {
  const { name, version, description } = meta;
  if (typeof name !== 'string') throw new GatewayError(400, 'BadSpec', `metadata 'name' must be a model name (1–64 of A-Za-z0-9_-)`);
  if (version !== undefined && typeof version !== 'string') throw new GatewayError(400, 'BadSpec', `metadata 'version' must be a string such as "0.0.1"`);
  if (description !== undefined && typeof description !== 'string') throw new GatewayError(400, 'BadSpec', `metadata 'description' must be a string`);
  return { name, version, description, projectId };
}
