import { badRequest } from '../errors.js';
import { typedView, type ElementType, type TypedData } from '../runtime/onnx/tensor.js';

/**
 * NumPy .npy files (format versions 1.0, 2.0 and 3.0), numeric and bool dtypes in C order.
 * The header is a Python dict literal; it is read by a small tokenizer, never evaluated, and
 * object dtypes (pickles) are refused before anything else is looked at.
 */

export interface NpyArray {
  type: Exclude<ElementType, 'string'>;
  /** The dtype as the file spells it ('<f4'), for messages. */
  descr: string;
  shape: number[];
  /** A copy, aligned for its element type: the caller's bytes may be a view of a reused buffer. */
  data: TypedData;
}

const MAGIC = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]; // \x93NUMPY
/** numpy itself refuses headers over 10 000 bytes unless told otherwise; shapes are tiny. */
const MAX_HEADER = 10_000;

const KINDS: Readonly<Record<string, Exclude<ElementType, 'string'>>> = {
  f2: 'float16', f4: 'float32', f8: 'float64',
  i1: 'int8', i2: 'int16', i4: 'int32', i8: 'int64',
  u1: 'uint8', u2: 'uint16', u4: 'uint32', u8: 'uint64',
  b1: 'bool',
};

/** The descr numpy writes for each element type, for messages that say what to send. */
export const NPY_DESCR: Readonly<Record<Exclude<ElementType, 'string'>, string>> = {
  float16: '<f2', float32: '<f4', float64: '<f8',
  int8: '|i1', int16: '<i2', int32: '<i4', int64: '<i8',
  uint8: '|u1', uint16: '<u2', uint32: '<u4', uint64: '<u8',
  bool: '|b1',
};

const SUPPORTED = 'f2 f4 f8 i1 i2 i4 i8 u1 u2 u4 u8 b1, little-endian';

