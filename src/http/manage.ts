import uWS from 'uWebSockets.js';
import type { HttpRequest, HttpResponse, TemplatedApp } from 'uWebSockets.js';
import type { ServiceManager } from '../control/lifecycle.js';
import type { ModelRegistry } from '../control/models.js';
import { PackageError } from '../control/packages.js';
import { asGatewayError, GatewayError, notFound } from '../errors.js';
import { parseJsonObject, readBody } from './body.js';
import { routeParam } from './params.js';
import { newRequestId } from './request-id.js';
import { errorReply, isHead, jsonReply, methodNotAllowed, writeReply, type Reply } from './respond.js';
import { Access, tokenOf } from '../auth/access.js';
import { roleAllows, type Capability } from '../auth/identity.js';
import type { Principal } from '../auth/tokens.js';
import { checkLogAccept, parseLogQuery } from '../telemetry/inference-log.js';
import { loadArrowLog } from '../codecs/arrow-lazy.js';
import { CONTENT_TYPES } from '../codecs/media.js';
import type { Endpoint } from '../runtime/image/runner.js';

export interface ManagementDeps {
  models: ModelRegistry;
  services: ServiceManager;
  access: Access;
  maxUploadBytes: number;
  logError: (err: unknown) => void;
  /** The high-speed listeners of an ONNX service (SPEC §5.6). */
  directEndpoints: (serviceId: string) => Endpoint[];
}

interface Call {
  params: string[];
  /** A query-string parameter, percent-decoded ('' when absent). */
  query: (name: string) => string;
  /** `?project=` (id or name): picks the project where a name is used in several, filters lists. */
  projectQuery: string;
  contentType: string;
  accept: string;
  body: Buffer | null;
  /** Null only on the public route (token issue). */
  principal: Principal | null;
  /** The project the call acts in (model, service and project routes). */
  projectId: string;
  /** The service the path names, resolved to its id (service routes). */
  serviceId: string;
  /** The projects whose resources a list shows; null: all (platform admins). */
  visible: ReadonlySet<string> | null;
  /** Create routes: the project named in the body (or the caller's first where they may write), checked. */
  projectFor: (key: unknown) => string;
}

type Handler = (call: Call) => Promise<Reply> | Reply;
type Method = 'get' | 'post' | 'patch' | 'del';
/** What a route needs in the project it acts on ('public': no token, e.g. POST /v1/auth/tokens). */
type Need = Capability | 'public';
/**
 * Where a route acts, which decides the project its need is checked in:
 * `platform` the gateway itself (admins of `default`); `list` every project the caller may read;
 * `create` the project its body names; `model`/`service` the project of the one the path names;
 * `project` the project the path names.
 */
type Scope = 'public' | 'platform' | 'list' | 'create' | 'model' | 'service' | 'project';

const JSON_LIMIT = 1024 * 1024;

