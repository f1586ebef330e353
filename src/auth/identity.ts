import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { GatewayError, notFound } from '../errors.js';
import type { Db } from '../store/db.js';
import { hashPassword } from './passwords.js';

export type Role = 'admin' | 'developer' | 'viewer' | 'invoker';
export type Capability = 'read' | 'write' | 'infer' | 'admin';

export const ROLES: readonly Role[] = ['admin', 'developer', 'viewer', 'invoker'];

/** What each role may do (SPEC §3): viewers read, invokers only infer, developers deploy. */
const CAPABILITIES: Record<Role, ReadonlySet<Capability>> = {
  admin: new Set(['read', 'write', 'infer', 'admin']),
  developer: new Set(['read', 'write', 'infer']),
  viewer: new Set(['read']),
  invoker: new Set(['infer']),
};

export const roleAllows = (role: Role | undefined, cap: Capability): boolean => role !== undefined && CAPABILITIES[role].has(cap);

export interface UserRow { id: string; username: string; password_hash: string | null; domain: string; active: number; created_at: number }

export const keyHash = (key: string): string => createHash('sha256').update(key).digest('hex');

const USERNAME = /^[A-Za-z0-9_.@-]{1,64}$/;

/**
 * Users, projects, memberships and API keys. Who is active and who holds which role are kept
 * in memory too, so checking a request costs no store access, and a deactivation takes effect
 * on the next request.
 */
export class Identity {
  private readonly active = new Map<string, boolean>();
  /** projectId → userId → role */
  private readonly roles = new Map<string, Map<string, Role>>();
  /** Admins of this project administer the whole gateway (the first start makes `admin` one). */
  readonly defaultProjectId: string;

  constructor(private readonly db: Db) {
    this.defaultProjectId = (db.prepare("SELECT id FROM projects WHERE name = 'default'").get() as { id: string } | undefined)?.id ?? '';
    for (const u of db.prepare('SELECT id, active FROM users').all() as { id: string; active: number }[]) this.active.set(u.id, u.active === 1);
    for (const m of db.prepare('SELECT project_id, user_id, role FROM members').all() as { project_id: string; user_id: string; role: Role }[]) this.setRoleInMemory(m.project_id, m.user_id, m.role);
  }

  isActive(userId: string): boolean {
    return this.active.get(userId) === true;
  }

  /** A user's role in a project; platform admins (admins of `default`) are admins everywhere. */
  roleIn(projectId: string, userId: string): Role | undefined {
    return this.roles.get(projectId)?.get(userId) ?? (this.isPlatformAdmin(userId) ? 'admin' : undefined);
  }

  isPlatformAdmin(userId: string): boolean {
    return this.roles.get(this.defaultProjectId)?.get(userId) === 'admin';
  }

  /** The projects where a user's role allows `cap`; null for platform admins (every project). */
  projectsAllowing(userId: string, cap: Capability): Set<string> | null {
    if (this.isPlatformAdmin(userId)) return null;
    const out = new Set<string>();
    for (const [projectId, members] of this.roles) if (roleAllows(members.get(userId), cap)) out.add(projectId);
    return out;
  }

  /** Does the user hold any role in the project (else the project's resources are not theirs to see). */
  isMember(projectId: string, userId: string): boolean {
    return this.roleIn(projectId, userId) !== undefined;
  }

  projectsOf(userId: string): { id: string; name: string; role: Role }[] {
    return (this.db.prepare('SELECT p.id, p.name, m.role FROM members m JOIN projects p ON p.id = m.project_id WHERE m.user_id = ? ORDER BY p.created_at').all(userId) as { id: string; name: string; role: Role }[]);
  }

  user(id: string): UserRow {
    const u = this.db.prepare('SELECT * FROM users WHERE id = ?').get(id) as UserRow | undefined;
    if (!u) {
      // Names and ids are both short strings: a name given where the id goes is the likely slip.
      const named = this.userByName(id);
      throw notFound(`user '${id}' does not exist${named ? `; '${id}' is a user's name, and this takes the user's id (as POST /v1/users answered it)` : ''}`, 'UserNotFound');
    }
    return u;
  }

  userByName(username: string): UserRow | undefined {
    return this.db.prepare('SELECT * FROM users WHERE username = ?').get(username) as UserRow | undefined;
  }

  users(): { id: string; username: string; domain: string; active: boolean; created_at: string }[] {
    return (this.db.prepare('SELECT * FROM users ORDER BY created_at').all() as UserRow[]).map((u) => ({ id: u.id, username: u.username, domain: u.domain, active: u.active === 1, created_at: new Date(u.created_at).toISOString() }));
  }

  async createUser(username: unknown, password: unknown, domain: unknown): Promise<{ id: string; username: string }> {
    if (typeof username !== 'string' || !USERNAME.test(username)) throw new GatewayError(400, 'BadSpec', `'username' must be 1–64 of A-Za-z0-9_.@-`);
    if (password !== undefined && (typeof password !== 'string' || password.length < 8)) {
      throw new GatewayError(400, 'BadSpec', `'password' must be a string of at least 8 characters (or left out for a user who signs in through the identity provider or API keys)`);
    }
    if (domain !== undefined && (typeof domain !== 'string' || domain === '')) throw new GatewayError(400, 'BadSpec', `'domain' must be a non-empty string`);
    if (this.userByName(username)) throw new GatewayError(409, 'NameTaken', `a user named '${username}' already exists`);
    const id = randomUUID();
    const hash = typeof password === 'string' ? await hashPassword(password) : null;
    this.db.prepare('INSERT INTO users (id, username, password_hash, domain, active, created_at) VALUES (?, ?, ?, ?, 1, ?)').run(id, username, hash, (domain as string | undefined) ?? username, Date.now());
    this.active.set(id, true);
    return { id, username };
  }