export function parseNpy(bytes: Uint8Array, where: string): NpyArray {
  const bad = (msg: string): never => {
    throw badRequest(`${where}: ${msg}`, 'BadNpy');
  };
  if (bytes.length < 10 || MAGIC.some((b, i) => bytes[i] !== b)) bad('not a NumPy .npy file (it must start with \\x93NUMPY); write it with numpy.save');
  const major = bytes[6]!;
  const minor = bytes[7]!;
  if (major < 1 || major > 3 || minor !== 0) bad(`.npy format version ${major}.${minor} is not supported; expected 1.0, 2.0 or 3.0`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const lenAt = 8;
  const headerAt = major === 1 ? 10 : 12;
  if (bytes.length < headerAt) bad('the .npy file ends inside its header');
  const headerLen = major === 1 ? view.getUint16(lenAt, true) : view.getUint32(lenAt, true);
  if (headerLen > MAX_HEADER) bad(`the .npy header is ${headerLen} bytes; at most ${MAX_HEADER} are accepted`);
  const dataAt = headerAt + headerLen;
  if (dataAt > bytes.length) bad(`the .npy header says ${headerLen} bytes but the file ends after ${bytes.length - headerAt}`);
  // Versions 1 and 2 are latin1, 3 is UTF-8; the fields that matter are ASCII in all three.
  const text = Buffer.from(bytes.buffer, bytes.byteOffset + headerAt, headerLen).toString(major === 3 ? 'utf8' : 'latin1');
  const header = parseHeader(text, bad);

  const descr = header.descr;
  const order = descr[0];
  const kind = KINDS[descr.slice(1)];
  if (!kind || !'<>|='.includes(order ?? '')) {
    bad(`dtype '${descr}' is not supported; expected one of ${SUPPORTED} (object, string, complex and structured dtypes are refused)`);
  }
  const type = kind!;
  const size = Number(descr.slice(2));
  if (size > 1 && order !== '<') {
    bad(`dtype '${descr}' is ${order === '>' ? 'big-endian' : 'in native byte order'}; send little-endian data ('<${descr.slice(1)}', e.g. arr.astype('<${descr.slice(1)}'))`);
  }
  if (header.fortran) bad('the array is in Fortran order; send a C-ordered array (numpy.ascontiguousarray(arr))');

  let count = 1;
  for (const d of header.shape) count *= d;
  const want = count * size;
  const have = bytes.length - dataAt;
  if (have < want) bad(`the data is truncated: shape (${header.shape.join(', ')}) of ${descr} needs ${want} bytes, the file has ${have}`);
  if (have > want) bad(`the file has ${have - want} bytes after the data of shape (${header.shape.join(', ')}) of ${descr}`);
  const copy = new ArrayBuffer(want);
  new Uint8Array(copy).set(bytes.subarray(dataAt, dataAt + want));
  return { type, descr, shape: header.shape, data: typedView(type, copy, 0, count) };
}

interface Header {
  descr: string;
  fortran: boolean;
  shape: number[];
}

type Token = { k: 'str'; v: string } | { k: 'int'; v: number } | { k: 'name'; v: string } | { k: 'punct'; v: string };

/** `{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }` and nothing else. */
function parseHeader(text: string, bad: (msg: string) => never): Header {
  const tokens = tokenize(text, bad);
  let i = 0;
  const next = (): Token => tokens[i++] ?? bad('the .npy header ends early; expected a dict with descr, fortran_order and shape');
  const expect = (p: string): void => {
    const t = next();
    if (t.k !== 'punct' || t.v !== p) bad(`the .npy header is malformed: expected '${p}'`);
  };
  expect('{');
  const fields = new Map<string, Token | number[]>();
  for (;;) {
    let t = next();
    if (t.k === 'punct' && t.v === '}') break;
    if (t.k !== 'str') bad('the .npy header is malformed: expected a quoted key');
    const key = (t as { v: string }).v;
    if (fields.has(key)) bad(`the .npy header repeats '${key}'`);
    expect(':');
    t = next();
    if (t.k === 'punct' && t.v === '(') {
      const dims: number[] = [];
      for (;;) {
        const d = next();
        if (d.k === 'punct' && d.v === ')') break;
        if (d.k !== 'int') bad(`the .npy header's '${key}' must be a tuple of integers`);
        dims.push((d as { v: number }).v);
        const sep = next();
        if (sep.k === 'punct' && sep.v === ')') break;
        if (sep.k !== 'punct' || sep.v !== ',') bad(`the .npy header's '${key}' must be a tuple of integers`);
      }
      fields.set(key, dims);
    } else if (t.k === 'punct') {
      bad(`the .npy header's '${key}' has a value that is not supported (a list or dict: structured dtypes are refused)`);
    } else {
      fields.set(key, t);
    }
    const sep = next();
    if (sep.k === 'punct' && sep.v === '}') break;
    if (sep.k !== 'punct' || sep.v !== ',') bad('the .npy header is malformed: expected \',\' between fields');
  }
  if (i !== tokens.length) bad('the .npy header has text after its dict');
  const extra = [...fields.keys()].find((k) => k !== 'descr' && k !== 'fortran_order' && k !== 'shape');
  if (extra !== undefined) bad(`the .npy header has an unknown key '${extra}'; expected descr, fortran_order and shape`);
  const descr = fields.get('descr');
  const fortran = fields.get('fortran_order');
  const shape = fields.get('shape');
  if (!descr || Array.isArray(descr) || descr.k !== 'str') bad("the .npy header needs 'descr', a dtype string such as '<f4'");
  if (!fortran || Array.isArray(fortran) || fortran.k !== 'name' || (fortran.v !== 'True' && fortran.v !== 'False')) bad("the .npy header needs 'fortran_order': True or False");
  if (!Array.isArray(shape)) bad("the .npy header needs 'shape', a tuple of integers");
  return { descr: (descr as { v: string }).v, fortran: (fortran as { v: string }).v === 'True', shape: shape as number[] };
}

function tokenize(text: string, bad: (msg: string) => never): Token[] {
  const out: Token[] = [];
  let i = 0;
  while (i < text.length) {
    const c = text[i]!;
    if (c === ' ' || c === '\n' || c === '\t' || c === '\r') { i++; continue; }
    if ('{}()[]:,'.includes(c)) { out.push({ k: 'punct', v: c }); i++; continue; }
    if (c === "'" || c === '"') {
      const end = text.indexOf(c, i + 1);
      if (end < 0) bad('the .npy header has an unterminated string');
      const v = text.slice(i + 1, end);
      if (v.includes('\\')) bad('the .npy header has an escaped string, which a numeric dtype never needs');
      out.push({ k: 'str', v });
      i = end + 1;
      continue;
    }
    const m = /^(?:(\d+)L?|([A-Za-z_]\w*))/.exec(text.slice(i, i + 32));
    if (!m) bad(`the .npy header has an unexpected character ${JSON.stringify(c)}`);
    if (m![1] !== undefined) {
      const v = Number(m![1]);
      if (!Number.isSafeInteger(v)) bad(`the .npy header has a dimension too large (${m![1]})`);
      out.push({ k: 'int', v });
    } else {
      out.push({ k: 'name', v: m![2]! });
    }
    i += m![0].length;
  }
  return out;
}