/** The management API (SPEC §6): models and services, JSON in and out, errors in the §5.4 shape. */
export function registerManagement(app: TemplatedApp, deps: ManagementDeps): void {
  const { models, services, access } = deps;
  /** The methods each path takes: any other is answered 405 naming them. */
  const allowed = new Map<string, string[]>();
  const route = (method: Method, pattern: string, need: Need, scope: Scope, handler: Handler, body: 'none' | 'json' | 'upload' = 'none'): void => {
    const limit = body === 'none' ? -1 : body === 'json' ? JSON_LIMIT : deps.maxUploadBytes;
    const serveIt = (res: HttpResponse, req: HttpRequest): void => serve(res, req, { pattern, need, scope, handler, bodyLimit: limit }, deps);
    app[method](pattern, serveIt);
    if (method === 'get') app.head(pattern, serveIt);
    const methods = allowed.get(pattern) ?? [];
    allowed.set(pattern, [...methods, ...(method === 'get' ? ['GET', 'HEAD'] : [method === 'del' ? 'DELETE' : method.toUpperCase()])]);
  };
  const json = (status: number, v: unknown): Reply => jsonReply(status, v);

  const noContent: Reply = { status: 204, contentType: 'application/json', body: '' };
  const { identity, tokens } = access;

  route('post', '/v1/auth/tokens', 'public', 'public', async (c) => json(200, await tokens.exchange(parseJsonObject(c.body!, 'POST /v1/auth/tokens'))), 'json');

  route('post', '/v1/models', 'write', 'create', async (c) => json(201, await importModel(c, deps)), 'upload');
  route('get', '/v1/models', 'read', 'list', (c) => json(200, { models: models.list(c.visible) }));
  route('get', '/v1/models/:name', 'read', 'model', (c) => json(200, models.get(c.projectId, c.params[0]!)));
  route('del', '/v1/models/:name', 'write', 'model', async (c) => {
    await models.deleteModel(c.projectId, c.params[0]!);
    return noContent;
  });
  route('get', '/v1/models/:name/events', 'read', 'model', (c) => json(200, { events: models.events(c.projectId, c.params[0]!) }));
  route('get', '/v1/models/:name/versions/:version', 'read', 'model', (c) => json(200, models.getVersion(c.projectId, c.params[0]!, c.params[1]!)));
  route('del', '/v1/models/:name/versions/:version', 'write', 'model', async (c) => {
    await models.deleteVersion(c.projectId, c.params[0]!, c.params[1]!);
    return noContent;
  });

  route('post', '/v1/services', 'write', 'create', (c) => {
    const body = parseJsonObject(c.body!, 'POST /v1/services');
    return json(202, services.create(body, c.projectFor(body['project'])));
  }, 'json');
  route('get', '/v1/services', 'read', 'list', (c) => json(200, { services: services.list(c.visible) }));
  route('get', '/v1/services/:id', 'read', 'service', (c) => json(200, services.get(c.serviceId)));
  route('patch', '/v1/services/:id', 'write', 'service', (c) => {
    const body = parseJsonObject(c.body!, 'PATCH /v1/services');
    if (body['project'] !== undefined && c.projectFor(body['project']) !== c.projectId) {
      throw new GatewayError(400, 'BadSpec', `a service cannot move to another project ('project' must stay '${identity.project(c.projectId).name}')`);
    }
    return json(202, services.update(c.serviceId, body));
  }, 'json');
  route('del', '/v1/services/:id', 'write', 'service', (c) => {
    services.remove(c.serviceId);
    return json(202, { id: c.serviceId, status: 'deleting' });
  });
  route('post', '/v1/services/:id/start', 'write', 'service', (c) => json(202, services.start(c.serviceId)));
  route('post', '/v1/services/:id/stop', 'write', 'service', (c) => json(202, services.stop(c.serviceId)));
  route('post', '/v1/services/:id/restart', 'write', 'service', (c) => json(202, services.restart(c.serviceId)));
  route('get', '/v1/services/:id/events', 'read', 'service', (c) => json(200, { events: services.eventsOf(c.serviceId) }));
  route('post', '/v1/services/:id/logs', 'read', 'service', async (c) => {
    const format = checkLogAccept(c.accept);
    const text = c.body!.length ? c.body! : Buffer.from('{}');
    const page = await services.logOf(c.serviceId).query(parseLogQuery(parseJsonObject(text, 'POST /v1/services/{id}/logs')));
    const headers: Record<string, string> = { 'x-iteration-status': page.status };
    if (page.cursor !== null) headers['x-iteration-cursor'] = page.cursor;
    if (format !== 'json') return { status: 200, contentType: CONTENT_TYPES[format], body: (await loadArrowLog()).logPageArrow(page.body, format), headers };
    return { status: 200, contentType: 'application/json; format=pandas-records', body: page.body, headers };
  }, 'json');

  route('get', '/v1/services/:id/predict/endpoints', 'read', 'service', (c) => {
    const type = c.query('type');
    if (type && type !== 'host_endpoints') throw new GatewayError(400, 'BadQuery', `type must be 'host_endpoints' (the only kind of endpoint served), got '${type}'`);
    const view = services.get(c.serviceId);
    if (!view.high_speed) throw new GatewayError(409, 'HighSpeedOff', `service '${view.name}' does not have the high-speed channel; PATCH it with {"high_speed": true}`);
    const live = services.imageEndpoints(c.serviceId);
    return json(200, { endpoints: live.length ? live : deps.directEndpoints(c.serviceId) });
  });
  route('get', '/v1/services/:id/monitor', 'read', 'service', (c) => json(200, services.monitor(c.serviceId)));
  route('get', '/v1/services/:id/instances', 'read', 'service', (c) => json(200, { instances: services.instances(c.serviceId) }));
  route('get', '/v1/services/:id/instances/:instance/logs', 'read', 'service', (c) => ({
    status: 200, contentType: 'text/plain; charset=utf-8', body: services.instanceLogs(c.serviceId, c.params[1]!, c.query('version')),
  }));

  // Users and projects are the platform admins'; a project's admins manage its members.
  route('post', '/v1/users', 'admin', 'platform', async (c) => {
    const b = parseJsonObject(c.body!, 'POST /v1/users', ['username', 'password', 'domain']);
    return json(201, await identity.createUser(b['username'], b['password'], b['domain']));
  }, 'json');
  route('get', '/v1/users', 'admin', 'platform', () => json(200, { users: identity.users() }));
  route('post', '/v1/users/:id/deactivate', 'admin', 'platform', (c) => {
    identity.setActive(c.params[0]!, false);
    return json(200, { id: c.params[0], active: false });
  });
  route('post', '/v1/users/:id/activate', 'admin', 'platform', (c) => {
    identity.setActive(c.params[0]!, true);
    return json(200, { id: c.params[0], active: true });
  });
  route('post', '/v1/users/:id/api-keys', 'admin', 'platform', (c) => json(201, identity.createApiKey(c.params[0]!)));
  route('del', '/v1/users/:id/api-keys/:key', 'admin', 'platform', (c) => {
    identity.revokeApiKey(c.params[0]!, c.params[1]!);
    return noContent;
  });
  route('post', '/v1/projects', 'admin', 'platform', (c) => json(201, identity.createProject(parseJsonObject(c.body!, 'POST /v1/projects', ['name'])['name'])), 'json');
  route('get', '/v1/projects', 'read', 'list', (c) => json(200, { projects: identity.projects().filter((p) => c.visible === null || c.visible.has(p.id)) }));
  route('post', '/v1/projects/:id/members', 'admin', 'project', (c) => {
    const b = parseJsonObject(c.body!, 'POST /v1/projects/{id}/members', ['user_id', 'role']);
    identity.setMember(c.projectId, b['user_id'], b['role']);
    return json(200, { project_id: c.projectId, user_id: b['user_id'], role: b['role'] });
  }, 'json');
  route('del', '/v1/projects/:id/members/:user', 'admin', 'project', (c) => {
    identity.removeMember(c.projectId, c.params[1]!);
    return noContent;
  });
  for (const [pattern, methods] of allowed) app.any(pattern, (res, req) => methodNotAllowed(res, req, methods.join(', ')));
}

