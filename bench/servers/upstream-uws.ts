// Upstream of the proxy-path benchmark (SPEC §14: infergate's proxy vs nginx, one keep-alive
// upstream). One bare uWebSockets.js process serves both the nginx_proxy and infergate_proxy
// scenarios, so the two proxies are measured against the very same server.
// Any POST: reads the whole body (copying it out of uWS's transient buffers, as a real model
// server must) and answers a constant small JSON. Any GET (the gateway's health check on
// /health): 200 {"status":"ok"}. It parses nothing and runs nothing: what is measured is the proxy.
//
// Usage: node dist/bench/servers/upstream-uws.js <port>   (or PORT=<port>)
// Prints `listening <port>` on stdout when ready.
import { portArg, serveConstant } from './constant.js';

// The constant answer to every POST; bench/run.ts (UPSTREAM_ANSWER) checks that each proxy
// passes it through unchanged, so keep the two in step.
const ANSWER = '{"result":[{"predict":1}]}';
const HEALTHY = Buffer.from('{"status":"ok"}');

serveConstant({
  name: 'upstream-uws',
  port: portArg('upstream-uws', 9003),
  contentType: 'application/json',
  answer: Buffer.from(ANSWER),
  routes: (app) =>
    app.get('/*', (res) => {
      // Synchronous answer inside the handler: uWS corks it already.
      res.writeStatus('200 OK').writeHeader('content-type', 'application/json').end(HEALTHY);
    }),
});
