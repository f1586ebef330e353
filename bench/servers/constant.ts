// The bare uWebSockets.js server the bench's ceilings and upstream are made of: it reads the whole
// POST body (copying it out of uWS's transient buffers, as any real server must) and answers a
// constant. It parses nothing and runs nothing. Prints `listening <port>` on stdout when ready;
// stops on SIGTERM or SIGINT.
import uWS from 'uWebSockets.js';

/** The port from argv[2] (or PORT), exiting with a message when it is not one. */
export function portArg(name: string, fallback: number): number {
  const port = Number(process.argv[2] ?? process.env.PORT ?? fallback);
  if (!Number.isInteger(port) || port <= 0 || port > 65535) {
    console.error(`${name}: bad port ${String(process.argv[2] ?? process.env.PORT)}`);
    process.exit(2);
  }
  return port;
}

export interface ConstantServer {
  name: string;
  port: number;
  contentType: string;
  /** The answer to every POST. */
  answer: Uint8Array;
  /** Other routes (the upstream's GET /health). */
  routes?: (app: uWS.TemplatedApp) => void;
}

export function serveConstant(s: ConstantServer): void {
  const app = uWS.App().post('/*', (res) => {
    let aborted = false;
    const chunks: Buffer[] = [];
    res.onAborted(() => {
      aborted = true;
    });
    res.onData((chunk, isLast) => {
      // The ArrayBuffer is only valid inside this callback: copy it.
      chunks.push(Buffer.from(new Uint8Array(chunk)));
      if (!isLast || aborted) return;
      const body = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
      void body; // read, deliberately not parsed
      res.cork(() => {
        res.writeStatus('200 OK').writeHeader('content-type', s.contentType).end(s.answer);
      });
    });
  });
  s.routes?.(app);
  app.listen('127.0.0.1', s.port, (token) => {
    if (!token) {
      console.error(`${s.name}: could not listen on 127.0.0.1:${s.port}`);
      process.exit(1);
    }
    console.log(`listening ${s.port}`);
  });
  const stop = (): void => {
    app.close();
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}