const NEED_TEXT: Record<Capability, string> = { read: 'reading it', write: 'changing it', infer: 'inference', admin: 'administering users and projects' };

interface RouteDef {
  pattern: string;
  need: Need;
  scope: Scope;
  handler: Handler;
  bodyLimit: number;
}

function serve(res: HttpResponse, req: HttpRequest, r: RouteDef, deps: ManagementDeps): void {
  const { logError, access } = deps;
  const requestId = req.getHeader('x-request-id') || newRequestId();
  const xAuthToken = req.getHeader('x-auth-token');
  const authorization = req.getHeader('authorization');
  const method = req.getMethod().toUpperCase();
  const head = isHead(req.getMethod());
  const paramCount = (r.pattern.match(/:/g) ?? []).length;
  const params = Array.from({ length: paramCount }, (_, i) => routeParam(req, i));
  const projectQuery = queryParam(req, 'project');
  const rawQuery = req.getQuery() ?? '';
  const contentType = req.getHeader('content-type');
  const accept = req.getHeader('accept');
  const aborted = { value: false };
  const answer = async (): Promise<Reply> => {
    // The body is read first either way, so a refusal never leaves it unread on the connection.
    const body = r.bodyLimit >= 0 ? await readBody(res, r.bodyLimit, aborted) : null;
    if (aborted.value) return errorReply(new GatewayError(400, 'Aborted', 'client went away'));
    const call: Call = { params, query: (name) => new URLSearchParams(rawQuery).get(name) ?? '', projectQuery, contentType, accept, body, principal: null, projectId: '', serviceId: '', visible: null, projectFor: noProject };
    if (r.need !== 'public') {
      const principal = await access.authenticate(tokenOf(xAuthToken, authorization));
      call.principal = principal;
      new Scoper(deps, principal, `${method} ${r.pattern.replace(/:(\w+)/g, '{$1}')}`, r.need).apply(r.scope, call);
    }
    return r.handler(call);
  };
  if (r.bodyLimit < 0) res.onAborted(() => (aborted.value = true));
  answer().then(
    (reply) => {
      if (!aborted.value) writeReply(res, reply, requestId, null, head);
    },
    (err: unknown) => {
      const gerr = err instanceof PackageError ? new GatewayError(400, 'BadPackage', err.message) : asGatewayError(err);
      if (gerr.status === 500) logError(err);
      if (!aborted.value) writeReply(res, errorReply(gerr), requestId, null, head);
    },
  );
}

