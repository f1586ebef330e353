import { readFileSync } from 'node:fs';
import { createPublicKey, type KeyObject } from 'node:crypto';
import { createLocalJWKSet, createRemoteJWKSet, jwtVerify, type JWK, type JWTPayload, type JWTVerifyGetKey } from 'jose';
import type { ExternalAuth } from '../config/config.js';

/** Asymmetric algorithms only: an HS* token "signed" with a public key must never verify. */
const ALGORITHMS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA'];

/**
 * Tokens of an external identity provider (SPEC §7.1): verified against its JWKS (fetched,
 * cached, re-fetched when a token names a key not seen yet — key rotation) or a key file,
 * with the issuer and audience checked.
 */
export class ExternalIssuer {
  private constructor(readonly cfg: ExternalAuth, private readonly key: JWTVerifyGetKey | KeyObject | Uint8Array) {}

  static async open(cfg: ExternalAuth): Promise<ExternalIssuer | null> {
    if (cfg.jwks_url) {
      return new ExternalIssuer(cfg, createRemoteJWKSet(new URL(cfg.jwks_url), { cooldownDuration: 1000, cacheMaxAge: 10 * 60_000 }));
    }
    if (cfg.key_file) {
      const text = readFileSync(cfg.key_file, 'utf8');
      if (text.includes('-----BEGIN')) return new ExternalIssuer(cfg, createPublicKey(text));
      const json = JSON.parse(text) as JWK | { keys: JWK[] };
      return new ExternalIssuer(cfg, createLocalJWKSet('keys' in json ? json : { keys: [json] }));
    }
    return null;
  }

  /** Is this token for us to check (its unverified issuer is the provider's)? */
  claims(token: string): boolean {
    if (!this.cfg.issuer) return true;
    try {
      const payload = JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString('utf8')) as JWTPayload;
      return payload.iss === this.cfg.issuer;
    } catch {
      return false;
    }
  }

  async verify(token: string): Promise<JWTPayload> {
    const opts = { algorithms: ALGORITHMS, ...(this.cfg.issuer ? { issuer: this.cfg.issuer } : {}), ...(this.cfg.audience ? { audience: this.cfg.audience } : {}) };
    const { payload } = typeof this.key === 'function' ? await jwtVerify(token, this.key, opts) : await jwtVerify(token, this.key, opts);
    return payload;
  }

  username(payload: JWTPayload): string | undefined {
    const claim = this.cfg.username_claim;
    const v = claim ? payload[claim] : (payload['preferred_username'] ?? payload.sub);
    return typeof v === 'string' ? v : undefined;
  }
}
