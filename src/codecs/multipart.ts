import uWS from 'uWebSockets.js';
import { badRequest } from '../errors.js';
import type { RawParts } from '../runtime/onnx/protocol.js';
import type { IoSpec, ModelSignature } from '../runtime/onnx/signature.js';
import { describeDims } from '../runtime/onnx/signature.js';
import type { Tensor } from '../runtime/onnx/tensor.js';
import type { InferRequest } from '../runtime/types.js';
import { bindColumns } from './bind.js';
import { imageTensor, IMAGE_FORMATS, MAX_IMAGES, type ImagePart } from './image.js';
import { mediaOf } from './media.js';
import { modelArts } from './modelarts.js';
import { NPY_DESCR, parseNpy } from './npy.js';
import type { Decoded, WireFormat } from './types.js';
import { jsonText } from './utf8.js';

/**
 * multipart/form-data (SPEC §5.3): `.npy` and JSON parts named after inputs, image parts through
 * the model's preprocess.image, anything else to the preprocess hook as {field: {filename: bytes}}.
 * Images decode asynchronously; what is kept of the body is copied before this returns.
 */

interface Part {
  /** "part 'tensor'", "part 'images' (cat.png)": how messages name it. */
  where: string;
  name: string;
  filename: string | null;
  /** The part's media type, lower case, without parameters ('' when absent). */
  media: string;
  /** A copy: getParts' data are views of the body, which uWebSockets.js reuses. */
  bytes: Uint8Array;
}

type Source =
  | { kind: 'npy'; part: Part }
  | { kind: 'json'; part: Part; value: unknown }
  | { kind: 'image'; part: Part }
  | { kind: 'other'; part: Part; why: string };

const IMAGE_EXTENSIONS: ReadonlySet<string> = new Set([
  'jpg', 'jpeg', 'jpe', 'jfif', 'png', 'gif', 'webp', 'tif', 'tiff', 'avif', 'heic', 'heif', 'bmp',
]);

/** A client sending more parts than this is not sending a model request. */
const MAX_PARTS = 1024;

export function decodeMultipart(body: Uint8Array, contentType: string, sig: ModelSignature, reply: WireFormat): Decoded | Promise<Decoded> {
  const parts = readParts(body, contentType);
  const sources = parts.map((p) => classify(p, sig));
  const others = sources.filter((s): s is Extract<Source, { kind: 'other' }> => s.kind === 'other');
  if (others.length) {
    // As ModelArts does: once the hook is needed, it sees the whole form, not what was left over.
    if (sig.hooks.preprocess) return { codec: modelArts, request: { inputs: [], rows: 1, parts: rawParts(parts) }, state: '', reply };
    throw untaken(others, sig);
  }
  const images = sources.filter((s) => s.kind === 'image').map((s): ImagePart => ({ where: s.part.where, bytes: s.part.bytes }));
  if (images.length === 0) return { codec: modelArts, request: assemble(sig, sources, null), state: '', reply };
  const pre = sig.image!;
  // Every check that needs no pixels runs before decoding: a request refused anyway costs no image work.
  assemble(sig, sources, { input: pre.input, rows: images.length, where: images[0]!.where }, true);
  if (images.length > MAX_IMAGES) throw badRequest(`${images.length} image parts; at most ${MAX_IMAGES} are taken per request`, 'TooLarge');
  const spec = sig.inputs[sig.inputIndex.get(pre.input)!]!;
  return imageTensor(images, pre, spec).then((t) => ({
    codec: modelArts,
    request: assemble(sig, sources, { input: pre.input, rows: images.length, where: images[0]!.where, tensor: t }),
    state: '',
    reply,
  }));
}

function readParts(body: Uint8Array, contentType: string): Part[] {
  const boundary = boundaryOf(contentType);
  // uWebSockets.js reads only an unquoted, lower-case `boundary=` as the first parameter, so it gets exactly that.
  const raw = uWS.getParts(body, `multipart/form-data; boundary=${boundary}`);
  if (!raw || raw.length === 0) {
    throw badRequest(`the multipart body has no parts: it must hold parts that start with '--${boundary}' and end with '--${boundary}--' (the boundary of the Content-Type)`, 'Empty');
  }
  if (raw.length > MAX_PARTS) throw badRequest(`the multipart body has ${raw.length} parts; at most ${MAX_PARTS} are taken`, 'TooLarge');
  return raw.map((p, i) => {
    const filename = p.filename ?? null;
    if (p.name === undefined || p.name === '') {
      throw badRequest(`part ${i + 1}${filename ? ` (${filename})` : ''} has no name; every part needs Content-Disposition: form-data; name="..."`, 'BadMultipart');
    }
    const where = `part '${p.name}'${filename ? ` (${filename})` : ''}`;
    return { where, name: p.name, filename, media: mediaOf(p.type ?? ''), bytes: new Uint8Array(p.data.slice(0)) };
  });
}

