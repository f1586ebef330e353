import type { HttpRequest } from 'uWebSockets.js';

/** The api path of `/v1/infers/{service}/{api path}` ('/' when there is none), which image instances receive. */
export function apiPathOf(url: string): string {
  const at = url.indexOf('/', '/v1/infers/'.length);
  return at < 0 ? '/' : url.slice(at);
}

/** Route parameter i, percent-decoded; a malformed escape is kept as sent (and then found nowhere). */
export function routeParam(req: HttpRequest, i: number): string {
  const raw = req.getParameter(i) ?? '';
  if (!raw.includes('%')) return raw;
  try {
    return decodeURIComponent(raw);
  } catch {
    return raw;
  }
}
