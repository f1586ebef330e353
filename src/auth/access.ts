import { GatewayError } from '../errors.js';
import { roleAllows, type Capability, type Identity } from './identity.js';
import type { Principal, TokenService } from './tokens.js';

const NO_TOKEN = 'no token: send X-Auth-Token: <token> or Authorization: Bearer <token> (POST /v1/auth/tokens issues one)';

/** The token a request carries: X-Auth-Token, or Authorization: Bearer. */
export function tokenOf(xAuthToken: string, authorization: string): string | null {
  if (xAuthToken) return xAuthToken.trim();
  if (!authorization) return null;
  const m = /^Bearer\s+(\S+)\s*$/i.exec(authorization);
  if (!m) throw new GatewayError(401, 'Unauthorized', `the Authorization header must be 'Bearer <token>'`);
  return m[1]!;
}

/** Authentication (who) and authorization (may they, in this project) for both planes. */
export class Access {
  constructor(readonly tokens: TokenService, readonly identity: Identity) {}

  authenticate(token: string | null): Principal | Promise<Principal> {
    if (!token) throw new GatewayError(401, 'Unauthorized', NO_TOKEN);
    return this.tokens.authenticate(token);
  }

  /** 403 unless the principal's role in the project allows `cap`. */
  require(p: Principal, projectId: string, cap: Capability, what: string): void {
    const role = this.identity.roleIn(projectId, p.userId);
    if (roleAllows(role, cap)) return;
    const project = this.identity.project(projectId).name;
    throw new GatewayError(403, 'Forbidden', role
      ? `user '${p.username}' is ${role} in project '${project}', which does not allow ${what}`
      : `user '${p.username}' has no role in project '${project}', so may not ${what}`);
  }

  can(p: Principal, projectId: string, cap: Capability): boolean {
    return roleAllows(this.identity.roleIn(projectId, p.userId), cap);
  }
}