/** The boundary parameter, quoted or not, in any case (RFC 2046: 1–70 characters of a restricted set). */
function boundaryOf(contentType: string): string {
  const media = mediaOf(contentType);
  if (media !== 'multipart/form-data') {
    throw badRequest(`Content-Type '${media}' is not multipart/form-data`, 'BadMultipart');
  }
  const m = /;\s*boundary\s*=\s*(?:"([^"]*)"|([^;\s]*))/i.exec(contentType);
  const boundary = m ? (m[1] ?? m[2] ?? '') : '';
  if (boundary === '') {
    throw badRequest(`Content-Type multipart/form-data has no boundary; send e.g. 'multipart/form-data; boundary=----x' (clients such as curl -F and requests' files= set it)`, 'BadMultipart');
  }
  if (boundary.length > 70 || !/^[0-9A-Za-z'()+_,\-./:=? ]*[0-9A-Za-z'()+_,\-./:=?]$/.test(boundary)) {
    throw badRequest(`the multipart boundary ${JSON.stringify(boundary.slice(0, 80))} is not valid: 1–70 letters, digits or '()+_,-./:=? (RFC 2046)`, 'BadMultipart');
  }
  return boundary;
}

function extension(filename: string | null): string {
  if (!filename) return '';
  const dot = filename.lastIndexOf('.');
  return dot < 0 ? '' : filename.slice(dot + 1).toLowerCase();
}

/** What takes a part. Nothing is decoded yet (a part may still go raw to the hook), except JSON sniffing of untyped text. */
function classify(part: Part, sig: ModelSignature): Source {
  const isInput = sig.inputIndex.has(part.name);
  const ext = extension(part.filename);
  const { media } = part;
  if (isInput && (ext === 'npy' || media === 'application/x-npy' || media === 'application/npy')) return { kind: 'npy', part };
  if (media.startsWith('image/') || IMAGE_EXTENSIONS.has(ext)) {
    return sig.image ? { kind: 'image', part } : { kind: 'other', part, why: 'an image, but the model has no preprocess.image in its config.json' };
  }
  if (isInput && (media === 'application/json' || media.endsWith('+json') || ext === 'json')) {
    // Declared JSON: a parse error is the client's to hear about, unless the hook takes the form.
    const value = tryJson(part.bytes);
    if (value !== NOT_JSON) return { kind: 'json', part, value };
    if (sig.hooks.preprocess) return { kind: 'other', part, why: 'not JSON' };
    throw badRequest(`${part.where} is declared JSON but is not valid JSON: ${jsonError(part.bytes)}; send the input's rows as a JSON array`, 'BadJson');
  }
  if (isInput && part.filename === null && (media === '' || media === 'text/plain')) {
    const value = tryJson(part.bytes);
    if (value !== NOT_JSON) return { kind: 'json', part, value };
    if (sig.hooks.preprocess) return { kind: 'other', part, why: 'not JSON' };
    throw badRequest(`${part.where} is named after input '${part.name}' but is not JSON (${jsonError(part.bytes)}); send its rows as a JSON array, or a .npy file`, 'BadJson');
  }
  if (!isInput) return { kind: 'other', part, why: `no model input is named '${part.name}'` };
  return { kind: 'other', part, why: `a ${part.filename ? `file of type ${media || 'unknown'}` : `part of type ${media}`} that is neither .npy nor JSON` };
}

const NOT_JSON = Symbol('not JSON');

function tryJson(bytes: Uint8Array): unknown {
  try {
    return JSON.parse(jsonText(bytes));
  } catch {
    return NOT_JSON;
  }
}

function jsonError(bytes: Uint8Array): string {
  try {
    JSON.parse(jsonText(bytes));
    return 'parsed';
  } catch (err) {
    return (err as Error).message.slice(0, 200);
  }
}

function untaken(others: Array<Extract<Source, { kind: 'other' }>>, sig: ModelSignature) {
  const list = others.slice(0, 5).map((o) => `${o.part.where}: ${o.why}`).join('; ') + (others.length > 5 ? `; and ${others.length - 5} more` : '');
  const inputs = sig.inputs.map((s) => `'${s.name}'`).join(', ');
  const images = sig.image ? `, image files (${IMAGE_FORMATS}) feed input '${sig.image.input}'` : '';
  return badRequest(
    `nothing could take ${others.length === 1 ? 'this part' : 'these parts'}: ${list}. A part named after a model input (${inputs}) takes a .npy file (application/x-npy) or JSON rows${images}; the model has no customize_service.js preprocess hook to take other parts`,
    'UnknownPart',
  );
}

/** `{field: {filename: bytes}}`; a part without a file name is keyed by its field name. */
function rawParts(parts: readonly Part[]): RawParts {
  // Null prototypes: a field named '__proto__' is a key like any other.
  const out = Object.create(null) as RawParts;
  for (const p of parts) {
    const files = out[p.name] ?? (out[p.name] = Object.create(null) as Record<string, Uint8Array>);
    const key = p.filename ?? p.name;
    if (key in files) throw badRequest(`${p.where} repeats the file name '${key}' of field '${p.name}'; give each file of a field its own name`, 'DuplicatePart');
    files[key] = p.bytes;
  }
  return out;
}