const noProject = (): string => {
  throw new Error('projectFor is only set on create routes');
};

/**
 * Resolves the project a call acts in and checks the caller's role there. A resource in a
 * project where the caller has no role is answered as absent (404), so names do not leak across
 * tenants; a member whose role is too weak gets 403 saying which role they hold.
 */
class Scoper {
  private readonly identity: Access['identity'];

  constructor(private readonly deps: ManagementDeps, private readonly p: Principal, private readonly action: string, private readonly need: Capability) {
    this.identity = deps.access.identity;
  }

  apply(scope: Scope, call: Call): void {
    const { identity, p } = this;
    call.projectFor = (key) => this.createIn(key);
    switch (scope) {
      case 'platform':
        return this.require(identity.defaultProjectId);
      case 'list': {
        if (call.projectQuery) {
          call.projectId = this.memberProject(call.projectQuery);
          this.require(call.projectId);
          call.visible = new Set([call.projectId]);
        } else {
          call.visible = identity.projectsAllowing(p.userId, this.need);
          // Nothing to show is a refusal that says why, not an empty list.
          if (call.visible?.size === 0) this.require(identity.projectsOf(p.userId)[0]?.id ?? identity.defaultProjectId);
        }
        return;
      }
      case 'create':
        return;
      case 'project':
        call.projectId = this.memberProject(call.params[0]!);
        return this.require(call.projectId);
      case 'model': {
        const name = call.params[0]!;
        call.projectId = this.one(this.deps.models.projectsWith(name), call.projectQuery, `model '${name}'`, 'ModelNotFound');
        return this.require(call.projectId);
      }
      case 'service': {
        const key = call.params[0]!;
        const found = this.deps.services.locate(key);
        call.projectId = this.one(found.map((s) => s.projectId), call.projectQuery, `service '${key}'`, 'ServiceNotFound');
        call.serviceId = found.find((s) => s.projectId === call.projectId)!.id;
        return this.require(call.projectId);
      }
      case 'public':
        return;
    }
  }

  private require(projectId: string, what = `${this.action} (${NEED_TEXT[this.need]})`): void {
    this.deps.access.require(this.p, projectId, this.need, what);
  }

  /** A project the caller belongs to, by id or name; others are answered as absent. */
  private memberProject(key: string): string {
    const project = this.identity.project(key);
    if (!this.identity.isMember(project.id, this.p.userId)) throw notFound(`project '${key}' does not exist`, 'ProjectNotFound');
    return project.id;
  }

  /** Of the projects holding a resource, the one this call means: among the caller's, or the one `?project=` names. */
  private one(projectIds: string[], projectQuery: string, what: string, code: string): string {
    let mine = projectIds.filter((id) => this.identity.isMember(id, this.p.userId));
    if (projectQuery) {
      const wanted = this.memberProject(projectQuery);
      mine = mine.filter((id) => id === wanted);
    }
    if (mine.length === 0) throw notFound(`${what} does not exist${projectQuery ? ` in project '${projectQuery}'` : ''}`, code);
    if (mine.length > 1) {
      const names = mine.map((id) => `'${this.identity.project(id).name}'`).join(', ');
      throw new GatewayError(409, 'Ambiguous', `${what} exists in projects ${names}; name one with ?project=<id or name>`);
    }
    return mine[0]!;
  }

