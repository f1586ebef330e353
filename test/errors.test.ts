import assert from 'node:assert/strict';
import net from 'node:net';
import zlib from 'node:zlib';
import { after, before, describe, test } from 'node:test';
import { IRIS_FEATURES, WML_FIELDS, WML_VALUES, fraudRow, prng } from './helpers/direct.js';
import { ADMIN_TOKEN, post, postJson, request, startGateway, type Answer, type RunningGateway } from './helpers/gateway.js';

/**
 * Malformed and wrong requests (SPEC §5.3, §5.4): every one is refused with the right status, a
 * stable `IG.<status>.<short>` code and a message naming where the problem is and what was
 * expected; none leaks a stack trace, and the gateway keeps serving afterwards.
 */

const PANDAS = 'application/json; format=pandas-records';
const STACK = /at .+\.js:\d+/;

/** Every error body seen, checked once more at the end for stack traces. */
const errorBodies: string[] = [];

function expectError(a: Answer, status: number, code: string, msg: RegExp): void {
  errorBodies.push(a.text);
  assert.equal(a.status, status, `status ${a.status}: ${a.text}`);
  assert.match(a.headers.get('content-type') ?? '', /^application\/json/, 'error bodies are JSON');
  assert.ok(a.json && typeof a.json === 'object', `body is a JSON object: ${a.text}`);
  assert.equal(a.json.error_code, code, a.text);
  assert.equal(typeof a.json.error_msg, 'string');
  assert.match(a.json.error_msg, msg);
  assert.doesNotMatch(a.text, STACK, 'no stack trace in the error body');
}

const irisRow = [5.1, 3.5, 1.4, 0.2];
const irisRecord = (row: number[] = irisRow): Record<string, number> => Object.fromEntries(IRIS_FEATURES.map((f, i) => [f, row[i]!]));
const fraud = fraudRow(prng(11));
const wmlBody = (fields: unknown[] = WML_FIELDS, values: unknown[] = WML_VALUES) => ({ input_data: [{ fields, values }] });
/** The whole credit-risk WML body with one cell replaced. */
function wmlWithCell(row: number, field: string, value: unknown) {
  const values = WML_VALUES.map((r) => [...r] as unknown[]);
  values[row]![WML_FIELDS.indexOf(field)] = value;
  return wmlBody(WML_FIELDS, values);
}
/** A v2 binary-extension body: the JSON header followed by raw bytes. */
function binaryBody(header: unknown, payload: Uint8Array): { body: Uint8Array; headerLength: number } {
  const h = Buffer.from(JSON.stringify(header));
  return { body: Buffer.concat([h, payload]), headerLength: h.length };
}

