import type { HttpRequest, HttpResponse } from 'uWebSockets.js';
import { GatewayError } from '../errors.js';
import { newRequestId } from './request-id.js';

const REASONS: Record<number, string> = {
  200: 'OK', 201: 'Created', 202: 'Accepted', 204: 'No Content', 400: 'Bad Request', 401: 'Unauthorized', 403: 'Forbidden',
  404: 'Not Found', 405: 'Method Not Allowed', 406: 'Not Acceptable', 408: 'Request Timeout', 409: 'Conflict', 410: 'Gone',
  411: 'Length Required', 413: 'Payload Too Large', 415: 'Unsupported Media Type', 422: 'Unprocessable Content', 426: 'Upgrade Required',
  429: 'Too Many Requests', 500: 'Internal Server Error', 501: 'Not Implemented', 502: 'Bad Gateway', 503: 'Service Unavailable', 504: 'Gateway Timeout',
};
const STATUS_LINES = new Map<number, string>(Object.entries(REASONS).map(([k, v]) => [Number(k), `${k} ${v}`]));

/** `<code> <reason>`; a code without a known reason keeps the space the status line requires (RFC 9112 §4). */
export const statusLine = (status: number): string => STATUS_LINES.get(status) ?? `${status} `;

export interface Reply {
  status: number;
  contentType: string;
  body: string | Uint8Array;
  headers?: Record<string, string> | undefined;
  /** Close the connection after replying (a body we refused to read is still arriving). */
  close?: boolean;
}

/**
 * Writes a whole reply in one corked batch; the caller guarantees `res` is still valid. The status
 * line and the headers go in one native call (each call converts its strings to UTF-8): uWebSockets.js
 * writes `HTTP/1.1 <status>\r\n` verbatim, so the header lines ride along. None can carry a stray
 * CR or LF: the values are the gateway's own, and a client's request id passed uWebSockets.js' parser.
 */
export function writeReply(res: HttpResponse, reply: Reply, requestId: string, modelVersion: string | null, headOnly = false): void {
  let head = `${statusLine(reply.status)}\r\nContent-Type: ${reply.contentType}\r\nX-Request-Id: ${requestId}`;
  if (modelVersion) head += `\r\nX-Model-Version: ${modelVersion}`;
  if (reply.headers) for (const k in reply.headers) head += `\r\n${k}: ${reply.headers[k]!}`;
  // A HEAD answer says how long the body would be and sends none: a body would be read as the
  // next answer. (This uWebSockets.js' endWithoutBody leaves the response open when given any
  // argument, so the length goes in the head; a HEAD has no body left unread to close for.)
  if (headOnly) head += `\r\nContent-Length: ${typeof reply.body === 'string' ? Buffer.byteLength(reply.body) : reply.body.byteLength}`;
  res.cork(() => {
    res.writeStatus(head);
    if (headOnly) res.endWithoutBody();
    else res.end(reply.body, reply.close === true);
  });
}

/** uWebSockets.js gives the method in lower case. */
export const isHead = (method: string): boolean => method === 'head';

export function errorReply(err: GatewayError, close = false): Reply {
  return { status: err.status, contentType: 'application/json', body: JSON.stringify(err.toJSON()), headers: err.headers, close };
}

export function jsonReply(status: number, value: unknown): Reply {
  return { status, contentType: 'application/json', body: JSON.stringify(value) };
}

/**
 * A path that takes POST and a WebSocket upgrade: a GET or HEAD without the upgrade gets 426 with
 * `Upgrade: websocket` (RFC 9110 §15.5.22), since GET is a method the path takes; any other
 * method gets 405. `where` names the path in the message.
 */
export function upgradeOrPost(res: HttpResponse, req: HttpRequest, where: string): void {
  // Not req.getMethod(): it lowercases the method in uWebSockets.js' buffer, for the message too.
  const sent = req.getCaseSensitiveMethod();
  if (sent !== 'GET' && sent !== 'HEAD') return methodNotAllowed(res, req, 'GET, POST', 'POST, or GET with Upgrade: websocket', where);
  const err = new GatewayError(426, 'UpgradeRequired', `${sent} on ${where} opens a WebSocket: send Upgrade: websocket, or POST the request`, { Upgrade: 'websocket', Connection: 'Upgrade' });
  writeReply(res, errorReply(err), req.getHeader('x-request-id') || newRequestId(), null, sent === 'HEAD');
}

/** 405 naming the methods the path takes (in `Allow`) and, in the message, how to use them (`use`: the methods by default). */
export function methodNotAllowed(res: HttpResponse, req: HttpRequest, allow: string, use = allow, where = req.getUrl()): void {
  const err = new GatewayError(405, 'MethodNotAllowed', `${req.getCaseSensitiveMethod()} is not allowed on ${where}; use ${use}`, { Allow: allow });
  writeReply(res, errorReply(err), req.getHeader('x-request-id') || newRequestId(), null, isHead(req.getMethod()));
}
