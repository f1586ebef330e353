import assert from 'node:assert/strict';
import { cpSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { unpack } from 'msgpackr';
import ort from 'onnxruntime-node';
import sharp from 'sharp';
import { Elem, model, node, onnx, valueInfo, type ElemType } from '../scripts/onnx-builder.js';
import { WML_FIELDS, WML_VALUES, fraudRow, prng } from './helpers/direct.js';
import { makeModelsDir } from './helpers/fixtures.js';
import { ADMIN_TOKEN, api, post, postJson, request, SAMPLE_MODELS, startGateway, until, waitForService, type Answer, type RunningGateway } from './helpers/gateway.js';
import { CLS_H, CLS_W, gradient, paddleClsInput, solid, textLine } from './helpers/images.js';
import { scalarInputModel } from './helpers/models.js';
import { f32npy, formBody, npy, type RawPart } from './helpers/multipart.js';

/**
 * multipart/form-data inference (SPEC §5.3): .npy and JSON parts equal the JSON API's answers,
 * images through preprocess.image equal PaddleOCR's preprocessing done by hand, raw parts reach
 * the preprocess hook, and malformed bodies are refused by name.
 */

const CLS_ONNX = path.join(SAMPLE_MODELS, 'ocr-direction', 'model.onnx');
const UINT8 = onnx.TensorProto.DataType.UINT8 as unknown as ElemType;

/** y = x for an image input, so the answer is the preprocessed tensor itself. */
function identity(type: ElemType, dims: (number | string)[]) {
  return model({
    graphName: 'identity', doc: 'y = x', usesMl: false,
    inputs: [valueInfo('x', type, dims)],
    outputs: [valueInfo('y', type, dims)],
    nodes: [node('Identity', ['x'], ['y'], { name: 'id' })],
  });
}

/** ccfraud's tensor from a CSV file part: 29 numbers a line. */
const CSV_HOOK = `
exports.preprocess = function (data, ctx) {
  const files = data.file;
  if (!files) { const e = new Error("send the rows as a CSV file in a part named 'file'"); e.status = 400; throw e; }
  const text = Object.values(files)[0].toString('utf8');
  const rows = text.trim().split('\\n').map((l) => l.split(',').map(Number));
  if (rows.some((r) => r.length !== 29 || r.some(Number.isNaN))) { const e = new Error('each CSV line needs 29 numbers'); e.status = 400; throw e; }
  return { tensor: new ctx.Tensor('float32', Float32Array.from(rows.flat()), [rows.length, 29]) };
};
`;

/** Reports what preprocess was handed, through ctx, as postprocess's own answer. */
const ECHO_HOOK = `
exports.preprocess = function (data, ctx) {
  const seen = {};
  for (const field of Object.keys(data)) {
    seen[field] = {};
    for (const name of Object.keys(data[field])) {
      const b = data[field][name];
      seen[field][name] = { bytes: b.length, isBuffer: Buffer.isBuffer(b), head: Buffer.from(b.subarray(0, 8)).toString('latin1') };
    }
  }
  ctx.seen = seen;
  return { tensor: new ctx.Tensor('float32', new Float32Array(29), [1, 29]) };
};
exports.postprocess = function (outputs, ctx) {
  return { seen: ctx.seen, dense_1_dims: outputs.dense_1.dims };
};
`;

const CLS_PRE = { input: 'x', resize: [192, 48], fit: 'pad', layout: 'NCHW', channels: 'BGR', scale: 1 / 255, mean: 0.5, std: 0.5 };
const PAD_MEAN = [0.1, 0.2, 0.3];
const PAD_STD = [0.5, 0.25, 0.125];

function modelsDir(): string {
  const dir = makeModelsDir({
    iris: { from: 'iris' },
    ccfraud: { from: 'ccfraud' },
    // The same weights again, as a shadow version.
    'ccfraud-twin': { from: 'ccfraud' },
    'credit-risk': { from: 'credit-risk' },
    // The cls model without the sample's hook: its answer is the softmax itself.
    cls: { from: 'ocr-direction', config: { preprocess: { image: CLS_PRE } } },
    'ccfraud-csv': { from: 'ccfraud', hook: CSV_HOOK },
    'echo-parts': { from: 'ccfraud', hook: ECHO_HOOK },
  });
  // The sample as `npm start` deploys it, package.json and all.
  cpSync(path.join(SAMPLE_MODELS, 'ocr-direction'), path.join(dir, 'ocr-direction'), { recursive: true });
  const write = (name: string, proto: ReturnType<typeof model>, config: Record<string, unknown>): void => {
    mkdirSync(path.join(dir, name));
    writeFileSync(path.join(dir, name, 'model.onnx'), onnx.ModelProto.encode(proto).finish());
    writeFileSync(path.join(dir, name, 'config.json'), JSON.stringify({ model_type: 'ONNX', ...config }));
  };
  // Fixed H and W: resize defaults to the model's [6, 4]; uint8 takes raw pixel values.
  write('pix-u8', identity(UINT8, ['N', 4, 6, 3]), { preprocess: { image: { layout: 'NHWC', channels: 'RGB' } } });
  write('pix-pad', identity(Elem.FLOAT, ['N', 3, 'H', 'W']), { preprocess: { image: { resize: [8, 4], fit: 'pad', layout: 'NCHW', channels: 'BGR', mean: PAD_MEAN, std: PAD_STD } } });
  write('pix-gray', identity(Elem.FLOAT, ['N', 1, 'H', 'W']), { preprocess: { image: { channels: 'GRAY', scale: 1 } } });
  write('scaled', scalarInputModel(), {});
  return dir;
}

const SERVICES = ['iris', 'ccfraud', 'credit-risk', 'cls', 'ocr-direction', 'ccfraud-csv', 'echo-parts', 'pix-u8', 'pix-pad', 'pix-gray', 'scaled'];

/** A FormData part: a file (Blob with a type and name) or a plain text field. */
type FormEntry = [name: string, value: string] | [name: string, data: Uint8Array, filename: string, type?: string];

function form(entries: FormEntry[]): FormData {
  const f = new FormData();
  for (const e of entries) {
    if (typeof e[1] === 'string') f.append(e[0], e[1]);
    else f.append(e[0], new Blob([e[1]], { type: e[3] ?? '' }), e[2]);
  }
  return f;
}

function assertClose(got: number[], want: ArrayLike<number>, tol: number, what: string): void {
  assert.equal(got.length, want.length, `${what}: length`);
  for (let i = 0; i < got.length; i++) assert.ok(Math.abs(got[i]! - want[i]!) <= tol, `${what}[${i}]: ${got[i]} vs ${want[i]} (tolerance ${tol})`);
}

function assertRefused(a: Answer, status: number, code: string, msg: RegExp): void {
  assert.equal(a.status, status, a.text);
  assert.equal(a.json?.error_code, code, a.text);
  assert.match(a.json.error_msg, msg);
}

describe('multipart/form-data inference', () => {
  let gw: RunningGateway;
  let cls: ort.InferenceSession;
  const infer = (service: string, body: FormData, headers: Record<string, string> = {}): Promise<Answer> =>
    request(`${gw.url}/v1/infers/${service}`, { method: 'POST', body, headers });
  const raw = (service: string, parts: RawPart[], boundary?: string): Promise<Answer> => {
    const { body, contentType } = formBody(parts, boundary);
    return post(`${gw.url}/v1/infers/${service}`, body, contentType);
  };

  before(async () => {
    [gw, cls] = await Promise.all([startGateway({ modelsDir: modelsDir() }), ort.InferenceSession.create(CLS_ONNX)]);
    const shadowed = await api(gw, 'POST', '/v1/services', {
      name: 'fraud-shadowed', auth: 'none',
      versions: [{ model: 'ccfraud', weight: 100 }, { model: 'ccfraud-twin', weight: 0 }],
      shadow: [{ model: 'ccfraud-twin', version: '0.0.1' }],
    });
    assert.equal(shadowed.status, 202, shadowed.text);
    for (const s of [...SERVICES, 'fraud-shadowed']) await waitForService(gw, s, 'running');
  });
  after(async () => {
    await gw?.stop();
  });

  describe('images through preprocess.image', () => {
    /** The softmax of a direct ONNX Runtime run on the hand-preprocessed images. */
    async function clsDirect(images: Buffer[]): Promise<number[][]> {
      const inputs = await Promise.all(images.map(paddleClsInput));
      const x = new Float32Array(images.length * 3 * CLS_H * CLS_W);
      inputs.forEach((t, i) => x.set(t, i * t.length));
      const out = await cls.run({ x: new ort.Tensor('float32', x, [images.length, 3, CLS_H, CLS_W]) });
      const p = Array.from(out['softmax_0.tmp_0']!.data as Float32Array);
      return images.map((_, i) => p.slice(i * 2, i * 2 + 2));
    }

    test('the PaddleOCR classifier gives the softmax of PaddleOCR\'s own preprocessing, one row per image in part order', async () => {
      const upright = await textLine('Hello world');
      const flipped = await textLine('Invoice 42', { flip: true, format: 'jpeg' });
      // PaddleOCR's width rule and "fit inside" agree up to an aspect ratio of 192/48.
      for (const img of [upright, flipped]) {
        const { width, height } = await sharp(img).metadata();
        assert.ok(width! / height! <= 4, `test image ${width}×${height} keeps within the 4:1 the reference assumes`);
      }
      const a = await infer('cls', form([['images', upright, 'upright.png', 'image/png'], ['images', flipped, 'flipped.jpg']]));
      assert.equal(a.status, 200, a.text);
      const want = await clsDirect([upright, flipped]);
      const got = a.json.data.resp_data.map((r: Record<string, number[]>) => r['softmax_0.tmp_0']!);
      assert.equal(got.length, 2);
      assertClose(got[0], want[0]!, 1e-5, 'upright softmax');
      assertClose(got[1], want[1]!, 1e-5, 'flipped softmax');
      assert.ok(got[0][0] > 0.9 && got[1][1] > 0.9, `upright reads as 0°, flipped as 180°: ${JSON.stringify(got)}`);
    });

    test('the ocr-direction sample answers its postprocess hook\'s own JSON with the right angles', async () => {
      const upright = await textLine('PaddleOCR', { format: 'jpeg' });
      const flipped = await textLine('gateway', { flip: true });
      const want = await clsDirect([upright, flipped]);
      const one = await infer('ocr-direction', form([['images', flipped, 'line.png', 'image/png']]));
      assert.equal(one.status, 200, one.text);
      assert.equal(one.headers.get('x-model-version'), 'ocr-direction@0.0.1');
      assert.deepEqual(Object.keys(one.json), ['results']);
      assert.equal(one.json.results.length, 1);
      assert.equal(one.json.results[0].angle, '180');
      assertClose([one.json.results[0].score], [want[1]![1]!], 1e-5, 'flipped score');
      const both = await infer('ocr-direction', form([['images', upright, 'a.jpg'], ['images', flipped, 'b.png']]));
      assert.equal(both.status, 200, both.text);
      assert.deepEqual(both.json.results.map((r: { angle: string }) => r.angle), ['0', '180']);
      assertClose(both.json.results.map((r: { score: number }) => r.score), [want[0]![0]!, want[1]![1]!], 1e-5, 'scores');
      // The hook's answer in msgpack when Accept asks for it.
      const packed = await fetch(`${gw.url}/v1/infers/ocr-direction`, { method: 'POST', body: form([['images', upright, 'a.jpg'], ['images', flipped, 'b.png']]), headers: { accept: 'application/msgpack' } });
      assert.equal(packed.headers.get('content-type'), 'application/msgpack');
      assert.deepEqual(unpack(Buffer.from(await packed.arrayBuffer())), both.json);
      // A hook's own answer has no table form.
      const table = await fetch(`${gw.url}/v1/infers/ocr-direction`, { method: 'POST', body: form([['images', upright, 'a.jpg']]), headers: { accept: 'application/vnd.apache.arrow.file' } });
      assert.equal(table.status, 406);
      const refusal = (await table.json()) as { error_code: string; error_msg: string };
      assert.equal(refusal.error_code, 'IG.406.NotAcceptable');
      assert.match(refusal.error_msg, /postprocess hook answers its own JSON value, which has no application\/vnd\.apache\.arrow\.file form/);
    });

    test('fit pad: scaled inside the box, top-left, zero padding right or below; BGR, NCHW, (v·scale − mean)/std per channel', async () => {
      // 2×2 into 8×4 keeps its ratio at 4×4 (padding on the right); 16×4 becomes 8×2 (padding below).
      const a = await infer('pix-pad', form([['img', await solid(2, 2, [200, 100, 50]), 'sq.png'], ['img', await solid(16, 4, [10, 20, 30]), 'wide.png']]));
      assert.equal(a.status, 200, a.text);
      const rows = a.json.data.resp_data.map((r: { y: number[][][] }) => r.y);
      assert.equal(rows.length, 2);
      const expect = (rgb: number[], w: number, h: number): number[][][] => [2, 1, 0].map((src, c) =>
        Array.from({ length: 4 }, (_, y) => Array.from({ length: 8 }, (_, x) => (x < w && y < h ? Math.fround((rgb[src]! / 255 - PAD_MEAN[c]!) / PAD_STD[c]!) : 0))));
      assert.deepEqual(rows[0], expect([200, 100, 50], 4, 4));
      assert.deepEqual(rows[1], expect([10, 20, 30], 8, 2));
    });

    test('uint8 NHWC input: raw RGB pixel values, no scaling, the model\'s fixed size as the resize', async () => {
      const { png, pixel } = await gradient(6, 4);
      const a = await infer('pix-u8', form([['image', png, 'g.png', 'image/png']]));
      assert.equal(a.status, 200, a.text);
      assert.deepEqual(a.json.data.resp_data[0].y, Array.from({ length: 4 }, (_, y) => Array.from({ length: 6 }, (_, x) => pixel(x, y))));
    });

    test('without a resize, images keep their size and must share it; GRAY gives one channel', async () => {
      const a = await infer('pix-gray', form([['a', await solid(3, 2, [90, 90, 90]), 'a.png'], ['b', await solid(3, 2, [7, 7, 7]), 'b.png']]));
      assert.equal(a.status, 200, a.text);
      assert.deepEqual(a.json.data.resp_data.map((r: { y: number[][][] }) => r.y), [[[[90, 90, 90], [90, 90, 90]]], [[[7, 7, 7], [7, 7, 7]]]]);
      const mixed = await infer('pix-gray', form([['a', await solid(3, 2, [90, 90, 90]), 'a.png'], ['b', await solid(2, 3, [7, 7, 7]), 'b.png']]));
      assertRefused(mixed, 400, 'IG.400.WrongShape', /part 'b' \(b\.png\) is 2×3 but part 'a' \(a\.png\) is 3×2; without preprocess\.image\.resize every image of a request must have the same size/);
    });
  });

  describe('.npy and JSON parts equal the JSON API', () => {
    const fraud = Array.from({ length: 5 }, ((r) => () => fraudRow(r))(prng(11)));
    const iris = [[5.1, 3.5, 1.4, 0.2], [6.4, 3.2, 4.5, 1.5], [6.3, 3.3, 6.0, 2.5]];
    let fraudJson: unknown;
    let irisJson: unknown;
    before(async () => {
      fraudJson = (await postJson(`${gw.url}/v1/infers/ccfraud`, { data: { req_data: fraud.map((tensor) => ({ tensor })) } })).json;
      irisJson = (await postJson(`${gw.url}/v1/infers/iris`, { data: { req_data: iris.map((input) => ({ input })) } })).json;
    });

    test('a .npy part (format 1.0, 2.0 and 3.0, by file name or by type) is the input\'s tensor', async () => {
      for (const version of [1, 2, 3] as const) {
        const file = npy('<f4', [fraud.length, 29], Float32Array.from(fraud.flat()), { version });
        const byName = await infer('ccfraud', form([['tensor', file, 'rows.npy']]));
        assert.equal(byName.status, 200, byName.text);
        assert.deepEqual(byName.json, fraudJson, `version ${version}`);
      }
      const byType = await infer('iris', form([['input', f32npy(iris), 'blob', 'application/x-npy']]));
      assert.equal(byType.status, 200, byType.text);
      assert.deepEqual(byType.json, irisJson);
    });

    test('a JSON part is the input\'s rows: a plain text field, or a file of type application/json', async () => {
      const text = await infer('ccfraud', form([['tensor', JSON.stringify(fraud)]]));
      assert.equal(text.status, 200, text.text);
      assert.deepEqual(text.json, fraudJson);
      const file = await infer('iris', form([['input', Buffer.from(JSON.stringify(iris)), 'rows.json', 'application/json']]));
      assert.equal(file.status, 200, file.text);
      assert.deepEqual(file.json, irisJson);
    });

    test('inputs of one request from several parts: .npy for numbers, JSON for strings (credit-risk, 20 inputs)', async () => {
      const wml = await postJson(`${gw.url}/v1/infers/credit-risk`, { input_data: [{ fields: WML_FIELDS, values: WML_VALUES }] });
      assert.equal(wml.status, 200, wml.text);
      const entries: FormEntry[] = WML_FIELDS.map((f, c): FormEntry => {
        const col = WML_VALUES.map((row) => row[c]!);
        return typeof col[0] === 'number'
          ? [f, npy('<f4', [col.length, 1], Float32Array.from(col as number[])), `${f}.npy`]
          : [f, JSON.stringify(col.map((v) => [v]))];
      });
      const a = await infer('credit-risk', form(entries));
      assert.equal(a.status, 200, a.text);
      const [fields, values] = [wml.json.predictions[0].fields as string[], wml.json.predictions[0].values as unknown[][]];
      assert.deepEqual(a.json.data.resp_data, values.map((row) => Object.fromEntries(fields.map((f, i) => [f, row[i]]))));
    });

    test('an input without a batch dimension takes one JSON value; rows come from the batched inputs', async () => {
      const a = await infer('scaled', form([['x', npy('<f4', [2, 3], Float32Array.from([1, 2, 3, 4, 5, 6])), 'x.npy'], ['scale', '[10]']]));
      assert.equal(a.status, 200, a.text);
      assert.deepEqual(a.json.data.resp_data, [{ y: [10, 20, 30] }, { y: [40, 50, 60] }]);
    });

    test('Accept: application/msgpack answers a multipart request in msgpack', async () => {
      const res = await fetch(`${gw.url}/v1/infers/ccfraud`, { method: 'POST', body: form([['tensor', f32npy(fraud), 'rows.npy']]), headers: { accept: 'application/msgpack' } });
      assert.equal(res.status, 200);
      assert.equal(res.headers.get('content-type'), 'application/msgpack');
      assert.deepEqual(unpack(Buffer.from(await res.arrayBuffer())), fraudJson);
    });
  });

  describe('raw parts to the preprocess hook', () => {
    test('a CSV file part becomes ccfraud\'s tensor in the hook; rows come from the outputs', async () => {
      const rows = Array.from({ length: 3 }, ((r) => () => fraudRow(r))(prng(5)));
      const want = (await postJson(`${gw.url}/v1/infers/ccfraud`, { data: { req_data: rows.map((tensor) => ({ tensor })) } })).json;
      const csv = Buffer.from(rows.map((r) => r.join(',')).join('\n') + '\n');
      const a = await infer('ccfraud-csv', form([['file', csv, 'rows.csv', 'text/csv']]));
      assert.equal(a.status, 200, a.text);
      assert.deepEqual(a.json, want);
      const bad = await infer('ccfraud-csv', form([['file', Buffer.from('1,2,3\n'), 'short.csv', 'text/csv']]));
      assertRefused(bad, 400, 'IG.400.PreprocessRefused', /each CSV line needs 29 numbers/);
    });

    test('the hook sees {field: {filename: bytes}}: repeated fields, text fields by field name, images and JSON too once the hook is needed', async () => {
      const png = await solid(2, 2, [1, 2, 3]);
      const a = await infer('echo-parts', form([
        ['file', Buffer.from('a,b\n1,2\n'), 'a.csv', 'text/csv'],
        ['file', Buffer.from('hello'), 'b.txt', 'text/plain'],
        ['note', 'just text'],
        ['photo', png, 'p.png', 'image/png'],
        // Named after an input and valid JSON, but the form needs the hook: it goes raw as well.
        ['tensor', '[[1]]'],
      ]));
      assert.equal(a.status, 200, a.text);
      assert.deepEqual(a.json, {
        seen: {
          file: { 'a.csv': { bytes: 8, isBuffer: true, head: 'a,b\n1,2\n' }, 'b.txt': { bytes: 5, isBuffer: true, head: 'hello' } },
          note: { note: { bytes: 9, isBuffer: true, head: 'just tex' } },
          photo: { 'p.png': { bytes: png.length, isBuffer: true, head: png.subarray(0, 8).toString('latin1') } },
          tensor: { tensor: { bytes: 5, isBuffer: true, head: '[[1]]' } },
        },
        dense_1_dims: [1, 1],
      });
    });
  });

  describe('malformed multipart bodies', () => {
    const row = new Array<number>(29).fill(0.5);
    const good: RawPart = { name: 'tensor', filename: 'r.npy', data: f32npy([row]) };
    const header = (h: string): Buffer => npy('<f4', [1, 29], new Float32Array(29), { header: h });

    const cases: Array<[what: string, service: string, send: () => Promise<Answer>, code: string, msg: RegExp]> = [
      ['no boundary in the Content-Type', 'ccfraud', () => post(`${gw.url}/v1/infers/ccfraud`, formBody([good]).body, 'multipart/form-data'),
        'IG.400.BadMultipart', /multipart\/form-data has no boundary/],
      ['a boundary the body does not use', 'ccfraud', () => post(`${gw.url}/v1/infers/ccfraud`, formBody([good]).body, 'multipart/form-data; boundary=other'),
        'IG.400.Empty', /the multipart body has no parts: it must hold parts that start with '--other'/],
      ['an empty body', 'ccfraud', () => post(`${gw.url}/v1/infers/ccfraud`, new Uint8Array(0), 'multipart/form-data; boundary=x'),
        'IG.400.Empty', /has no parts/],
      ['a body cut before its closing boundary', 'ccfraud', () => post(`${gw.url}/v1/infers/ccfraud`, formBody([good]).body.subarray(0, 300), formBody([good]).contentType),
        'IG.400.Empty', /has no parts/],
      ['a part without a name', 'ccfraud', () => raw('ccfraud', [{ filename: 'r.npy', data: f32npy([row]) }]),
        'IG.400.BadMultipart', /part 1 \(r\.npy\) has no name/],
      ['an image that does not decode', 'cls', async () => raw('cls', [{ name: 'images', filename: 'x.png', type: 'image/png', data: (await solid(4, 4, [0, 0, 0])).subarray(0, 40) }]),
        'IG.400.BadImage', /part 'images' \(x\.png\) could not be decoded as a png image/],
      ['bytes that are no image format, typed image/png', 'cls', () => raw('cls', [{ name: 'images', filename: 'x.png', type: 'image/png', data: 'GIF? no, text' }]),
        'IG.400.BadImage', /part 'images' \(x\.png\) is not a JPEG, PNG, WebP, GIF, TIFF, AVIF or HEIF image/],
      ['an SVG (never handed to a decoder)', 'cls', () => raw('cls', [{ name: 'images', filename: 'x.svg', type: 'image/svg+xml', data: '<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4"/>' }]),
        'IG.400.BadImage', /is not a JPEG, PNG/],
      ['a .npy without the magic', 'ccfraud', () => raw('ccfraud', [{ name: 'tensor', filename: 'r.npy', data: 'not numpy at all' }]),
        'IG.400.BadNpy', /part 'tensor' \(r\.npy\): not a NumPy \.npy file \(it must start with \\x93NUMPY\)/],
      ['a .npy of complex numbers', 'ccfraud', () => raw('ccfraud', [{ name: 'tensor', filename: 'r.npy', data: npy('<c8', [1, 29], new Float32Array(58)) }]),
        'IG.400.BadNpy', /dtype '<c8' is not supported; expected one of f2 f4 f8 i1 i2 i4 i8 u1 u2 u4 u8 b1/],
      ['a .npy of Python objects (a pickle)', 'ccfraud', () => raw('ccfraud', [{ name: 'tensor', filename: 'r.npy', data: npy('|O', [1, 29], new Float64Array(29)) }]),
        'IG.400.BadNpy', /dtype '\|O' is not supported/],
      ['a .npy in Fortran order', 'ccfraud', () => raw('ccfraud', [{ name: 'tensor', filename: 'r.npy', data: npy('<f4', [1, 29], new Float32Array(29), { fortran: true }) }]),
        'IG.400.BadNpy', /Fortran order; send a C-ordered array/],
      ['a truncated .npy', 'ccfraud', () => raw('ccfraud', [{ name: 'tensor', filename: 'r.npy', data: npy('<f4', [2, 29], new Float32Array(29)) }]),
        'IG.400.BadNpy', /the data is truncated: shape \(2, 29\) of <f4 needs 232 bytes, the file has 116/],
      ['a big-endian .npy', 'ccfraud', () => raw('ccfraud', [{ name: 'tensor', filename: 'r.npy', data: npy('>f4', [1, 29], new Float32Array(29)) }]),
        'IG.400.BadNpy', /dtype '>f4' is big-endian; send little-endian data/],
      ['a .npy header that is code, not a dict', 'ccfraud', () => raw('ccfraud', [{ name: 'tensor', filename: 'r.npy', data: header("__import__('os').system('true')") }]),
        'IG.400.BadNpy', /part 'tensor' \(r\.npy\): the \.npy header has an unexpected character "\."/],
      ['a .npy header with a structured dtype', 'ccfraud', () => raw('ccfraud', [{ name: 'tensor', filename: 'r.npy', data: header("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1, 29), }") }]),
        'IG.400.BadNpy', /structured dtypes are refused/],
      ['a .npy of float64 for a float32 input', 'ccfraud', () => raw('ccfraud', [{ name: 'tensor', filename: 'r.npy', data: npy('<f8', [1, 29], new Float64Array(29)) }]),
        'IG.400.WrongType', /part 'tensor' \(r\.npy\): dtype '<f8' \(float64\) does not match input 'tensor', which takes float32 \('<f4'\); convert with arr\.astype\('<f4'\)/],
      ['a .npy of the wrong shape', 'ccfraud', () => raw('ccfraud', [{ name: 'tensor', filename: 'r.npy', data: npy('<f4', [2, 28], new Float32Array(56)) }]),
        'IG.400.WrongShape', /shape \(2, 28\) does not fit input 'tensor' of shape \[N,29\]/],
      ['a part declared JSON that is not', 'ccfraud', () => raw('ccfraud', [{ name: 'tensor', type: 'application/json', data: '[[1, 2' }]),
        'IG.400.BadJson', /part 'tensor' is declared JSON but is not valid JSON/],
      ['a text field named after an input that is not JSON', 'ccfraud', () => raw('ccfraud', [{ name: 'tensor', data: 'one,two' }]),
        'IG.400.BadJson', /part 'tensor' is named after input 'tensor' but is not JSON/],
      ['JSON rows of the wrong width', 'ccfraud', () => raw('ccfraud', [{ name: 'tensor', data: JSON.stringify([row, row.slice(1)]) }]),
        'IG.400.WrongShape', /part 'tensor' row 1, field 'tensor': expected 29 elements at depth 1, got 28/],
      ['JSON rows of strings for a float input', 'ccfraud', () => raw('ccfraud', [{ name: 'tensor', data: JSON.stringify([row.map(String)]) }]),
        'IG.400.WrongType', /part 'tensor' row 0, field 'tensor'\[0\]: expected a number \(float32\)/],
      ['a field nothing takes, and no hook', 'ccfraud', () => raw('ccfraud', [good, { name: 'notes', filename: 'n.txt', type: 'text/plain', data: 'hi' }]),
        'IG.400.UnknownPart', /nothing could take this part: part 'notes' \(n\.txt\): no model input is named 'notes'\. A part named after a model input \('tensor'\) takes a \.npy file/],
      ['an image for a model without preprocess.image, and no hook', 'ccfraud', async () => raw('ccfraud', [{ name: 'tensor', filename: 'p.png', type: 'image/png', data: await solid(2, 2, [0, 0, 0]) }]),
        'IG.400.UnknownPart', /part 'tensor' \(p\.png\): an image, but the model has no preprocess\.image/],
      ['a missing input', 'credit-risk', () => raw('credit-risk', [{ name: 'Age', data: '[[30]]' }]),
        'IG.400.MissingInput', /missing inputs 'CheckingStatus' \(string \[N,1\]\), 'LoanDuration' \(float32 \[N,1\]\)/],
      ['the same input twice', 'iris', () => raw('iris', [{ name: 'input', data: '[[1,2,3,4]]' }, { name: 'input', filename: 'i.npy', data: f32npy([[1, 2, 3, 4]]) }]),
        'IG.400.DuplicateInput', /input 'input' is given by both part 'input' and part 'input' \(i\.npy\)/],
      ['images and a .npy for the same input', 'cls', async () => raw('cls', [{ name: 'x', filename: 'x.npy', data: npy('<f4', [1, 3, 48, 192], new Float32Array(3 * 48 * 192)) }, { name: 'images', filename: 'a.png', type: 'image/png', data: await textLine('ab') }]),
        'IG.400.DuplicateInput', /input 'x' is given by both 1 image part \(part 'images' \(a\.png\)…\) and part 'x' \(x\.npy\)/],
      ['one file name twice in a field for the hook', 'ccfraud-csv', () => raw('ccfraud-csv', [{ name: 'file', filename: 'a.csv', data: '1' }, { name: 'file', filename: 'a.csv', data: '2' }]),
        'IG.400.DuplicatePart', /part 'file' \(a\.csv\) repeats the file name 'a\.csv' of field 'file'/],
    ];

    test(`${cases.length} malformed requests are refused with their code and a message naming the part`, async () => {
      for (const [what, , send, code, msg] of cases) {
        const a = await send();
        assert.equal(a.status, 400, `${what}: ${a.text}`);
        assert.equal(a.json?.error_code, code, `${what}: ${a.text}`);
        assert.match(a.json.error_msg, msg, what);
      }
    });

    test('rows of several parts must agree', async () => {
      const a = await raw('credit-risk', WML_FIELDS.map((f, c) => ({ name: f, data: JSON.stringify(WML_VALUES.slice(0, c === 5 ? 2 : 3).map((r) => [r[c]])) })));
      assertRefused(a, 400, 'IG.400.WrongShape', /part 'ExistingSavings' gives 2 rows but part 'CheckingStatus' gives 3; every input needs the same number of rows/);
    });

    test('afterwards the gateway still answers every kind of request', async () => {
      const json = await postJson(`${gw.url}/v1/infers/ccfraud`, { data: { req_data: [{ tensor: row }] } });
      assert.equal(json.status, 200, json.text);
      const multi = await raw('ccfraud', [good]);
      assert.equal(multi.status, 200, multi.text);
      assert.deepEqual(multi.json, json.json);
      const img = await infer('ocr-direction', form([['images', await textLine('still here'), 'a.png', 'image/png']]));
      assert.equal(img.status, 200, img.text);
      assert.equal(img.json.results[0].angle, '0');
      // A quoted boundary, in another case, after another parameter: read as the RFC says.
      const { body } = formBody([good], 'q-b');
      const quoted = await post(`${gw.url}/v1/infers/ccfraud`, body, 'Multipart/Form-Data; charset=utf-8; BOUNDARY="q-b"');
      assert.equal(quoted.status, 200, quoted.text);
      assert.deepEqual(quoted.json, json.json);
    });
  });

  describe('the inference log and shadow versions see multipart inputs', () => {
    const latest = async (service: string): Promise<any> => {
      const page = await post(`${gw.url}/v1/services/${service}/logs`, '{"page_size":1}', 'application/json', { 'x-auth-token': ADMIN_TOKEN });
      assert.equal(page.status, 200, page.text);
      return page.json[0];
    };

    test('a .npy part: the record holds the tensor, and the shadow answers it as the primary did', async () => {
      const rows = Array.from({ length: 2 }, ((r) => () => fraudRow(r))(prng(5)));
      const a = await infer('fraud-shadowed', form([['tensor', npy('<f4', [2, 29], Float32Array.from(rows.flat())), 'rows.npy']]), { 'x-request-id': 'mp-shadow' });
      assert.equal(a.status, 200, a.text);
      let rec: any;
      await until('the shadow\'s answer in the log', async () => {
        rec = await latest('fraud-shadowed');
        return rec?.metadata.request_id === 'mp-shadow' && rec['out_ccfraud-twin@0.0.1'] !== null;
      });
      assert.deepEqual(rec.in.tensor, rows.map((r) => Array.from(Float32Array.from(r))));
      assert.equal(rec['out_ccfraud-twin@0.0.1'].error, undefined, JSON.stringify(rec['out_ccfraud-twin@0.0.1']));
      assert.deepEqual(rec['out_ccfraud-twin@0.0.1'], rec.out, 'the same weights answer the same');
      // The answer gives each row's one score as a number; the log keeps the [2, 1] tensor.
      assert.deepEqual(rec.out.dense_1, a.json.data.resp_data.map((r: { dense_1: number }) => [r.dense_1]));
    });

    test('an image part: the record holds the preprocessed tensor the model ran on', async () => {
      const a = await infer('pix-gray', form([['a', await solid(3, 2, [42, 42, 42]), 'a.png']]), { 'x-request-id': 'mp-image' });
      assert.equal(a.status, 200, a.text);
      const rec = await latest('pix-gray');
      assert.equal(rec.metadata.request_id, 'mp-image');
      assert.deepEqual(rec.in.x, [[[[42, 42, 42], [42, 42, 42]]]]);
      assert.deepEqual(rec.out.y, rec.in.x);
    });
  });

  test('the sample\'s preprocess.image is the one the cls service above is checked with', () => {
    const config = JSON.parse(readFileSync(path.join(SAMPLE_MODELS, 'ocr-direction', 'config.json'), 'utf8'));
    assert.deepEqual(config.preprocess.image, { ...CLS_PRE, mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5] });
  });
});