interface ImageRows {
  input: string;
  rows: number;
  where: string;
  tensor?: Tensor;
}

/**
 * Every input from exactly one source, the same rows for all. With `dryRun` the images are not
 * decoded yet: only which inputs are covered and the row counts are checked.
 */
function assemble(sig: ModelSignature, sources: readonly Source[], images: ImageRows | null, dryRun = false): InferRequest {
  const given = new Map<string, { where: string; tensor: Tensor | null; rows: number }>();
  const put = (name: string, where: string, tensor: Tensor | null, rows: number): void => {
    const prev = given.get(name);
    if (prev) throw badRequest(`input '${name}' is given by both ${prev.where} and ${where}; send each input once`, 'DuplicateInput');
    given.set(name, { where, tensor, rows });
  };
  if (images) put(images.input, `${images.rows} image part${images.rows > 1 ? 's' : ''} (${images.where}…)`, images.tensor ?? null, images.rows);
  for (const s of sources) {
    if (s.kind === 'image' || s.kind === 'other') continue;
    const spec = sig.inputs[sig.inputIndex.get(s.part.name)!]!;
    if (dryRun) {
      put(spec.name, s.part.where, null, -1);
      continue;
    }
    const t = s.kind === 'npy' ? npyTensor(s.part, spec) : jsonTensor(s.part, s.value, spec, sig);
    put(spec.name, s.part.where, t, spec.batched ? t.dims[0]! : 1);
  }
  const missing = sig.inputs.filter((s) => !given.has(s.name));
  if (missing.length) {
    const how = (s: IoSpec): string => `'${s.name}' (${s.type} ${describeDims(s.dims)}${sig.image?.input === s.name ? ', or image files' : ''})`;
    throw badRequest(`missing input${missing.length > 1 ? 's' : ''} ${missing.map(how).join(', ')}: send a part named after each input with a .npy file or JSON rows`, 'MissingInput');
  }
  let rows = -1;
  let rowsFrom = '';
  const inputs: Tensor[] = [];
  for (const spec of sig.inputs) {
    const g = given.get(spec.name)!;
    inputs.push(g.tensor!);
    if (!spec.batched || g.rows < 0) continue;
    if (rows < 0) {
      rows = g.rows;
      rowsFrom = g.where;
    } else if (g.rows !== rows) {
      throw badRequest(`${g.where} gives ${g.rows} row${g.rows === 1 ? '' : 's'} but ${rowsFrom} gives ${rows}; every input needs the same number of rows`, 'WrongShape');
    }
  }
  return { inputs, rows: rows < 0 ? 1 : rows };
}

function npyTensor(part: Part, spec: IoSpec): Tensor {
  const arr = parseNpy(part.bytes, part.where);
  if (spec.type === 'string') {
    throw badRequest(`${part.where}: input '${spec.name}' takes strings, which a .npy part cannot carry; send its rows as JSON`, 'WrongType');
  }
  if (arr.type !== spec.type) {
    const want = NPY_DESCR[spec.type];
    throw badRequest(`${part.where}: dtype '${arr.descr}' (${arr.type}) does not match input '${spec.name}', which takes ${spec.type} ('${want}'); convert with arr.astype('${want}')`, 'WrongType');
  }
  const shape = arr.shape;
  if (shape.length !== spec.dims.length || spec.dims.some((d, k) => d >= 0 && d !== shape[k])) {
    throw badRequest(`${part.where}: shape (${shape.join(', ')}${shape.length === 1 ? ',' : ''}) does not fit input '${spec.name}' of shape ${describeDims(spec.dims)} (N: any size, dimension 0 counts rows)`, 'WrongShape');
  }
  if (spec.batched && shape[0] === 0) throw badRequest(`${part.where}: the array has no rows (shape (${shape.join(', ')})); send at least one`, 'Empty');
  return { type: spec.type, dims: shape, data: arr.data };
}

/** JSON rows of one input, checked as a records field is (bind.ts), the part standing for the record. */
function jsonTensor(part: Part, value: unknown, spec: IoSpec, sig: ModelSignature): Tensor {
  if (!Array.isArray(value)) {
    throw badRequest(`${part.where}: expected a JSON array of rows of input '${spec.name}' (${spec.type} ${describeDims(spec.dims)}), got ${value === null ? 'null' : typeof value}`, 'WrongShape');
  }
  // One input's view of the signature, so bind.ts checks and packs this part alone.
  const one: ModelSignature = { ...sig, inputs: [spec], inputIndex: new Map([[spec.name, 0]]), features: null, featureIndex: null };
  return bindColumns(one, [spec.name], value.length, (r) => value[r], `${part.where} row`).inputs[0]!;
}
