/** The CLI's view of a running gateway: its management and inference API over HTTP. */
export class ApiError extends Error {
  constructor(readonly status: number, readonly code: string, message: string) {
    super(message);
  }
}

export class GatewayClient {
  constructor(readonly baseUrl: string, private readonly token?: string | undefined) {}

  async request(method: string, path: string, body?: unknown, extra: Record<string, string> = {}): Promise<any> {
    const headers = this.token ? { 'x-auth-token': this.token, ...extra } : extra;
    let res: Response;
    try {
      res = await fetch(this.baseUrl + path, {
        method,
        headers: body === undefined || body instanceof FormData ? headers : { 'content-type': 'application/json', ...headers },
        body: body === undefined ? undefined : body instanceof FormData || typeof body === 'string' ? body : JSON.stringify(body),
      });
    } catch (err) {
      throw new ApiError(0, 'Unreachable', `cannot reach the gateway at ${this.baseUrl} (${(err as Error & { cause?: Error }).cause?.message ?? (err as Error).message}); is \`infergate serve\` running? (--url / INFERGATE_URL)`);
    }
    const text = await res.text();
    let json: any = undefined;
    try {
      json = text ? JSON.parse(text) : undefined;
    } catch {
      json = undefined;
    }
    if (!res.ok) throw new ApiError(res.status, json?.error_code ?? String(res.status), json?.error_msg ?? (text || res.statusText));
    return json ?? text;
  }
}
