/**
 * Errors are values with a status and a stable code (SPEC §5.4). Anything thrown that is not a
 * GatewayError is a bug on our side and is answered as 500 without its text or stack.
 */
export class GatewayError extends Error {
  readonly status: number;
  readonly code: string;
  /** Extra response headers (e.g. Retry-After). */
  readonly headers: Readonly<Record<string, string>> | undefined;

  constructor(status: number, short: string, message: string, headers?: Record<string, string>) {
    super(message);
    this.status = status;
    this.code = `IG.${status}.${short}`;
    this.headers = headers;
  }

  toJSON(): { error_code: string; error_msg: string } {
    return { error_code: this.code, error_msg: this.message };
  }
}

export const badRequest = (message: string, short = 'BadRequest'): GatewayError =>
  new GatewayError(400, short, message);

export const notFound = (message: string, short = 'NotFound'): GatewayError =>
  new GatewayError(404, short, message);

export function asGatewayError(err: unknown): GatewayError {
  if (err instanceof GatewayError) return err;
  return new GatewayError(500, 'Internal', 'internal error while serving the request; see the gateway log');
}
