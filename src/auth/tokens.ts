import { randomUUID, timingSafeEqual } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { exportJWK, generateKeyPair, importJWK, jwtVerify, SignJWT, type JWK, type JWTPayload, type KeyObject } from 'jose';
import { LRUCache } from 'lru-cache';
import { GatewayError } from '../errors.js';
import type { Db } from '../store/db.js';
import { checkPassword } from './passwords.js';
import type { ExternalIssuer } from './external.js';
import type { Identity, UserRow } from './identity.js';

/** Who a verified token speaks for. */
export interface Principal {
  userId: string;
  username: string;
  domain: string;
}

export interface TokenResponse {
  access_token: string;
  token_type: 'Bearer';
  expires_in: number;
  refresh_token: string;
}

const ISSUER = 'infergate';
const ALG = 'EdDSA';
const ACCESS_TTL_S = 3600;
const REFRESH_TTL_S = 7 * 24 * 3600;

const unauthorized = (msg: string): GatewayError => new GatewayError(401, 'Unauthorized', msg);

interface Cached { principal: Principal; expMs: number }

/**
 * The gateway's own tokens: EdDSA JWTs signed with a key kept in the data dir. Verified tokens
 * are cached until they expire, so a request with a known token costs a map lookup, not a
 * signature check; a deactivated user is refused at the next request all the same.
 */
export class TokenService {
  private readonly cache = new LRUCache<string, Cached>({ max: 50_000 });

  private constructor(
    private readonly db: Db,
    private readonly identity: Identity,
    private readonly privateKey: KeyObject | Uint8Array,
    private readonly publicKey: KeyObject | Uint8Array,
    private readonly preset: { token: Buffer; principal: Principal } | null,
    private readonly external: ExternalIssuer | null,
  ) {}

  static async open(db: Db, identity: Identity, dataDir: string, presetToken: string | undefined, admin: UserRow, external: ExternalIssuer | null = null): Promise<TokenService> {
    const file = path.join(dataDir, 'signing-key.jwk.json');
    let jwk: JWK;
    if (existsSync(file)) {
      jwk = JSON.parse(readFileSync(file, 'utf8')) as JWK;
    } else {
      const { privateKey } = await generateKeyPair(ALG, { crv: 'Ed25519', extractable: true });
      jwk = { ...(await exportJWK(privateKey)), alg: ALG, kid: randomUUID() };
      writeFileSync(file, JSON.stringify(jwk), { mode: 0o600 });
    }
    const privateKey = await importJWK(jwk, ALG);
    const { d: _d, ...pub } = jwk;
    const publicKey = await importJWK(pub, ALG);
    const preset = presetToken ? { token: Buffer.from(presetToken), principal: principalOf(admin) } : null;
    return new TokenService(db, identity, privateKey as KeyObject, publicKey as KeyObject, preset, external);
  }

  async issue(user: UserRow): Promise<TokenResponse> {
    const now = Math.floor(Date.now() / 1000);
    const claims = { name: user.username, dom: user.domain };
    const access = await new SignJWT({ ...claims, typ: 'access' }).setProtectedHeader({ alg: ALG }).setIssuer(ISSUER).setSubject(user.id)
      .setIssuedAt(now).setExpirationTime(now + ACCESS_TTL_S).setJti(randomUUID()).sign(this.privateKey);
    const jti = randomUUID();
    this.db.prepare('INSERT INTO refresh_tokens (id, user_id, expires_at) VALUES (?, ?, ?)').run(jti, user.id, (now + REFRESH_TTL_S) * 1000);
    const refresh = await new SignJWT({ typ: 'refresh' }).setProtectedHeader({ alg: ALG }).setIssuer(ISSUER).setSubject(user.id)
      .setIssuedAt(now).setExpirationTime(now + REFRESH_TTL_S).setJti(jti).sign(this.privateKey);
    return { access_token: access, token_type: 'Bearer', expires_in: ACCESS_TTL_S, refresh_token: refresh };
  }

  /** POST /v1/auth/tokens: a password, an API key (as IBM IAM exchanges them) or a refresh token. */
  async exchange(body: Record<string, unknown>): Promise<TokenResponse> {
    let user: UserRow | undefined;
    if (typeof body['username'] === 'string' || body['password'] !== undefined) {
      // What is missing is the caller's mistake to hear about; which of a given pair is wrong is not.
      for (const [k, other] of [['username', 'password'], ['password', 'username']] as const) {
        if (typeof body[k] !== 'string') throw new GatewayError(400, 'BadSpec', `'${k}' ${body[k] === undefined ? 'is missing' : 'must be a string'}: send "${k}" with "${other}"`);
      }
      user = this.identity.userByName(body['username'] as string);
      const ok = await checkPassword(body['password'] as string, user?.password_hash ?? null);
      if (!user || !ok) throw unauthorized('wrong username or password');
    } else if (typeof body['api_key'] === 'string') {
      user = this.identity.userForApiKey(body['api_key']);
      if (!user) throw unauthorized('unknown or revoked API key');
    } else if (typeof body['refresh_token'] === 'string') {
      const claims = await this.verifyJwt(body['refresh_token']);
      if (claims['typ'] !== 'refresh') throw unauthorized('not a refresh token');
      const row = this.db.prepare('SELECT revoked FROM refresh_tokens WHERE id = ?').get(claims.jti ?? '') as { revoked: number } | undefined;
      if (!row || row.revoked) throw unauthorized('the refresh token was revoked or already used');
      this.db.prepare('UPDATE refresh_tokens SET revoked = 1 WHERE id = ?').run(claims.jti);
      user = this.db.prepare('SELECT * FROM users WHERE id = ?').get(claims.sub) as UserRow | undefined;
      if (!user) throw unauthorized('the token names a user that does not exist');
    } else {
      throw new GatewayError(400, 'BadSpec', `send {"username", "password"}, {"api_key"} or {"refresh_token"}`);
    }
    if (!this.identity.isActive(user.id)) throw unauthorized(`user '${user.username}' is deactivated`);
    return this.issue(user);
  }

