// Upstream of the proxy-path benchmark (SPEC §14: infergate's proxy vs nginx, one keep-alive
// upstream). One bare uWebSockets.js process serves both the nginx_proxy and infergate_proxy
// scenarios, so the two proxies are measured against the very same server.
// Any POST: reads the whole body (copying it out of uWS's transient buffers, as a real model
// server must) and answers a constant small JSON. Any GET (the gateway's health check on
// /health): 200 {"status":"ok"}. It parses nothing and runs nothing: what is measured is the proxy.
//
// Usage: node dist/bench/servers/upstream-uws.js <port>   (or PORT=<port>)
// Prints `listening <port>` on stdout when ready.
import uWS from 'uWebSockets.js';

const port = Number(process.argv[2] ?? process.env.PORT ?? 9003);
if (!Number.isInteger(port) || port <= 0 || port > 65535) {
  console.error(`upstream-uws: bad port ${String(process.argv[2] ?? process.env.PORT)}`);
  process.exit(2);
}

// The constant answer to every POST; bench/run.ts (UPSTREAM_ANSWER) checks that each proxy
// passes it through unchanged, so keep the two in step.
const ANSWER = '{"result":[{"predict":1}]}';
const ANSWER_BYTES = Buffer.from(ANSWER);
const HEALTHY = Buffer.from('{"status":"ok"}');

const app = uWS
  .App()
  .post('/*', (res) => {
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
        res.writeStatus('200 OK').writeHeader('content-type', 'application/json').end(ANSWER_BYTES);
      });
    });
  })
  .get('/*', (res) => {
    // Synchronous answer inside the handler: uWS corks it already.
    res.writeStatus('200 OK').writeHeader('content-type', 'application/json').end(HEALTHY);
  });

app.listen('127.0.0.1', port, (token) => {
  if (!token) {
    console.error(`upstream-uws: could not listen on 127.0.0.1:${port}`);
    process.exit(1);
  }
  console.log(`listening ${port}`);
});

const stop = (): void => {
  app.close();
  process.exit(0);
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
