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
import { Access, tokenOf } from '../auth/access.js';
import type { Capability } from '../auth/identity.js';
import type { Principal } from '../auth/tokens.js';

export interface ManagementDeps {
  models: ModelRegistry;
  services: ServiceManager;
  access: Access;
  /** The project a request acts in (auth comes later: every caller is in the default project). */
  projectId: () => string;
  maxUploadBytes: number;
  logError: (err: unknown) => void;
}

interface Call {
  params: string[];
  contentType: string;
  body: Buffer | null;
  /** Null only on the public route (token issue). */
  principal: Principal | null;
}

type Handler = (call: Call) => Promise<Reply> | Reply;
type Method = 'get' | 'post' | 'patch' | 'del';
/** What a route needs in the project it acts on ('public': no token, e.g. POST /v1/auth/tokens). */
type Need = Capability | 'public';

const JSON_LIMIT = 1024 * 1024;

/** The management API (SPEC §6): models and services, JSON in and out, errors in the §5.4 shape. */
export function registerManagement(app: TemplatedApp, deps: ManagementDeps): void {
  const { models, services, access } = deps;
  const route = (method: Method, pattern: string, need: Need, handler: Handler, body: 'none' | 'json' | 'upload' = 'none'): void => {
    const limit = body === 'none' ? -1 : body === 'json' ? JSON_LIMIT : deps.maxUploadBytes;
    app[method](pattern, (res, req) => serve(res, req, pattern, need, handler, limit, deps));
  };
  const json = (status: number, v: unknown): Reply => jsonReply(status, v);

  const noContent: Reply = { status: 204, contentType: 'application/json', body: '' };
  const { identity, tokens } = access;

  route('post', '/v1/auth/tokens', 'public', async (c) => json(200, await tokens.exchange(parseJsonObject(c.body!, 'POST /v1/auth/tokens'))), 'json');

  route('post', '/v1/models', 'write', async (c) => json(201, await importModel(c, deps)), 'upload');
  route('get', '/v1/models', 'read', () => json(200, { models: models.list() }));
  route('get', '/v1/models/:name', 'read', (c) => json(200, models.get(c.params[0]!)));
  route('del', '/v1/models/:name', 'write', async (c) => {
    await models.deleteModel(c.params[0]!);
    return noContent;
  });
  route('get', '/v1/models/:name/events', 'read', (c) => json(200, { events: models.events(c.params[0]!) }));
  route('get', '/v1/models/:name/versions/:version', 'read', (c) => json(200, models.getVersion(c.params[0]!, c.params[1]!)));
  route('del', '/v1/models/:name/versions/:version', 'write', async (c) => {
    await models.deleteVersion(c.params[0]!, c.params[1]!);
    return noContent;
  });

  route('post', '/v1/services', 'write', (c) => json(202, services.create(parseJsonObject(c.body!, 'POST /v1/services'), deps.projectId())), 'json');
  route('get', '/v1/services', 'read', () => json(200, { services: services.list() }));
  route('get', '/v1/services/:id', 'read', (c) => json(200, services.get(c.params[0]!)));
  route('patch', '/v1/services/:id', 'write', (c) => json(202, services.update(c.params[0]!, parseJsonObject(c.body!, 'PATCH /v1/services'))), 'json');
  route('del', '/v1/services/:id', 'write', (c) => {
    services.remove(c.params[0]!);
    return json(202, { id: c.params[0], status: 'deleting' });
  });
  route('post', '/v1/services/:id/start', 'write', (c) => json(202, services.start(c.params[0]!)));
  route('post', '/v1/services/:id/stop', 'write', (c) => json(202, services.stop(c.params[0]!)));
  route('post', '/v1/services/:id/restart', 'write', (c) => json(202, services.restart(c.params[0]!)));
  route('get', '/v1/services/:id/events', 'read', (c) => json(200, { events: services.eventsOf(c.params[0]!) }));

  // Identity: users and projects are the administrators' (admin in the default project).
  route('post', '/v1/users', 'admin', async (c) => {
    const b = parseJsonObject(c.body!, 'POST /v1/users');
    return json(201, await identity.createUser(b['username'], b['password'], b['domain']));
  }, 'json');
  route('get', '/v1/users', 'admin', () => json(200, { users: identity.users() }));
  route('post', '/v1/users/:id/deactivate', 'admin', (c) => {
    identity.setActive(c.params[0]!, false);
    return json(200, { id: c.params[0], active: false });
  });
  route('post', '/v1/users/:id/activate', 'admin', (c) => {
    identity.setActive(c.params[0]!, true);
    return json(200, { id: c.params[0], active: true });
  });
  route('post', '/v1/users/:id/api-keys', 'admin', (c) => json(201, identity.createApiKey(c.params[0]!)));
  route('del', '/v1/users/:id/api-keys/:key', 'admin', (c) => {
    identity.revokeApiKey(c.params[0]!, c.params[1]!);
    return noContent;
  });
  route('post', '/v1/projects', 'admin', (c) => json(201, identity.createProject(parseJsonObject(c.body!, 'POST /v1/projects')['name'])), 'json');
  route('get', '/v1/projects', 'admin', () => json(200, { projects: identity.projects() }));
  route('post', '/v1/projects/:id/members', 'admin', (c) => {
    const project = identity.project(c.params[0]!);
    const b = parseJsonObject(c.body!, 'POST /v1/projects/{id}/members');
    identity.setMember(project.id, b['user_id'], b['role']);
    return json(200, { project_id: project.id, user_id: b['user_id'], role: b['role'] });
  }, 'json');
  route('del', '/v1/projects/:id/members/:user', 'admin', (c) => {
    identity.removeMember(identity.project(c.params[0]!).id, c.params[1]!);
    return noContent;
  });
}

const NEED_TEXT: Record<Capability, string> = { read: 'reading it', write: 'changing it', infer: 'inference', admin: 'administering users and projects' };

function serve(res: HttpResponse, req: HttpRequest, pattern: string, need: Need, handler: Handler, bodyLimit: number, deps: ManagementDeps): void {
  const { logError, access } = deps;
  const requestId = req.getHeader('x-request-id') || newRequestId();
  const xAuthToken = req.getHeader('x-auth-token');
  const authorization = req.getHeader('authorization');
  const method = req.getMethod().toUpperCase();
  const paramCount = (pattern.match(/:/g) ?? []).length;
  const params = Array.from({ length: paramCount }, (_, i) => routeParam(req, i));
  const contentType = req.getHeader('content-type');
  const aborted = { value: false };
  const answer = async (): Promise<Reply> => {
    // The body is read first either way, so a refusal never leaves it unread on the connection.
    const body = bodyLimit >= 0 ? await readBody(res, bodyLimit, aborted) : null;
    if (aborted.value) return errorReply(new GatewayError(400, 'Aborted', 'client went away'));
    let principal: Principal | null = null;
    if (need !== 'public') {
      principal = await access.authenticate(tokenOf(xAuthToken, authorization));
      access.require(principal, deps.projectId(), need, `${method} ${pattern.replace(/:(\w+)/g, '{$1}')} (${NEED_TEXT[need]})`);
    }
    return handler({ params, contentType, body, principal });
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