  /** The principal behind a token, from the cache when it was verified before. */
  authenticate(token: string): Principal | Promise<Principal> {
    const hit = this.cache.get(token);
    if (hit && hit.expMs > Date.now()) return this.stillActive(hit.principal);
    if (this.preset && token.length === this.preset.token.length && timingSafeEqual(Buffer.from(token), this.preset.token)) {
      return this.stillActive(this.preset.principal);
    }
    return this.verifyAccess(token);
  }

  private async verifyAccess(token: string): Promise<Principal> {
    const iss = issuerOf(token);
    if (iss !== ISSUER && iss !== undefined) {
      if (this.external?.claims(token)) return this.verifyExternal(token, this.external);
      throw unauthorized(`the token's issuer '${iss}' is not trusted here`);
    }
    const claims = await this.verifyJwt(token);
    if (claims['typ'] !== 'access') throw unauthorized('not an access token (a refresh token is exchanged at POST /v1/auth/tokens)');
    const user = this.db.prepare('SELECT * FROM users WHERE id = ?').get(claims.sub) as UserRow | undefined;
    if (!user) throw unauthorized('the token names a user that does not exist');
    const principal = principalOf(user);
    this.cache.set(token, { principal, expMs: (claims.exp ?? 0) * 1000 });
    return this.stillActive(principal);
  }

  /**
   * An identity provider's token speaks for the local user of the same name (its
   * preferred_username): roles, projects and deactivation are the gateway's, sign-in is the IdP's.
   */
  private async verifyExternal(token: string, external: ExternalIssuer): Promise<Principal> {
    let claims: JWTPayload;
    try {
      claims = await external.verify(token);
    } catch (err) {
      throw unauthorized(describeJoseError(err));
    }
    const name = external.username(claims);
    if (!name) throw unauthorized(`the identity provider's token names no user (no ${external.cfg.username_claim ?? 'preferred_username or sub'} claim)`);
    const user = this.identity.userByName(name);
    if (!user) throw unauthorized(`the identity provider's user '${name}' has no account here; an admin creates it (POST /v1/users)`);
    const principal = principalOf(user);
    this.cache.set(token, { principal, expMs: (claims.exp ?? Math.floor(Date.now() / 1000) + 300) * 1000 });
    return this.stillActive(principal);
  }

  private stillActive(p: Principal): Principal {
    if (!this.identity.isActive(p.userId)) throw unauthorized(`user '${p.username}' is deactivated`);
    return p;
  }

  private async verifyJwt(token: string): Promise<JWTPayload> {
    try {
      const { payload } = await jwtVerify(token, this.publicKey, { algorithms: [ALG], issuer: ISSUER });
      return payload;
    } catch (err) {
      throw unauthorized(describeJoseError(err));
    }
  }
}

/** The unverified `iss` (only to pick the verifier; the chosen one checks it again). */
function issuerOf(token: string): string | undefined {
  try {
    const iss = (JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString('utf8')) as JWTPayload).iss;
    return typeof iss === 'string' ? iss : undefined;
  } catch {
    return undefined;
  }
}

function principalOf(u: UserRow): Principal {
  return { userId: u.id, username: u.username, domain: u.domain };
}

/** jose's refusal, said plainly (never echoing the token). */
export function describeJoseError(err: unknown): string {
  const code = (err as { code?: string }).code;
  const claim = (err as { claim?: string }).claim;
  switch (code) {
    case 'ERR_JWT_EXPIRED': return 'the token has expired';
    case 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED': return 'the token signature does not verify';
    case 'ERR_JOSE_ALG_NOT_ALLOWED': return 'the token is signed with an algorithm the gateway does not accept';
    case 'ERR_JWT_CLAIM_VALIDATION_FAILED':
      if (claim === 'nbf') return 'the token is not valid yet (nbf)';
      if (claim === 'iss') return 'the token has the wrong issuer';
      if (claim === 'aud') return 'the token has the wrong audience';
      return `the token's '${claim}' claim is not acceptable`;
    case 'ERR_JWKS_NO_MATCHING_KEY': return 'no key of the identity provider matches the token';
    case 'ERR_JWS_INVALID':
    case 'ERR_JWT_INVALID':
    default: return 'the token is malformed (expected a signed JWT)';
  }
}