  /** The project a create call names (id or name), or the caller's first where their role allows it. */
  private createIn(key: unknown): string {
    if (key !== undefined && (typeof key !== 'string' || key === '')) throw new GatewayError(400, 'BadSpec', `'project' must be a project id or name`);
    if (typeof key === 'string') {
      const projectId = this.memberProject(key);
      this.require(projectId);
      return projectId;
    }
    const mine = this.identity.projectsOf(this.p.userId);
    const projectId = (mine.find((m) => roleAllows(m.role, this.need)) ?? mine[0])?.id ?? this.identity.defaultProjectId;
    this.require(projectId);
    return projectId;
  }
}

/** A query-string parameter, percent-decoded ('' when absent). */
function queryParam(req: HttpRequest, name: string): string {
  return req.getQuery(name) ?? '';
}

/** POST /v1/models: multipart (`metadata` JSON + `file`), or JSON {"name", "version", "source": {"path"}}. */
async function importModel(c: Call, deps: ManagementDeps) {
  const ct = c.contentType.toLowerCase();
  if (ct.startsWith('multipart/form-data')) {
    const parts = uWS.getParts(c.body!, c.contentType);
    if (!parts) throw new GatewayError(400, 'BadMultipart', 'the multipart body could not be parsed (check the boundary in Content-Type)');
    const metaPart = parts.find((p) => p.name === 'metadata');
    const filePart = parts.find((p) => p.name === 'file');
    if (!metaPart) throw new GatewayError(400, 'MissingPart', `the upload needs a 'metadata' part with JSON {"name", "version"?, "description"?, "project"?}`);
    if (!filePart) throw new GatewayError(400, 'MissingPart', `the upload needs a 'file' part: a .onnx model, a .tar.gz or a .zip package`);
    const meta = parseJsonObject(Buffer.from(metaPart.data), `the 'metadata' part`, ['name', 'version', 'description', 'project']);
    const filename = filePart.filename ?? '';
    return deps.models.importUpload(importMeta(meta, c.projectFor(meta['project']), `metadata '`), filename, new Uint8Array(filePart.data));
  }
  if (ct.startsWith('application/json') || ct === '') {
    const body = parseJsonObject(c.body!, 'POST /v1/models', ['name', 'version', 'description', 'project', 'source']);
    const source = body['source'];
    if (typeof source !== 'object' || source === null || typeof (source as Record<string, unknown>)['path'] !== 'string') {
      throw new GatewayError(400, 'BadSpec', `a JSON import needs "source": {"path": "<package folder on the gateway's machine>"}; to upload a file use multipart/form-data`);
    }
    return deps.models.importFolder(importMeta(body, c.projectFor(body['project']), `'`), (source as { path: string }).path);
  }
  throw new GatewayError(415, 'UnsupportedMediaType', `Content-Type '${c.contentType}' is not supported here; send multipart/form-data or application/json`);
}

/** `field`: how messages open a field's name: `metadata '` in an upload's metadata part, `'` in a JSON body. */
function importMeta(meta: Record<string, unknown>, projectId: string, field: string) {
  const { name, version, description } = meta;
  const got = (v: unknown): string => (v === undefined ? 'nothing' : JSON.stringify(v));
  if (typeof name !== 'string') throw new GatewayError(400, 'BadSpec', `${field}name' must be a model name (1–64 of A-Za-z0-9_-), got ${got(name)}`);
  if (version !== undefined && typeof version !== 'string') throw new GatewayError(400, 'BadSpec', `${field}version' must be a string such as "0.0.1", got ${got(version)}`);
  if (description !== undefined && typeof description !== 'string') throw new GatewayError(400, 'BadSpec', `${field}description' must be a string, got ${got(description)}`);
  return { name, version, description, projectId };
}
