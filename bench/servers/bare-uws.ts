// Bare uWebSockets.js server: the ceiling of the ONNX-path benchmark (SPEC §14).
// It reads the whole POST body (copying it out of uWS's transient buffers, as any real server
// must) and answers a constant pandas-records-shaped JSON. It parses nothing and runs nothing.
//
// Usage: node dist/bench/servers/bare-uws.js <port>   (or PORT=<port>)
// Prints `listening <port>` on stdout when ready.
import uWS from 'uWebSockets.js';

const port = Number(process.argv[2] ?? process.env.PORT ?? 9001);
if (!Number.isInteger(port) || port <= 0 || port > 65535) {
  console.error(`bare-uws: bad port ${String(process.argv[2] ?? process.env.PORT)}`);
  process.exit(2);
}

const ANSWER = Buffer.from('[{"out":{"dense_1":[0.5]}}]');

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
      res.writeStatus('200 OK').writeHeader('content-type', 'application/json').end(ANSWER);
    });
  });
});

app.listen('127.0.0.1', port, (token) => {
  if (!token) {
    console.error(`bare-uws: could not listen on 127.0.0.1:${port}`);
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
