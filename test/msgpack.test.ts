import assert from 'node:assert/strict';
import { pack, Packr, unpack } from 'msgpackr';
import { after, before, describe, test } from 'node:test';
import { IRIS_FEATURES, WML_FIELDS, WML_VALUES, fraudRow, prng } from './helpers/direct.js';
import { post, postJson, startGateway, type RunningGateway } from './helpers/gateway.js';
import { bytesAsElements } from '../src/codecs/values.js';

/** msgpack bodies (SPEC §5.2): every JSON shape, typed arrays and raw bytes as tensor data, answers in the request's encoding unless Accept says otherwise. */

const MSGPACK = 'application/msgpack';
/** What a plain msgpack library (Python's msgpack, say) writes: no msgpackr record extension. */
const plain = new Packr({ useRecords: false });

interface Binary { status: number; contentType: string; bytes: Buffer }

async function postBinary(url: string, body: Uint8Array, contentType: string, headers: Record<string, string> = {}): Promise<Binary> {
  const res = await fetch(url, { method: 'POST', body, headers: { 'content-type': contentType, ...headers } });
  return { status: res.status, contentType: res.headers.get('content-type') ?? '', bytes: Buffer.from(await res.arrayBuffer()) };
}

/** A pandas-records answer without what differs from call to call. */
const stable = (records: { time: number; metadata: { elapsed: unknown } }[]) =>
  records.map(({ time, metadata, ...rest }) => ({ ...rest, metadata: { ...metadata, elapsed: null }, time: typeof time }));