  setActive(userId: string, active: boolean): void {
    this.user(userId);
    if (!active) this.keepAnAdmin(userId, 'deactivated');
    this.db.prepare('UPDATE users SET active = ? WHERE id = ?').run(active ? 1 : 0, userId);
    this.active.set(userId, active);
  }

  project(key: string): { id: string; name: string } {
    const p = (this.db.prepare('SELECT id, name FROM projects WHERE id = ?').get(key) ?? this.db.prepare('SELECT id, name FROM projects WHERE name = ?').get(key)) as { id: string; name: string } | undefined;
    if (!p) throw notFound(`project '${key}' does not exist`, 'ProjectNotFound');
    return p;
  }

  projects(): { id: string; name: string }[] {
    return this.db.prepare('SELECT id, name FROM projects ORDER BY created_at').all() as { id: string; name: string }[];
  }

  createProject(name: unknown): { id: string; name: string } {
    if (typeof name !== 'string' || !/^[A-Za-z0-9_-]{1,64}$/.test(name)) throw new GatewayError(400, 'BadSpec', `'name' must be 1–64 of A-Za-z0-9_-`);
    if (this.db.prepare('SELECT 1 FROM projects WHERE name = ?').get(name)) throw new GatewayError(409, 'NameTaken', `a project named '${name}' already exists`);
    const p = { id: randomUUID(), name };
    this.db.prepare('INSERT INTO projects (id, name, created_at) VALUES (?, ?, ?)').run(p.id, p.name, Date.now());
    return p;
  }

  setMember(projectId: string, userId: unknown, role: unknown): void {
    if (typeof userId !== 'string') throw new GatewayError(400, 'BadSpec', `'user_id' must be a user id`);
    if (typeof role !== 'string' || !ROLES.includes(role as Role)) throw new GatewayError(400, 'BadSpec', `'role' must be one of ${ROLES.join(', ')}`);
    this.user(userId);
    if (projectId === this.defaultProjectId && role !== 'admin') this.keepAnAdmin(userId, `made ${role as string}`);
    this.db.prepare('INSERT INTO members (project_id, user_id, role) VALUES (?, ?, ?) ON CONFLICT (project_id, user_id) DO UPDATE SET role = excluded.role').run(projectId, userId, role);
    this.setRoleInMemory(projectId, userId, role as Role);
  }

  removeMember(projectId: string, userId: string): void {
    if (projectId === this.defaultProjectId) this.keepAnAdmin(userId, 'removed from the project');
    this.db.prepare('DELETE FROM members WHERE project_id = ? AND user_id = ?').run(projectId, userId);
    this.roles.get(projectId)?.delete(userId);
  }

  /** Refuses a change that would leave no active platform admin: nobody could manage users or undo it. */
  private keepAnAdmin(userId: string, change: string): void {
    const admins = this.db.prepare("SELECT u.id FROM members m JOIN users u ON u.id = m.user_id WHERE m.project_id = ? AND m.role = 'admin' AND u.active = 1").all(this.defaultProjectId) as { id: string }[];
    if (admins.length === 1 && admins[0]!.id === userId) {
      throw new GatewayError(409, 'LastAdmin', `user '${this.user(userId).username}' is the last active platform admin (admin of 'default') and cannot be ${change}; make another user admin of 'default' first`);
    }
  }

  /** A new API key; only its hash is stored, so it is shown this once. */
  createApiKey(userId: string): { id: string; api_key: string } {
    this.user(userId);
    const key = `igk_${randomBytes(32).toString('base64url')}`;
    const id = randomUUID();
    this.db.prepare('INSERT INTO api_keys (id, user_id, key_hash, created_at) VALUES (?, ?, ?, ?)').run(id, userId, keyHash(key), Date.now());
    return { id, api_key: key };
  }

  revokeApiKey(userId: string, keyId: string): void {
    const r = this.db.prepare('UPDATE api_keys SET revoked = 1 WHERE id = ? AND user_id = ?').run(keyId, userId);
    if (r.changes === 0) throw notFound(`user '${userId}' has no API key '${keyId}'`, 'KeyNotFound');
  }

  userForApiKey(key: string): UserRow | undefined {
    const row = this.db.prepare('SELECT user_id FROM api_keys WHERE key_hash = ? AND revoked = 0').get(keyHash(key)) as { user_id: string } | undefined;
    return row ? (this.db.prepare('SELECT * FROM users WHERE id = ?').get(row.user_id) as UserRow) : undefined;
  }

  private setRoleInMemory(projectId: string, userId: string, role: Role): void {
    let m = this.roles.get(projectId);
    if (!m) this.roles.set(projectId, (m = new Map()));
    m.set(userId, role);
  }
}
