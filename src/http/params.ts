import type { HttpRequest } from 'uWebSockets.js';

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
