// Bare uWebSockets.js for the Arrow path: the transport ceiling of 10k-row tables. It reads the
// whole POST body (copying it out of uWS's transient buffers, as any real server must) and answers
// a constant Arrow stream shaped and sized like infergate's answer to the bench's table (time,
// in.tensor of 10,000 × 29 float32, out.dense_1, check_failures), so both move the same bytes
// each way. It parses nothing and runs nothing.
//
// Usage: node dist/bench/servers/bare-uws-arrow.js <port> [rows]   (rows default 10000)
// Prints `listening <port>` on stdout when ready.
import { Field, FixedSizeList, Float32, List, Null, Table, TimestampMillisecond, makeData, makeVector, tableToIPC } from 'apache-arrow';
import { serveConstant } from './constant.js';

const port = Number(process.argv[2] ?? process.env.PORT ?? 9005);
const rows = Number(process.argv[3] ?? 10_000);
if (!Number.isInteger(port) || port <= 0 || port > 65535 || !Number.isInteger(rows) || rows <= 0) {
  console.error(`bare-uws-arrow: usage: bare-uws-arrow.js <port> [rows]`);
  process.exit(2);
}

const list = (width: number, values: Float32Array) =>
  makeVector(makeData({ type: new FixedSizeList(width, new Field('item', new Float32(), true)), length: rows, child: makeData({ type: new Float32(), length: values.length, data: values }) }));
const ANSWER = tableToIPC(new Table({
  time: makeVector(makeData({ type: new TimestampMillisecond(), length: rows, data: new BigInt64Array(rows).fill(BigInt(Date.now())) })),
  'in.tensor': list(29, new Float32Array(rows * 29).fill(0.5)),
  'out.dense_1': list(1, new Float32Array(rows).fill(0.5)),
  check_failures: makeVector(makeData({ type: new List(new Field('item', new Null(), true)), length: rows, valueOffsets: new Int32Array(rows + 1), child: makeData({ type: new Null(), length: 0 }) })),
}), 'stream');

serveConstant({ name: 'bare-uws-arrow', port, contentType: 'application/vnd.apache.arrow.stream', answer: ANSWER });