describe('msgpack bodies and answers', () => {
  let gw: RunningGateway;
  const fraud = Array.from({ length: 5 }, ((r) => () => fraudRow(r))(prng(11)));
  const irisRows = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]];
  before(async () => {
    gw = await startGateway();
  });
  after(async () => {
    await gw.stop();
  });

  test('each JSON shape sent as msgpack is answered in msgpack with the JSON answer\'s values', async () => {
    const cases: [string, unknown][] = [
      [`${gw.url}/v1/infers/iris`, { meta: { uuid: 'm-1' }, data: { req_data: irisRows.map((r) => Object.fromEntries(IRIS_FEATURES.map((f, i) => [f, r[i]]))) } }],
      [`${gw.url}/ml/v4/deployments/credit-risk/predictions`, { input_data: [{ fields: WML_FIELDS, values: WML_VALUES }] }],
      [`${gw.url}/v2/models/ccfraud/infer`, { id: 'v2-1', inputs: [{ name: 'tensor', shape: [fraud.length, 29], datatype: 'FP32', data: fraud.flat() }] }],
    ];
    for (const [url, body] of cases) {
      const a = await postBinary(url, plain.pack(body), MSGPACK);
      assert.equal(a.status, 200, a.bytes.toString());
      assert.equal(a.contentType, MSGPACK);
      const json = await postJson(url, body);
      assert.deepEqual(unpack(a.bytes), json.json, url);
    }
    const records = fraud.map((tensor) => ({ tensor }));
    const a = await postBinary(`${gw.url}/v1/infers/ccfraud`, plain.pack(records), 'application/x-msgpack');
    assert.equal(a.status, 200);
    const json = await postJson(`${gw.url}/v1/infers/ccfraud`, records, 'application/json; format=pandas-records');
    assert.deepEqual(stable(unpack(a.bytes)), stable(json.json));
  });

  test('typed arrays (msgpackr) and raw little-endian bytes (a bin) are tensor data', async () => {
    const want = (await postJson(`${gw.url}/v2/models/ccfraud/infer`, { inputs: [{ name: 'tensor', shape: [fraud.length, 29], datatype: 'FP32', data: fraud.flat() }] })).json.outputs;
    const f32 = Float32Array.from(fraud.flat());
    // msgpackr's typed-array extension
    const typed = await postBinary(`${gw.url}/v2/models/ccfraud/infer`, pack({ inputs: [{ name: 'tensor', shape: [fraud.length, 29], datatype: 'FP32', data: f32 }] }), MSGPACK);
    assert.equal(typed.status, 200, typed.bytes.toString());
    assert.deepEqual(unpack(typed.bytes).outputs, want);
    // numpy's tobytes() in a bin, as a Python client sends it
    const bin = await postBinary(`${gw.url}/v2/models/ccfraud/infer`, plain.pack({ inputs: [{ name: 'tensor', shape: [fraud.length, 29], datatype: 'FP32', data: Buffer.from(f32.buffer) }] }), MSGPACK);
    assert.equal(bin.status, 200, bin.bytes.toString());
    assert.deepEqual(unpack(bin.bytes).outputs, want);
    // a record's tensor row as raw bytes
    const rows = fraud.map((r) => ({ tensor: Buffer.from(Float32Array.from(r).buffer) }));
    const rec = await postBinary(`${gw.url}/v1/infers/ccfraud`, plain.pack(rows), MSGPACK);
    assert.equal(rec.status, 200, rec.bytes.toString());
    const answer = unpack(rec.bytes) as { out: { dense_1: number[] }; in: { tensor: Uint8Array } }[];
    assert.deepEqual(answer.map((r) => r.out.dense_1[0]), want[0].data);
    // the input is echoed as it came: the same bytes
    assert.deepEqual(Buffer.from(answer[0]!.in.tensor), rows[0]!.tensor);
  });

  test('Accept picks the answer\'s encoding either way', async () => {
    const body = { inputs: [{ name: 'tensor', shape: [1, 29], datatype: 'FP32', data: fraud[0] }] };
    const asJson = await post(`${gw.url}/v2/models/ccfraud/infer`, plain.pack(body), MSGPACK, { accept: 'application/json' });
    assert.equal(asJson.status, 200);
    assert.equal(asJson.headers.get('content-type'), 'application/json');
    const asMsgpack = await postBinary(`${gw.url}/v2/models/ccfraud/infer`, Buffer.from(JSON.stringify(body)), 'application/json', { accept: 'text/html;q=0.9, application/msgpack' });
    assert.equal(asMsgpack.contentType, MSGPACK);
    assert.deepEqual(unpack(asMsgpack.bytes), asJson.json);
    // Accept naming nothing the gateway writes: the request's own encoding, not a refusal.
    const other = await post(`${gw.url}/v2/models/ccfraud/infer`, JSON.stringify(body), 'application/json', { accept: 'text/html' });
    assert.equal(other.status, 200);
    assert.equal(other.headers.get('content-type'), 'application/json');
  });

  test('malformed msgpack is refused with 400 naming what is wrong, and the gateway keeps serving', async () => {
    const bad: [string, Uint8Array, string, RegExp][] = [
      ['truncated map', plain.pack({ inputs: [1, 2, 3] }).subarray(0, 5), 'IG.400.BadMsgpack', /not valid msgpack: it ends in the middle of a value \(truncated\)/],
      ['two values back to back', Buffer.concat([plain.pack([{ tensor: fraud[0] }]), plain.pack(1)]), 'IG.400.BadMsgpack', /not valid msgpack: bytes follow its first value .*; send exactly one msgpack value/],
      ['a map keyed by a map', Uint8Array.from([0x81, 0x80, 0x01]), 'IG.400.BadMsgpack', /not valid msgpack: a map has a key that is a map or an array; map keys must be strings/],
      ['empty body', new Uint8Array(0), 'IG.400.Empty', /body is empty; send a msgpack-encoded/],
      ['a bare number', plain.pack(42), 'IG.400.WrongShape', /expected a msgpack map or an array of records, got a number/],
      ['a map of unknown keys', plain.pack({ foo: 1 }), 'IG.400.UnknownShape', /unrecognised request shape \(keys 'foo'\)/],
      ['bytes that are not a whole row', plain.pack([{ tensor: Buffer.alloc(29 * 4 - 2) }]), 'IG.400.WrongShape', /record 0, field 'tensor': expected 29 float32 values \(116 bytes\) at depth 1, got 114 bytes/],
      ['v2 bytes of the wrong size', plain.pack({ inputs: [{ name: 'tensor', shape: [2, 29], datatype: 'FP32', data: Buffer.alloc(29 * 4) }] }), 'IG.400.WrongShape', /'data' holds 116 bytes but shape \[2,29\] of FP32 needs 232 \(58 × 4\)/],
      ['a string where floats go', plain.pack([{ tensor: 'abc' }]), 'IG.400.WrongShape', /record 0, field 'tensor': expected an array of 29 at depth 1, got the string "abc"/],
    ];
    for (const [what, body, code, msg] of bad) {
      const a = await post(`${gw.url}/v1/infers/ccfraud`, body, MSGPACK);
      assert.equal(a.status, 400, `${what}: ${a.text}`);
      assert.equal(a.json.error_code, code, what);
      assert.match(a.json.error_msg, msg, what);
    }
    const ok = await postBinary(`${gw.url}/v1/infers/ccfraud`, plain.pack([{ tensor: fraud[0] }]), MSGPACK);
    assert.equal(ok.status, 200);
  });

  test('msgpack cannot make a value that contains itself or nests without end', async () => {
    // msgpackr's structured-clone extension can write an array holding itself in a few bytes.
    const cyclic: unknown[] = [];
    cyclic.push(cyclic);
    const bodies: [string, Uint8Array, string, RegExp][] = [
      ['an array holding itself', new Packr({ structuredClone: true }).pack({ inputs: [{ name: 'tensor', shape: [1, 29], datatype: 'FP32', data: cyclic }] }), 'IG.400.BadMsgpack', /not valid msgpack/],
      ['arrays 40 deep', plain.pack({ inputs: [{ name: 'tensor', shape: [1, 29], datatype: 'FP32', data: Array.from({ length: 40 }).reduce<unknown>((v) => [v], 1) }] }), 'IG.400.WrongShape', /nested more than 32 arrays deep/],
    ];
    for (const [what, body, code, msg] of bodies) {
      const a = await post(`${gw.url}/v2/models/ccfraud/infer`, body, MSGPACK);
      assert.equal(a.status, 400, `${what}: ${a.text}`);
      assert.equal(a.json.error_code, code, what);
      assert.match(a.json.error_msg, msg, what);
    }
    assert.equal((await postBinary(`${gw.url}/v1/infers/ccfraud`, plain.pack([{ tensor: fraud[1] }]), MSGPACK)).status, 200);
  });
});

describe('raw bytes as tensor data', () => {
  test('one byte per element: int8 reads two\'s complement, uint8 the values; wider types need whole elements', () => {
    const bytes = Buffer.from([0x01, 0xff, 0x80, 0x7f]);
    assert.deepEqual(Array.from(bytesAsElements(bytes, 'int8', 4) as Int8Array), [1, -1, -128, 127]);
    assert.equal(bytesAsElements(bytes, 'uint8', 4), null, 'uint8 bytes are the values as they are');
    assert.deepEqual(Array.from(bytesAsElements(Buffer.from(Float32Array.from([1.5, -2]).buffer), 'float32', 2) as Float32Array), [1.5, -2]);
    assert.equal(bytesAsElements(bytes, 'float32', 2), null, '4 bytes are not 2 floats');
  });
});