describe('error responses', () => {
  let gw: RunningGateway;
  let IRIS: string;
  let CCFRAUD: string;
  let WML: string;
  const v2 = (model: string) => `${gw.url}/v2/models/${model}/infer`;

  before(async () => {
    gw = await startGateway();
    IRIS = `${gw.url}/v1/infers/iris`;
    CCFRAUD = `${gw.url}/v1/infers/ccfraud`;
    WML = `${gw.url}/ml/v4/deployments/credit-risk/predictions`;
  });
  after(async () => {
    await gw.stop();
  });

  describe('body: not JSON, or not a known JSON shape', () => {
    test('truncated JSON → 400 BadJson saying the JSON ended early', async () => {
      const a = await post(IRIS, '{"data": {"req_data": [{"sepal_length": 5.1, "sepal_');
      expectError(a, 400, 'IG.400.BadJson', /not valid JSON.*(end of JSON input|Unterminated string|position \d+)/i);
    });

    test('JSON with trailing garbage → 400 BadJson naming the position', async () => {
      const a = await post(IRIS, `${JSON.stringify({ data: { req_data: [irisRecord()] } })} trailing`);
      expectError(a, 400, 'IG.400.BadJson', /not valid JSON.*position \d+/i);
    });

    test('empty body → 400 Empty asking for a JSON inference request', async () => {
      const a = await post(IRIS, '');
      expectError(a, 400, 'IG.400.Empty', /body is empty.*JSON inference request/);
    });

    test('the JSON scalar 42 as the body → 400 WrongShape: expected an object or array, got a number', async () => {
      const a = await post(IRIS, '42');
      expectError(a, 400, 'IG.400.WrongShape', /expected a JSON object or an array of records, got a number/);
    });

    test('the JSON string "x" as the body → 400 WrongShape naming a string', async () => {
      const a = await post(IRIS, '"x"');
      expectError(a, 400, 'IG.400.WrongShape', /expected a JSON object or an array of records, got a string/);
    });

    test('JSON null as the body → 400 WrongShape naming null', async () => {
      const a = await post(IRIS, 'null');
      expectError(a, 400, 'IG.400.WrongShape', /expected a JSON object or an array of records, got null/);
    });

    test('an unrecognised object shape {"foo": 1} → 400 UnknownShape naming the keys and the known shapes', async () => {
      const a = await postJson(IRIS, { foo: 1 });
      expectError(a, 400, 'IG.400.UnknownShape', /unrecognised request shape \(keys 'foo'\).*"data".*"input_data".*"inputs"/);
    });
  });

  describe('ModelArts (iris, named features)', () => {
    test("'data' that is not an object → 400 WrongShape: 'data' must hold 'req_data'", async () => {
      const a = await postJson(IRIS, { data: [irisRecord()] });
      expectError(a, 400, 'IG.400.WrongShape', /'data' must be an object holding 'req_data', got an array/);
    });

    test("'data' a string → 400 WrongShape naming the type", async () => {
      const a = await postJson(IRIS, { data: 'sepal_length=5.1' });
      expectError(a, 400, 'IG.400.WrongShape', /'data' must be an object holding 'req_data', got string/);
    });

    test("'req_data' missing → 400 WrongShape naming data.req_data and an array of records", async () => {
      const a = await postJson(IRIS, { meta: { uuid: 'u' }, data: {} });
      expectError(a, 400, 'IG.400.WrongShape', /'data\.req_data'.*expected an array of records.*got undefined/);
    });

    test("'req_data' an object, not an array → 400 WrongShape naming data.req_data", async () => {
      const a = await postJson(IRIS, { data: { req_data: irisRecord() } });
      expectError(a, 400, 'IG.400.WrongShape', /'data\.req_data'.*expected an array of records \(objects\), got object/);
    });

    test("'req_data' empty → 400 Empty asking for at least one record", async () => {
      const a = await postJson(IRIS, { data: { req_data: [] } });
      expectError(a, 400, 'IG.400.Empty', /'data\.req_data' is empty: send at least one record/);
    });

    test('record 0 an array, not an object → 400 WrongShape naming record 0', async () => {
      const a = await postJson(IRIS, { data: { req_data: [irisRow] } });
      expectError(a, 400, 'IG.400.WrongShape', /record 0: expected an object of fields, got an array/);
    });

    test('record 2 a number, not an object → 400 WrongShape naming record 2', async () => {
      const a = await postJson(IRIS, { data: { req_data: [irisRecord(), irisRecord(), 7] } });
      expectError(a, 400, 'IG.400.WrongShape', /record 2: expected an object of fields, got number 7/);
    });

    test('a record with an unknown field → 400 UnknownField naming it and listing the features', async () => {
      const a = await postJson(IRIS, { data: { req_data: [{ ...irisRecord(), colour: 'blue' }] } });
      expectError(a, 400, 'IG.400.UnknownField', /record 0: unknown field 'colour'; expected .*'sepal_length', 'sepal_width', 'petal_length', 'petal_width'/);
    });

    test('a record with the input and an unknown field → 400 UnknownField naming the unknown one, not the input', async () => {
      const a = await postJson(IRIS, { data: { req_data: [{ input: irisRow, x: 1 }] } });
      expectError(a, 400, 'IG.400.UnknownField', /record 0: unknown field 'x'; expected the model inputs \['input'\] or the features/);
    });

    test('a record missing a feature → 400 MissingInput naming the missing feature', async () => {
      const { petal_width: _, ...three } = irisRecord();
      const a = await postJson(IRIS, { data: { req_data: [three] } });
      expectError(a, 400, 'IG.400.MissingInput', /record 0: missing feature \['petal_width'\]; the model takes \['sepal_length', 'sepal_width', 'petal_length', 'petal_width'\]/);
    });

    test('a string where a number is expected → 400 WrongType naming record 1, the field and "a number"', async () => {
      const a = await postJson(IRIS, { data: { req_data: [irisRecord(), { ...irisRecord(), petal_length: '1.4' }] } });
      expectError(a, 400, 'IG.400.WrongType', /record 1, field 'petal_length': expected a number \(float32\), got the string "1\.4"/);
    });

    test('a record with a different field from record 0 → 400 UnknownField naming record 1 and the field', async () => {
      const { petal_width: _, ...three } = irisRecord();
      const a = await postJson(IRIS, { data: { req_data: [irisRecord(), { ...three, petal_colour: 1 }] } });
      expectError(a, 400, 'IG.400.UnknownField', /record 1: unexpected field 'petal_colour'; record 0 has \['sepal_length', 'sepal_width', 'petal_length', 'petal_width'\]/);
    });

    test('a record with fewer fields than record 0 → 400 MissingInput naming record 1 and the field', async () => {
      const { sepal_width: _, ...three } = irisRecord();
      const a = await postJson(IRIS, { data: { req_data: [irisRecord(), irisRecord(), three] } });
      expectError(a, 400, 'IG.400.MissingInput', /record 2: missing field 'sepal_width' that record 0 has/);
    });

    test('a record whose extra field is named like an Object.prototype member (toString) → 400 naming record 1 and that field', async () => {
      const { petal_width: _, ...three } = irisRecord();
      const a = await postJson(IRIS, { data: { req_data: [irisRecord(), { ...three, toString: 1 }] } });
      expectError(a, 400, 'IG.400.UnknownField', /record 1: unexpected field 'toString'; record 0 has \[/);
    });
  });

  describe('pandas-records (ccfraud, tensor of 29)', () => {
    test('a ragged row (28 numbers for 29) → 400 WrongShape naming record 1, tensor and 29', async () => {
      const a = await postJson(CCFRAUD, [{ tensor: fraud }, { tensor: fraud.slice(1) }], PANDAS);
      expectError(a, 400, 'IG.400.WrongShape', /record 1, field 'tensor': expected 29 elements at depth 1, got 28/);
    });

    test('a row nested one level too deep → 400 WrongType naming the element and "a number"', async () => {
      const a = await postJson(CCFRAUD, [{ tensor: fraud.map((x) => [x]) }], PANDAS);
      expectError(a, 400, 'IG.400.WrongType', /record 0, field 'tensor'\[0\]: expected a number \(float32\), got an array/);
    });

    test('a row that is a bare number, not a list → 400 WrongShape naming the array of 29 expected', async () => {
      const a = await postJson(CCFRAUD, [{ tensor: 0.5 }], PANDAS);
      expectError(a, 400, 'IG.400.WrongShape', /record 0, field 'tensor': expected an array of 29 at depth 1, got number 0\.5/);
    });

    test('a null value → 400 WrongType naming record, field, element index and null', async () => {
      const row: unknown[] = [...fraud];
      row[5] = null;
      const a = await postJson(CCFRAUD, [{ tensor: fraud }, { tensor: row }], PANDAS);
      expectError(a, 400, 'IG.400.WrongType', /record 1, field 'tensor'\[5\]: expected a number \(float32\), got null/);
    });

    test('a boolean value → 400 WrongType naming the element and the boolean', async () => {
      const row: unknown[] = [...fraud];
      row[28] = true;
      const a = await postJson(CCFRAUD, [{ tensor: row }], PANDAS);
      expectError(a, 400, 'IG.400.WrongType', /record 0, field 'tensor'\[28\]: expected a number \(float32\), got boolean true/);
    });

    test('a number out of float range (1e999) → 400 WrongType saying it is out of range', async () => {
      const body = JSON.stringify([{ tensor: fraud }]).replace(/^(\[\{"tensor":\[)[^,]+/, '$11e999');
      const a = await post(CCFRAUD, body, PANDAS);
      expectError(a, 400, 'IG.400.WrongType', /record 0, field 'tensor'\[0\]: expected a number \(float32\), got Infinity \(out of range\)/);
    });

    test('a finite number too large for float32 (1e39) → 400 WrongType, not a silent Infinity', async () => {
      const row = [...fraud];
      row[3] = -1e39;
      const a = await postJson(CCFRAUD, [{ tensor: row }], PANDAS);
      expectError(a, 400, 'IG.400.WrongType', /record 0, field 'tensor'\[3\]: -1e\+39 is out of range for float32 \(at most ±3\.4028235e38; it would become Infinity\)/);
      const named = await postJson(IRIS, { data: { req_data: [{ ...irisRecord(), sepal_length: 1e39 }] } });
      expectError(named, 400, 'IG.400.WrongType', /record 0, field 'sepal_length': 1e\+39 is out of range for float32/);
      const v2flat = await postJson(v2('iris'), { inputs: [{ name: 'input', shape: [1, 4], datatype: 'FP32', data: [1e39, 2, 3, 4] }] });
      expectError(v2flat, 400, 'IG.400.WrongType', /data\[0\]: 1e\+39 is out of range for float32/);
      // The largest float32 itself is taken.
      const max = await postJson(v2('iris'), { inputs: [{ name: 'input', shape: [1, 4], datatype: 'FP32', data: [3.4028234663852886e38, 2, 3, 4] }] });
      assert.equal(max.status, 200, max.text);
    });

    test('a wrong field name → 400 UnknownField naming it and the input the model takes', async () => {
      const a = await postJson(CCFRAUD, [{ tensr: fraud }], PANDAS);
      expectError(a, 400, 'IG.400.UnknownField', /record 0: unknown field 'tensr'; expected the model inputs \['tensor'\]/);
    });

    test('format=pandas-records with an object body → 400 WrongShape: must be an array of records', async () => {
      const a = await postJson(CCFRAUD, { tensor: fraud }, PANDAS);
      expectError(a, 400, 'IG.400.WrongShape', /format=pandas-records, so the body must be an array of records, got an object/);
    });

    test('an empty records array → 400 Empty asking for at least one record', async () => {
      const a = await postJson(CCFRAUD, [], PANDAS);
      expectError(a, 400, 'IG.400.Empty', /records array is empty: send at least one record/);
    });

    test('a plain application/json array of non-objects → 400 WrongShape naming record 0', async () => {
      const a = await postJson(CCFRAUD, [fraud]);
      expectError(a, 400, 'IG.400.WrongShape', /record 0: expected an object of fields, got an array/);
    });
  });

  describe('Watson ML (credit-risk, 20 fields of strings and numbers)', () => {
    test("'input_data' empty → 400 WrongShape asking for a non-empty array of fields/values", async () => {
      const a = await postJson(WML, { input_data: [] });
      expectError(a, 400, 'IG.400.WrongShape', /'input_data' must be a non-empty array of \{"fields", "values"\} objects/);
    });

    test("'input_data' an object, not an array → 400 WrongShape", async () => {
      const a = await postJson(WML, { input_data: { fields: WML_FIELDS, values: WML_VALUES } });
      expectError(a, 400, 'IG.400.WrongShape', /'input_data' must be a non-empty array/);
    });

    test("'input_data[0]' not an object → 400 WrongShape naming input_data[0]", async () => {
      const a = await postJson(WML, { input_data: ['CheckingStatus'] });
      expectError(a, 400, 'IG.400.WrongShape', /'input_data\[0\]' must be an object with "fields" and "values"/);
    });

    test("'fields' that are not strings → 400 WrongShape naming input_data[0].fields", async () => {
      const a = await postJson(WML, wmlBody(WML_FIELDS.map((_, i) => i)));
      expectError(a, 400, 'IG.400.WrongShape', /'input_data\[0\]\.fields' must be a non-empty array of field names \(strings\)/);
    });

    test("'values' not an array → 400 WrongShape naming input_data[0].values", async () => {
      const a = await postJson(WML, { input_data: [{ fields: WML_FIELDS, values: 'no_checking' }] });
      expectError(a, 400, 'IG.400.WrongShape', /'input_data\[0\]\.values' must be an array of rows/);
    });

    test('a values row with the wrong length → 400 WrongShape naming row 1, 20 expected and 19 got', async () => {
      const values = WML_VALUES.map((r) => [...r]);
      values[1]!.pop();
      const a = await postJson(WML, wmlBody(WML_FIELDS, values));
      expectError(a, 400, 'IG.400.WrongShape', /'input_data\[0\]\.values' row 1: expected 20 values \(one per field\), got 19/);
    });

    test('a number where a string is expected (CheckingStatus = 5) → 400 WrongType naming row 2 and the field', async () => {
      const a = await postJson(WML, wmlWithCell(2, 'CheckingStatus', 5));
      expectError(a, 400, 'IG.400.WrongType', /row 2, field 'CheckingStatus': expected a string \(string\), got number 5/);
    });

    test('a string where a number is expected (LoanAmount = "lots") → 400 WrongType naming row 0 and the field', async () => {
      const a = await postJson(WML, wmlWithCell(0, 'LoanAmount', 'lots'));
      expectError(a, 400, 'IG.400.WrongType', /row 0, field 'LoanAmount': expected a number \(float32\), got the string "lots"/);
    });

    test('an unknown field → 400 UnknownField naming it and listing the model inputs', async () => {
      const a = await postJson(WML, wmlBody(WML_FIELDS.map((f) => (f === 'Sex' ? 'Gender' : f))));
      expectError(a, 400, 'IG.400.UnknownField', /unknown field 'Gender'; expected the model inputs \[.*'CheckingStatus'.*'Sex'.*\]/);
    });

    test('a missing field → 400 MissingInput naming the missing input', async () => {
      const a = await postJson(WML, wmlBody(WML_FIELDS.slice(0, 19), WML_VALUES.map((r) => r.slice(0, 19))));
      expectError(a, 400, 'IG.400.MissingInput', /missing input 'ForeignWorker'/);
    });

    test('duplicate fields → 400 DuplicateField naming the repeated field', async () => {
      const a = await postJson(WML, wmlBody(WML_FIELDS.map((f) => (f === 'Age' ? 'Sex' : f))));
      expectError(a, 400, 'IG.400.DuplicateField', /'input_data\[0\]\.fields' repeats .*'Sex'/);
    });

    test("empty 'values' → 400 Empty asking for at least one row", async () => {
      const a = await postJson(WML, wmlBody(WML_FIELDS, []));
      expectError(a, 400, 'IG.400.Empty', /'input_data\[0\]\.values' is empty: send at least one row/);
    });

    test("more than one 'input_data' entry → 400 WrongShape saying one entry per request", async () => {
      const entry = { fields: WML_FIELDS, values: WML_VALUES };
      const a = await postJson(WML, { input_data: [entry, entry] });
      expectError(a, 400, 'IG.400.WrongShape', /'input_data' has 2 entries; send one \{"fields", "values"\} entry per request/);
    });
  });

  describe('Open Inference Protocol v2', () => {
    const irisInput = (over: Record<string, unknown> = {}) => ({ name: 'input', shape: [1, 4], datatype: 'FP32', data: irisRow, ...over });

    test("'inputs' empty → 400 WrongShape asking for a non-empty array", async () => {
      const a = await postJson(v2('iris'), { inputs: [] });
      expectError(a, 400, 'IG.400.WrongShape', /'inputs' must be a non-empty array of \{"name", "shape", "datatype", "data"\}/);
    });

    test('an unknown input name → 400 UnknownInput naming inputs[0], the name and the model inputs', async () => {
      const a = await postJson(v2('iris'), { inputs: [irisInput({ name: 'features' })] });
      expectError(a, 400, 'IG.400.UnknownInput', /inputs\[0\]: unknown input 'features'; the model takes 'input'/);
    });

    test('a wrong datatype (FP64 for an FP32 input) → 400 WrongType naming both', async () => {
      const a = await postJson(v2('iris'), { inputs: [irisInput({ datatype: 'FP64' })] });
      expectError(a, 400, 'IG.400.WrongType', /inputs\[0\] \('input'\): datatype FP64 does not match the model's FP32/);
    });

    test('an unknown datatype → 400 WrongType listing the datatypes', async () => {
      const a = await postJson(v2('iris'), { inputs: [irisInput({ datatype: 'FLOAT' })] });
      expectError(a, 400, 'IG.400.WrongType', /inputs\[0\] \('input'\): unknown datatype "FLOAT"; expected one of BOOL, .*FP32/);
    });

    test('data nested deeper than its shape → 400 WrongShape naming both nestings', async () => {
      const a = await postJson(v2('iris'), { inputs: [irisInput({ data: [[[[6.7, 3.0, 5.2, 2.3]]]] })] });
      expectError(a, 400, 'IG.400.WrongShape', /inputs\[0\] \('input'\): 'data' is nested as \[1,1,1,4\], which is not shape \[1,4\]; send it nested to the shape, or flat with 4 elements/);
    });

    test('a shape not matching the data length → 400 WrongShape naming element counts', async () => {
      const a = await postJson(v2('iris'), { inputs: [irisInput({ shape: [2, 4] })] });
      expectError(a, 400, 'IG.400.WrongShape', /inputs\[0\] \('input'\): 'data' has 4 elements but shape \[2,4\] needs 8/);
    });

    test('a shape not fitting the model ([1,28] for ccfraud) → 400 WrongShape naming both shapes', async () => {
      const a = await postJson(v2('ccfraud'), { inputs: [{ name: 'tensor', shape: [1, 28], datatype: 'FP32', data: fraud.slice(1) }] });
      expectError(a, 400, 'IG.400.WrongShape', /inputs\[0\] \('tensor'\): shape \[1,28\] does not fit the model's \[N,29\]/);
    });

    test('a string in FP32 data → 400 WrongType naming the element', async () => {
      const a = await postJson(v2('iris'), { inputs: [irisInput({ data: [5.1, '3.5', 1.4, 0.2] })] });
      expectError(a, 400, 'IG.400.WrongType', /inputs\[0\] \('input'\) data\[1\]: expected a number \(float32\), got the string "3\.5"/);
    });

    test('an unknown requested output → 400 UnknownOutput naming it and the model outputs', async () => {
      const a = await postJson(v2('iris'), { inputs: [irisInput()], outputs: [{ name: 'probabilities' }, { name: 'label' }] });
      expectError(a, 400, 'IG.400.UnknownOutput', /outputs\[1\]: unknown output 'label'; the model gives 'predictresult', 'probabilities'/);
    });

    test('a missing input (credit-risk given one of 20) → 400 MissingInput naming the missing inputs', async () => {
      const a = await postJson(v2('credit-risk'), { inputs: [{ name: 'CheckingStatus', shape: [1, 1], datatype: 'BYTES', data: ['no_checking'] }] });
      expectError(a, 400, 'IG.400.MissingInput', /missing input 'LoanDuration', 'CreditHistory'.*'ForeignWorker'; the model takes 'CheckingStatus'/);
    });

    test('an input given twice → 400 DuplicateField naming it', async () => {
      const a = await postJson(v2('iris'), { inputs: [irisInput(), irisInput()] });
      expectError(a, 400, 'IG.400.DuplicateField', /inputs\[1\]: input 'input' is given twice/);
    });

    test('Inference-Header-Content-Length larger than the body → 400 naming both lengths', async () => {
      const { body } = binaryBody({ inputs: [irisInput({ data: undefined, parameters: { binary_data_size: 16 } })] }, new Uint8Array(new Float32Array(irisRow).buffer));
      const a = await post(v2('iris'), body, 'application/octet-stream', { 'Inference-Header-Content-Length': String(body.length + 100) });
      expectError(a, 400, 'IG.400.WrongShape', new RegExp(`Inference-Header-Content-Length is ${body.length + 100} but the body has only ${body.length} bytes`));
    });

    test('Inference-Header-Content-Length that is not a number (or not written in digits) → 400 BadHeader', async () => {
      for (const value of ['lots', '1e3', '0x10', '+12']) {
        const a = await post(v2('iris'), JSON.stringify({ inputs: [irisInput()] }), 'application/octet-stream', { 'Inference-Header-Content-Length': value });
        assert.equal(a.status, 400, a.text);
        assert.equal(a.json.error_code, 'IG.400.BadHeader');
        assert.equal(a.json.error_msg, `Inference-Header-Content-Length must be a non-negative integer (digits only), got '${value}'`);
      }
    });

    test('an input with both data and binary_data_size → 400 saying to give one', async () => {
      const { body, headerLength } = binaryBody({ inputs: [irisInput({ parameters: { binary_data_size: 16 } })] }, new Uint8Array(new Float32Array(irisRow).buffer));
      const a = await post(v2('iris'), body, 'application/octet-stream', { 'Inference-Header-Content-Length': String(headerLength) });
      expectError(a, 400, 'IG.400.WrongShape', /inputs\[0\] \('input'\): give its values either in 'data' or in the binary part \('binary_data_size'\), not both/);
    });

    test('outputs: an empty list means every output; one named twice → 400 DuplicateField', async () => {
      const all = await postJson(v2('iris'), { inputs: [irisInput()], outputs: [] });
      assert.equal(all.status, 200, all.text);
      assert.deepEqual(all.json.outputs.map((o: { name: string }) => o.name), (await postJson(v2('iris'), { inputs: [irisInput()] })).json.outputs.map((o: { name: string }) => o.name));
      assert.ok(all.json.outputs.length >= 2);
      const twice = await postJson(v2('iris'), { inputs: [irisInput()], outputs: [{ name: all.json.outputs[0].name }, { name: all.json.outputs[0].name }] });
      expectError(twice, 400, 'IG.400.DuplicateField', new RegExp(`outputs\\[1\\]: output '${all.json.outputs[0].name}' is requested twice`));
    });

    test('binary_data_size running past the body → 400 naming the input and the bytes left', async () => {
      const { body, headerLength } = binaryBody({ inputs: [irisInput({ data: undefined, parameters: { binary_data_size: 64 } })] }, new Uint8Array(new Float32Array(irisRow).buffer));
      const a = await post(v2('iris'), body, 'application/octet-stream', { 'Inference-Header-Content-Length': String(headerLength) });
      expectError(a, 400, 'IG.400.WrongShape', /inputs\[0\] \('input'\): 'binary_data_size' 64 runs past the end of the binary part \(16 bytes left\)/);
    });

    test('a huge batch dimension with 4 values of data → 400 WrongShape naming the shape, not a 500', async () => {
      const a = await postJson(v2('iris'), { inputs: [irisInput({ shape: [2 ** 32, 4] })] });
      expectError(a, 400, 'IG.400.WrongShape', /inputs\[0\] \('input'\).*shape \[4294967296,4\]/);
    });

    test('Inference-Header-Content-Length 0 on a non-empty body → 400 naming the header, not "the body is empty"', async () => {
      const a = await post(v2('iris'), JSON.stringify({ inputs: [irisInput()] }), 'application/octet-stream', { 'Inference-Header-Content-Length': '0' });
      errorBodies.push(a.text);
      assert.equal(a.status, 400, a.text);
      assert.match(a.json.error_code, /^IG\.400\./);
      assert.match(a.json.error_msg, /Inference-Header-Content-Length/);
      assert.doesNotMatch(a.json.error_msg, /body is empty/);
    });

    test('binary_data_size not matching the shape → 400 naming bytes given and needed', async () => {
      const { body, headerLength } = binaryBody({ inputs: [irisInput({ data: undefined, parameters: { binary_data_size: 12 } })] }, new Uint8Array(new Float32Array(irisRow.slice(0, 3)).buffer));
      const a = await post(v2('iris'), body, 'application/octet-stream', { 'Inference-Header-Content-Length': String(headerLength) });
      expectError(a, 400, 'IG.400.WrongShape', /inputs\[0\] \('input'\): binary_data_size is 12 bytes but shape \[1,4\] of FP32 needs 16/);
    });
  });

  describe('transport: routes, methods, media types, sizes', () => {
    test('an unknown service → 404 ServiceNotFound naming it', async () => {
      const a = await postJson(`${gw.url}/v1/infers/no-such-model`, { data: { req_data: [irisRecord()] } });
      expectError(a, 404, 'IG.404.ServiceNotFound', /service 'no-such-model' does not exist/);
    });

    test('an unknown service on the v2 route → 404 ServiceNotFound', async () => {
      const a = await postJson(v2('no-such-model'), { inputs: [] });
      expectError(a, 404, 'IG.404.ServiceNotFound', /service 'no-such-model' does not exist/);
    });

    test('a malformed percent-encoded service name in GET /v2/models/{service} → 404 ServiceNotFound, not a 500', async () => {
      const a = await request(`${gw.url}/v2/models/%E0%A4%A`, {});
      expectError(a, 404, 'IG.404.ServiceNotFound', /service '%E0%A4%A' does not exist/);
    });

    test('an unknown route (/v1/nothing) → 404 RouteNotFound naming method and path', async () => {
      const a = await postJson(`${gw.url}/v1/nothing`, {});
      expectError(a, 404, 'IG.404.RouteNotFound', /no route for POST \/v1\/nothing/);
    });

    test('an unknown v2 version → 404 VersionNotFound naming service and version', async () => {
      const a = await postJson(`${gw.url}/v2/models/iris/versions/9.9.9/infer`, { inputs: [{ name: 'input', shape: [1, 4], datatype: 'FP32', data: irisRow }] });
      expectError(a, 404, 'IG.404.VersionNotFound', /service 'iris' has no version '9\.9\.9'/);
    });

    test('a single value where a row of a shape is expected → 400 WrongShape naming the value', async () => {
      const a = await postJson(`${gw.url}/v1/infers/ocr-direction`, [{ x: 5 }]);
      expectError(a, 400, 'IG.400.WrongShape', /^record 0, field 'x': expected a row of shape \[3,N,N\], got number 5$/);
    });

    test('GET /v1/infers/iris without Upgrade → 426 UpgradeRequired with Upgrade: websocket (GET there opens a WebSocket)', async () => {
      for (const path of ['/v1/infers/iris', '/v1/infers/iris/predict']) {
        const a = await request(`${gw.url}${path}`, {});
        expectError(a, 426, 'IG.426.UpgradeRequired', new RegExp(`^GET on ${path.replace(/\//g, '\\/')} opens a WebSocket: send Upgrade: websocket, or POST the request$`));
        assert.equal(a.headers.get('upgrade'), 'websocket');
        assert.equal(a.headers.get('allow'), null);
      }
    });

    for (const [method, path, allow, use] of [
      ['PUT', '/v1/infers/iris', 'GET, POST', 'POST, or GET with Upgrade: websocket'],
      ['PUT', '/v1/infers/iris/predict', 'GET, POST', 'POST, or GET with Upgrade: websocket'],
      ['DELETE', '/v2/models/iris/infer', 'POST', 'POST'],
      ['GET', '/ml/v4/deployments/iris/predictions', 'POST', 'POST'],
    ] as const) {
      test(`${method} ${path} → 405 MethodNotAllowed with Allow: ${allow}`, async () => {
        const a = await request(`${gw.url}${path}`, method === 'PUT' ? { method, body: '{}', headers: { 'content-type': 'application/json' } } : { method });
        expectError(a, 405, 'IG.405.MethodNotAllowed', new RegExp(`^${method} is not allowed on ${path.replace(/\//g, '\\/')}; use ${use}$`));
        assert.equal(a.headers.get('allow'), allow);
      });
    }

    test('HEAD answers as GET would, without the body; the next answer on the connection is intact', async () => {
      const exchange = (requests: string): Promise<string> => new Promise((resolve, reject) => {
        const sock = net.connect(gw.port, '127.0.0.1');
        let buf = '';
        sock.setEncoding('latin1');
        sock.on('data', (d: string) => (buf += d));
        sock.on('end', () => resolve(buf));
        sock.on('error', reject);
        sock.write(requests);
      });
      for (const path of ['/healthz', '/v2/health/ready', '/v2/models/iris', '/v1/services']) {
        const get = `GET ${path} HTTP/1.1\r\nHost: x\r\nX-Auth-Token: ${ADMIN_TOKEN}\r\n`;
        const raw = await exchange(`${get.replace('GET', 'HEAD')}\r\n${get}Connection: close\r\n\r\n`);
        const split = raw.indexOf('\r\n\r\n');
        const head = raw.slice(0, split);
        assert.match(head, /^HTTP\/1\.1 200 OK\r\n/, raw);
        const length = Number(/\r\ncontent-length: (\d+)/i.exec(head)?.[1]);
        const rest = raw.slice(split + 4);
        assert.match(rest, /^HTTP\/1\.1 200 OK\r\n/, `${path}: the GET's answer follows the HEAD's head at once\n${raw}`);
        assert.equal(Buffer.byteLength(rest.slice(rest.indexOf('\r\n\r\n') + 4), 'latin1'), length, `${path}: HEAD reported the GET body's length`);
      }
      // A refusal to HEAD has no body either.
      const refused = await exchange('HEAD /v1/infers/iris HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
      assert.match(refused, /^HTTP\/1\.1 426 Upgrade Required\r\n[\s\S]*\r\n\r\n$/, refused);
    });

    test('a known path with a method it does not take → 405 naming the methods it does, in Allow too', async () => {
      const live = await request(`${gw.url}/v2/health/live`, { method: 'PUT', body: '{}' });
      expectError(live, 405, 'IG.405.MethodNotAllowed', /PUT is not allowed on \/v2\/health\/live; use GET, HEAD/);
      assert.equal(live.headers.get('allow'), 'GET, HEAD');
      const logs = await request(`${gw.url}/v1/services/iris/logs`, { method: 'GET' });
      expectError(logs, 405, 'IG.405.MethodNotAllowed', /GET is not allowed on \/v1\/services\/iris\/logs; use POST/);
      const services = await request(`${gw.url}/v1/services`, { method: 'PUT', body: '{}' });
      assert.equal(services.headers.get('allow'), 'POST, GET, HEAD');
    });

    test('Content-Encoding gzip, deflate and br are decoded; another is 415, a corrupt body 400, a bomb 413', async () => {
      const body = JSON.stringify({ data: { req_data: [irisRecord()] } });
      const plain = await post(IRIS, body);
      for (const [coding, pack] of [['gzip', zlib.gzipSync], ['deflate', zlib.deflateSync], ['br', zlib.brotliCompressSync]] as const) {
        const a = await post(IRIS, pack(Buffer.from(body)), 'application/json', { 'Content-Encoding': coding });
        assert.equal(a.status, 200, `${coding}: ${a.text}`);
        assert.deepEqual(a.json.data, plain.json.data);
      }
      expectError(await post(IRIS, body, 'application/json', { 'Content-Encoding': 'compress' }), 415, 'IG.415.UnsupportedEncoding', /Content-Encoding 'compress' is not supported; send the body as it is, or gzip, deflate or br/);
      expectError(await post(IRIS, body, 'application/json', { 'Content-Encoding': 'gzip' }), 400, 'IG.400.BadEncoding', /the body is not valid gzip \(Content-Encoding: gzip\): incorrect header check/);
      const bomb = zlib.gzipSync(Buffer.alloc(13 * 1024 * 1024, 32));
      expectError(await post(IRIS, bomb, 'application/json', { 'Content-Encoding': 'gzip' }), 413, 'IG.413.PayloadTooLarge', /the gzip body decodes to over the limit of 12582912 bytes \(limits\.max_body_bytes\)/);
      // Many at once take their turns (a few decode at a time, so their memory is bounded): each is refused, none is lost.
      const brBomb = zlib.brotliCompressSync(Buffer.alloc(13 * 1024 * 1024, 32));
      const many = await Promise.all(Array.from({ length: 24 }, () => post(IRIS, brBomb, 'application/json', { 'Content-Encoding': 'br' })));
      for (const a of many) expectError(a, 413, 'IG.413.PayloadTooLarge', /the br body decodes to over the limit/);
      assert.equal((await post(IRIS, zlib.gzipSync(Buffer.from(body)), 'application/json', { 'Content-Encoding': 'gzip' })).status, 200);
    });

    test('Content-Type text/csv → 415 naming the type and the supported ones', async () => {
      const a = await post(IRIS, 'sepal_length,sepal_width,petal_length,petal_width\n5.1,3.5,1.4,0.2\n', 'text/csv');
      expectError(a, 415, 'IG.415.UnsupportedMediaType', /Content-Type 'text\/csv' is not supported; send application\/json/);
    });

    test("Content-Type application/x-www-form-urlencoded (curl -d's default) → 415 naming the type", async () => {
      const a = await post(IRIS, JSON.stringify({ data: { req_data: [irisRecord()] } }), 'application/x-www-form-urlencoded');
      expectError(a, 415, 'IG.415.UnsupportedMediaType', /Content-Type 'application\/x-www-form-urlencoded' is not supported; send application\/json/);
    });

    describe('a body over limits.max_body_bytes (a second gateway limited to 1024 bytes)', () => {
      let small: RunningGateway;
      let url: string;
      const big = JSON.stringify({ data: { req_data: Array.from({ length: 20 }, () => irisRecord()) } }).padEnd(2048, ' ');
      const chunkedStream = (bytes: Uint8Array) =>
        new ReadableStream<Uint8Array>({
          start(controller) {
            for (let i = 0; i < bytes.length; i += 256) controller.enqueue(bytes.subarray(i, i + 256));
            controller.close();
          },
        });
      before(async () => {
        small = await startGateway({ config: { limits: { max_body_bytes: 1024 } } });
        url = `${small.url}/v1/infers/iris`;
        assert.equal(Buffer.byteLength(big), 2048);
      });
      after(async () => {
        await small.stop();
      });

      test('2 KiB with Content-Length → 413 PayloadTooLarge naming the limit and the setting', async () => {
        const a = await post(url, big);
        expectError(a, 413, 'IG.413.PayloadTooLarge', /request body is over the limit of 1024 bytes \(limits\.max_body_bytes\)/);
      });

      test('2 KiB chunked, no Content-Length (raw socket) → 413 PayloadTooLarge', async () => {
        const chunks: string[] = [];
        for (let i = 0; i < big.length; i += 256) chunks.push(`100\r\n${big.slice(i, i + 256)}\r\n`);
        const wire = `POST /v1/infers/iris HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n${chunks.join('')}0\r\n\r\n`;
        const answers = responses(await rawExchange(small.port, [wire], 1));
        assert.equal(answers.length, 1);
        assert.equal(answers[0]!.status, 413);
        errorBodies.push(answers[0]!.body);
        assert.equal(JSON.parse(answers[0]!.body).error_code, 'IG.413.PayloadTooLarge');
      });

      test('2 KiB streamed by fetch (ReadableStream, duplex half, chunked) → the client receives 413, every time', async () => {
        for (let attempt = 0; attempt < 5; attempt++) {
          let b: Answer;
          try {
            b = await request(url, { method: 'POST', body: chunkedStream(Buffer.from(big)), headers: { 'content-type': 'application/json' }, duplex: 'half' } as RequestInit);
          } catch (err) {
            const cause = (err as { cause?: { code?: string; message?: string } }).cause;
            assert.fail(`attempt ${attempt}: the client got no answer, the connection failed (${cause?.code ?? cause?.message ?? String(err)})`);
          }
          expectError(b, 413, 'IG.413.PayloadTooLarge', /over the limit of 1024 bytes/);
        }
      });

      test('a chunked body under the limit is still served (200)', async () => {
        const body = Buffer.from(JSON.stringify({ data: { req_data: [irisRecord()] } }));
        const a = await request(url, { method: 'POST', body: chunkedStream(body), headers: { 'content-type': 'application/json' }, duplex: 'half' } as RequestInit);
        assert.equal(a.status, 200, a.text);
      });

      test('after the refusals the limited gateway still serves a small request', async () => {
        const c = await postJson(url, { data: { req_data: [irisRecord()] } });
        assert.equal(c.status, 200, c.text);
        assert.equal(c.json.data.resp_data[0].predictresult, 'setosa');
        assert.equal((await fetch(`${small.url}/healthz`)).status, 200);
      });
    });

    describe('pipelined on one keep-alive connection: an early refusal with a 10-byte body, then a good request', () => {
      const good = JSON.stringify({ data: { req_data: [irisRecord()] } });
      const refusedHead = `POST /v1/infers/no-such-model HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 10\r\n\r\n`;
      const goodRequest = `POST /v1/infers/iris HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(good)}\r\n\r\n${good}`;

      const cases: [string, string[]][] = [
        ['both requests in one write', [refusedHead + '0123456789' + goodRequest]],
        ['the refused body split across writes, after the 404 is sent', [refusedHead + '01234', '56789' + goodRequest]],
      ];
      for (const [name, writes] of cases) {
        test(`${name}: 404 then 200, in order, on the same connection`, async () => {
          const received = await rawExchange(gw.port, writes, 2);
          const answers = responses(received);
          assert.equal(answers.length, 2, `two answers on the connection, got:\n${received}`);
          const [first, second] = answers as [RawResponse, RawResponse];
          assert.equal(first.status, 404, received);
          errorBodies.push(first.body);
          const e = JSON.parse(first.body) as { error_code: string; error_msg: string };
          assert.equal(e.error_code, 'IG.404.ServiceNotFound');
          assert.match(e.error_msg, /service 'no-such-model' does not exist/);
          assert.equal(second.status, 200, received);
          assert.equal((JSON.parse(second.body) as { data: { resp_data: { predictresult: string }[] } }).data.resp_data[0]!.predictresult, 'setosa');
        });
      }
    });
  });

  test('no error body carried a stack trace', () => {
    assert.ok(errorBodies.length >= 30, `${errorBodies.length} error bodies collected`);
    for (const body of errorBodies) assert.doesNotMatch(body, STACK, body);
  });

  test('after all of that the gateway still serves every sample model and /healthz', async () => {
    const iris = await postJson(IRIS, { data: { req_data: [irisRecord()] } });
    assert.equal(iris.status, 200, iris.text);
    assert.equal(iris.json.data.resp_data[0].predictresult, 'setosa');
    const cc = await postJson(CCFRAUD, [{ tensor: fraud }], PANDAS);
    assert.equal(cc.status, 200, cc.text);
    assert.equal(cc.json[0].out.dense_1.length, 1);
    const cr = await postJson(WML, wmlBody());
    assert.equal(cr.status, 200, cr.text);
    assert.equal(cr.json.predictions[0].values.length, WML_VALUES.length);
    const v = await postJson(v2('iris'), { inputs: [{ name: 'input', shape: [1, 4], datatype: 'FP32', data: irisRow }] });
    assert.equal(v.status, 200, v.text);
    const h = await fetch(`${gw.url}/healthz`);
    assert.equal(h.status, 200);
    assert.deepEqual(await h.json(), { status: 'ok' });
    assert.equal(gw.proc.exitCode, null, 'the gateway process is still running');
  });
});

/**
 * Writes `writes` on one TCP connection (50 ms apart) and collects what comes back until `want`
 * complete responses are in, the server closes, or 5 s pass.
 */
function rawExchange(port: number, writes: string[], want: number): Promise<string> {
  return new Promise<string>((resolve, reject) => {
    const sock = net.connect(port, '127.0.0.1');
    let buf = '';
    const finish = () => {
      clearTimeout(timer);
      sock.destroy();
      resolve(buf);
    };
    const timer = setTimeout(finish, 5000);
    sock.setEncoding('latin1');
    sock.on('data', (d: string) => {
      buf += d;
      if (responses(buf).length >= want) finish();
    });
    sock.on('close', finish);
    sock.on('error', (err) => {
      // A reset after the answers came is the server closing; before any, it is a failure.
      if (buf) finish();
      else {
        clearTimeout(timer);
        reject(err);
      }
    });
    sock.on('connect', async () => {
      for (let i = 0; i < writes.length; i++) {
        if (i) await new Promise((r) => setTimeout(r, 50));
        if (!sock.destroyed) sock.write(writes[i]!);
      }
    });
  });
}

interface RawResponse {
  status: number;
  headers: string;
  body: string;
}

/** Complete HTTP/1.1 responses (Content-Length framed) at the start of a raw byte string. */
function responses(raw: string): RawResponse[] {
  const out: RawResponse[] = [];
  let rest = raw;
  for (;;) {
    const end = rest.indexOf('\r\n\r\n');
    if (end < 0) return out;
    const head = rest.slice(0, end);
    const m = /^HTTP\/1\.1 (\d{3})/.exec(head);
    const len = /\r\ncontent-length:\s*(\d+)/i.exec(head);
    if (!m || !len) return out;
    const bodyEnd = end + 4 + Number(len[1]);
    if (rest.length < bodyEnd) return out;
    out.push({ status: Number(m[1]), headers: head, body: rest.slice(end + 4, bodyEnd) });
    rest = rest.slice(bodyEnd);
  }
}
