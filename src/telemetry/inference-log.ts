import { decodeMessage, decodeRequest, parseMessage } from '../codecs/index.js';
import { tensorJson } from '../codecs/jsonvalues.js';
import { replyFormat } from '../codecs/media.js';
import type { Decoded, ServedBy } from '../codecs/types.js';
import { badRequest, GatewayError } from '../errors.js';
import type { ModelSignature } from '../runtime/onnx/signature.js';
import { bytesPerElement, typedView, type Tensor } from '../runtime/onnx/tensor.js';
import type { InferResult } from '../runtime/types.js';

export interface LogSettings {
  /** Share of requests recorded, 0–1 (a service's log_sample_rate overrides it). */
  sample_rate: number;
  /** Records kept per service; the oldest go first. */
  records_per_service: number;
  /**
   * At most this many records a second per service: below it every sampled request is kept,
   * above it the log thins out, so its cost stays a fixed, small amount however busy the service.
   */
  max_records_per_second: number;
  /** Bytes of request bodies and outputs kept per service (allocated at its first record). */
  bytes_per_service: number;
  /** A record over this size drops its largest input columns, then outputs, and says so. */
  max_record_bytes: number;
}

/** A shadow's answer, kept as tensors (shadow services are few; they may allocate). */
interface ShadowAnswer {
  sig: ModelSignature;
  outputs: Tensor[];
}

/** What the shadows of one sampled request answered: label → answer, error text, or null while running. */
export type ShadowSlot = Map<string, ShadowAnswer | string | null>;

/** A version (and the body format) records refer to by a small number. */
interface Source {
  by: ServedBy;
  /** null: an Image model's version, whose records hold the bodies exchanged, not tensors. */
  sig: ModelSignature | null;
}

/**
 * A copy of a body as it streams past, for the log: up to `limit` bytes, after which it is
 * dropped whole (the record says so) rather than kept cut off.
 */
export class BodyCapture {
  private parts: Uint8Array[] = [];
  private size = 0;
  over = false;

  constructor(private readonly limit: number) {}

  /** Copies the chunk (it may be a view of a buffer that is reused). */
  add(chunk: Uint8Array): void {
    if (this.over || chunk.length === 0) return;
    this.size += chunk.length;
    if (this.size > this.limit) {
      this.over = true;
      this.parts = [];
      return;
    }
    this.parts.push(chunk.slice());
  }

  bytes(): Uint8Array {
    return this.parts.length === 1 ? this.parts[0]! : Buffer.concat(this.parts);
  }
}

/** What a WebSocket message's record gives as its body's type: decoded again as the message was. */
export const MESSAGE_TEXT = 'websocket-message; text';
export const MESSAGE_BINARY = 'websocket-message; binary';

/** Flags of an exchange record: a body over max_record_bytes was not kept. */
const REQUEST_DROPPED = 1;
const RESPONSE_DROPPED = 2;

export type IterationStatus = 'All' | 'RecordLimited' | 'ByteLimited' | 'SchemaChange';

export interface LogPage {
  body: string;
  cursor: string | null;
  status: IterationStatus;
}

export interface LogQuery {
  start: number;
  end: number;
  order: 'Asc' | 'Desc';
  pageSize: number;
  cursor: number | null;
}

/** A page stops growing past this many bytes of JSON (Wallaroo's ByteLimited). */
const PAGE_BYTES = 16 * 1024 * 1024;
const MAX_ID = 128;
const STRING_OUTPUT = 255;

/**
 * Bytes in a ring: request bodies and outputs are copied in, and a record is readable while
 * its bytes have not been written over. Positions are absolute (bytes ever written).
 */
class ByteRing {
  readonly bytes: Uint8Array;
  written = 0;

  constructor(capacity: number) {
    this.bytes = new Uint8Array(capacity);
  }

  put(src: Uint8Array): number {
    const at = this.written;
    const cap = this.bytes.length;
    if (src.length > cap) {
      // Too large to keep: recorded as already overwritten.
      this.written += src.length;
      return at;
    }
    const pos = at % cap;
    const first = Math.min(src.length, cap - pos);
    this.bytes.set(first === src.length ? src : src.subarray(0, first), pos);
    if (first < src.length) this.bytes.set(src.subarray(first), 0);
    this.written += src.length;
    return at;
  }

  kept(at: number, len: number): boolean {
    return len <= this.bytes.length && at >= this.written - this.bytes.length;
  }

  get(at: number, len: number): Uint8Array {
    const cap = this.bytes.length;
    const pos = at % cap;
    if (pos + len <= cap) return this.bytes.slice(pos, pos + len);
    const out = new Uint8Array(len);
    out.set(this.bytes.subarray(pos), 0);
    out.set(this.bytes.subarray(0, len - (cap - pos)), cap - pos);
    return out;
  }
}

/**
 * One service's inference log (SPEC §10). The request path allocates nothing for it that
 * outlives the request: the body and the output rows are copied into a preallocated byte ring,
 * and the rest goes into typed arrays indexed by record. (Records kept as objects were promoted
 * to the old generation and cost ~7 % of throughput.) JSON is made only when the log is read,
 * by decoding the kept body again with the version's codec.
 */
export class ServiceLog {
  sampleRate: number;
  private ring: ByteRing | null = null;
  private readonly n: number;
  private nextSeq = 0;
  private readonly time: Float64Array;
  private readonly bodyAt: Float64Array;
  private readonly bodyLen: Uint32Array;
  private readonly outAt: Float64Array;
  private readonly outLen: Uint32Array;
  private readonly status: Uint16Array;
  private readonly source: Uint16Array;
  private readonly format: Uint16Array;
  private readonly ihLength: Int32Array;
  private readonly elapsed: Float64Array;
  private readonly sources: Source[] = [];
  private readonly sourceIds = new Map<ServedBy, number>();
  private readonly formats: string[] = [];
  private readonly formatIds = new Map<string, number>();
  /** Rare parts, by seq: error texts and shadow answers. */
  private readonly errors = new Map<number, string>();
  private readonly shadows = new Map<number, ShadowSlot>();
  private scratch = new Uint8Array(4096);
  private second = 0;
  private thisSecond = 0;

  constructor(private readonly settings: LogSettings, sampleRate: number) {
    this.sampleRate = sampleRate;
    const n = (this.n = settings.records_per_service);
    this.time = new Float64Array(n);
    this.bodyAt = new Float64Array(n);
    this.bodyLen = new Uint32Array(n);
    this.outAt = new Float64Array(n);
    this.outLen = new Uint32Array(n);
    this.status = new Uint16Array(n);
    this.source = new Uint16Array(n);
    this.format = new Uint16Array(n);
    this.ihLength = new Int32Array(n);
    this.elapsed = new Float64Array(2 * n);
  }

  /** Should this request be recorded (decided before its inputs go to a worker). */
  sample(): boolean {
    const r = this.sampleRate;
    if (r <= 0 || (r < 1 && Math.random() >= r)) return false;
    const second = Math.floor(Date.now() / 1000);
    if (second !== this.second) {
      this.second = second;
      this.thisSecond = 0;
    }
    return this.thisSecond++ < this.settings.max_records_per_second;
  }

  /** Keeps a sampled request's body (valid only now); returns where, for commit(). */
  keepBody(body: Uint8Array): number {
    this.ring ??= new ByteRing(this.settings.bytes_per_service);
    return this.ring.put(body);
  }

  /** Bodies of an exchange are kept up to this size each (see BodyCapture). */
  get maxRecordBytes(): number {
    return this.settings.max_record_bytes;
  }

  /**
   * An Image model's sampled exchange is over: the record keeps the request and response bodies
   * as they passed (the proxy streams them, so they were copied on the way) and the answer's type.
   */
  commitExchange(
    requestId: string, request: BodyCapture, contentType: string, response: BodyCapture, responseType: string,
    by: ServedBy, status: number, elapsedNs: number, error: string | null,
  ): void {
    const body = request.over ? EMPTY : request.bytes();
    const answer = response.over ? EMPTY : response.bytes();
    const seq = this.nextRecord();
    const i = seq % this.n;
    this.time[i] = Date.now();
    this.bodyAt[i] = this.keepBody(body);
    this.bodyLen[i] = body.length;
    this.status[i] = status;
    this.source[i] = this.sourceId(by, null);
    this.format[i] = this.formatId(contentType);
    this.ihLength[i] = -1;
    this.elapsed[2 * i] = 0;
    this.elapsed[2 * i + 1] = elapsedNs;
    // [u8 idLen][id][u8 flags][u16 typeLen][type][answer]
    const type = Buffer.from(responseType.slice(0, 0xffff), 'latin1');
    const size = 4 + Math.min(requestId.length, MAX_ID) + type.length + answer.length;
    this.room(size);
    const b = this.scratch;
    let p = writeId(b, 0, requestId);
    b[p++] = (request.over ? REQUEST_DROPPED : 0) | (response.over ? RESPONSE_DROPPED : 0);
    b[p++] = type.length & 0xff;
    b[p++] = type.length >>> 8;
    b.set(type, p);
    p += type.length;
    b.set(answer, p);
    this.outAt[i] = this.ring!.put(b.subarray(0, size));
    this.outLen[i] = size;
    if (error !== null) this.errors.set(seq, error);
  }

  /** The next record's sequence number; what its slot held before is forgotten. */
  private nextRecord(): number {
    const seq = this.nextSeq++;
    if (seq >= this.n) {
      this.errors.delete(seq - this.n);
      this.shadows.delete(seq - this.n);
    }
    return seq;
  }

  /** The reply went out: the record joins the log. */
  commit(
    requestId: string, bodyAt: number, bodyLen: number, contentType: string, ihLength: number,
    by: ServedBy, sig: ModelSignature, status: number, result: InferResult | null, rows: number, error: string | null, shadows: ShadowSlot | null,
  ): void {
    const seq = this.nextRecord();
    const i = seq % this.n;
    this.time[i] = Date.now();
    this.bodyAt[i] = bodyAt;
    this.bodyLen[i] = bodyLen;
    this.status[i] = status;
    this.source[i] = this.sourceId(by, sig);
    this.format[i] = this.formatId(contentType);
    this.ihLength[i] = ihLength;
    this.elapsed[2 * i] = result ? result.queueNs : 0;
    this.elapsed[2 * i + 1] = result ? result.runNs : 0;
    const out = this.packOutputs(requestId, result, sig, rows);
    this.outAt[i] = this.ring!.put(this.scratch.subarray(0, out));
    this.outLen[i] = out;
    if (error !== null) this.errors.set(seq, error);
    if (shadows) this.shadows.set(seq, shadows);
  }

  /** A page of records; async because a multipart body's images decode off the main thread. */
  async query(q: LogQuery): Promise<LogPage> {
    const oldest = Math.max(0, this.nextSeq - this.n);
    const newest = this.nextSeq - 1;
    const step = q.order === 'Asc' ? 1 : -1;
    let seq = q.cursor ?? (q.order === 'Asc' ? oldest : newest);
    seq = q.order === 'Asc' ? Math.max(seq, oldest) : Math.min(seq, newest);
    let body = '[';
    let count = 0;
    let schema: string | null = null;
    for (; seq >= oldest && seq <= newest; seq += step) {
      // Records may have been written over while an earlier one rendered (a multipart body waits):
      // a slot now holding a newer record is not this one.
      if (seq < this.nextSeq - this.n) {
        if (step < 0) break;
        continue;
      }
      const i = seq % this.n;
      const t = this.time[i]!;
      if (t < q.start || t >= q.end || !this.kept(i)) continue;
      if (count === q.pageSize) return { body: body + ']', cursor: String(seq), status: 'RecordLimited' };
      let record: Rendered;
      try {
        const rendered = this.render(seq);
        record = rendered instanceof Promise ? await rendered : rendered;
      } catch {
        // A record that cannot be read back is left out; the page is not lost for it.
        continue;
      }
      if (schema !== null && record.schema !== schema) return { body: body + ']', cursor: String(seq), status: 'SchemaChange' };
      schema = record.schema;
      if (count > 0 && body.length + record.text.length > PAGE_BYTES) return { body: body + ']', cursor: String(seq), status: 'ByteLimited' };
      body += (count ? ',' : '') + record.text;
      count++;
    }
    return { body: body + ']', cursor: null, status: 'All' };
  }

  // ---- the request path's part ----

  /** A version's records may come with two signatures: its model's, and a stream's client view (WebSocket). */
  private sourceId(by: ServedBy, sig: ModelSignature | null): number {
    let id = this.sourceIds.get(by);
    if (id === undefined || this.sources[id]!.sig !== sig) {
      id = this.sources.findIndex((s) => s.by === by && s.sig === sig);
      if (id < 0) id = this.sources.push({ by, sig }) - 1;
      this.sourceIds.set(by, id);
    }
    return id;
  }

  private formatId(contentType: string): number {
    let id = this.formatIds.get(contentType);
    if (id === undefined) {
      id = this.formats.push(contentType) - 1;
      this.formatIds.set(contentType, id);
    }
    return id;
  }

  private room(n: number): void {
    if (this.scratch.length >= n) return;
    const next = new Uint8Array(Math.max(n, this.scratch.length * 2));
    next.set(this.scratch);
    this.scratch = next;
  }

  /** [u8 idLen][id][u8 outputs] then per output [u8 rank | 255 for text][i32 dims][u32 bytes][bytes], into scratch. */
  private packOutputs(requestId: string, result: InferResult | null, sig: ModelSignature, rows: number): number {
    this.room(2 + Math.min(requestId.length, MAX_ID));
    const s = this.scratch;
    let p = writeId(s, 0, requestId);
    const outputs = result ? result.outputs : [];
    s[p++] = outputs.length;
    for (let o = 0; o < outputs.length; o++) {
      const t = outputs[o]!;
      const batched = !result!.whole && sig.outputs[o]!.batched;
      const dims = t.dims;
      const rank = dims.length;
      let rowElems = 1;
      for (let k = 1; k < rank; k++) rowElems *= dims[k]!;
      const first = batched ? rows : rank > 0 ? dims[0]! : 1;
      const from = batched ? result!.offset * rowElems : 0;
      const count = rank === 0 ? 1 : first * rowElems;
      if (t.type === 'string') {
        const text = Buffer.from(tensorJson(t, rank ? [first, ...dims.slice(1)] : [], from));
        this.room(p + 5 + text.length);
        this.scratch[p++] = STRING_OUTPUT;
        p = writeU32(this.scratch, p, text.length);
        this.scratch.set(text, p);
        p += text.length;
        continue;
      }
      const bpe = bytesPerElement(t.type);
      const data = t.data as Exclude<Tensor['data'], unknown[]>;
      const bytes = count * bpe;
      this.room(p + 1 + 4 * rank + 4 + bytes);
      this.scratch[p++] = rank;
      for (let k = 0; k < rank; k++) p = writeU32(this.scratch, p, k === 0 ? first : dims[k]!);
      p = writeU32(this.scratch, p, bytes);
      this.scratch.set(new Uint8Array(data.buffer, data.byteOffset + from * bpe, bytes), p);
      p += bytes;
    }
    return p;
  }

  // ---- reading ----

  private kept(i: number): boolean {
    const r = this.ring;
    return r !== null && r.kept(this.bodyAt[i]!, this.bodyLen[i]!) && r.kept(this.outAt[i]!, this.outLen[i]!);
  }

  /**
   * A record as JSON. Everything is read from the arrays and the ring before any wait: a multipart
   * body (whose images decode in a worker) is the only one that waits, and the ring may be
   * written over meanwhile.
   */
  private render(seq: number): Rendered | Promise<Rendered> {
    const i = seq % this.n;
    const ring = this.ring!;
    const src = this.sources[this.source[i]!]!;
    const packed = ring.get(this.outAt[i]!, this.outLen[i]!);
    const body = ring.get(this.bodyAt[i]!, this.bodyLen[i]!);
    const contentType = this.formats[this.format[i]!]!;
    const sig = src.sig;
    if (sig === null) return this.renderExchange(seq, packed, body, contentType, src.by);
    const head = this.recordHead(seq, src.by);
    const shadows = this.shadows.get(seq);
    // A body that failed to decode was answered with an error; the record says so without inputs.
    const inputsOf = (d: Decoded | null): [string, string][] => {
      try {
        return d ? d.request.inputs.map((t, k) => [sig.inputs[k]!.name, tensorJson(t, t.dims, 0)]) : [];
      } catch {
        return [];
      }
    };
    let decoded: Decoded | Promise<Decoded> | null;
    try {
      decoded = contentType === MESSAGE_TEXT || contentType === MESSAGE_BINARY
        ? decodeMessage(parseMessage(body, contentType === MESSAGE_BINARY), contentType === MESSAGE_BINARY, sig)
        : decodeRequest(body, { contentType, inferenceHeaderLength: this.ihLength[i]! }, sig);
    } catch {
      decoded = null;
    }
    if (decoded instanceof Promise) return decoded.then(inputsOf, () => inputsOf(null)).then((inputs) => this.renderTensors(head, packed, sig, src.by, inputs, shadows));
    return this.renderTensors(head, packed, sig, src.by, inputsOf(decoded), shadows);
  }

  private renderTensors(head: RecordHead, packed: Uint8Array, sig: ModelSignature, by: ServedBy, inputs: [string, string][], shadows: ShadowSlot | undefined): Rendered {
    const { requestId, outputs } = unpackOutputs(packed, sig);
    const shadowCols: [string, string][] = shadows
      ? [...shadows].map(([label, a]) => [label, a === null ? 'null' : typeof a === 'string' ? JSON.stringify({ error: a }) : columnsObject(a.outputs.map((t, k) => [a.sig.outputs[k]!.name, tensorJson(t, t.dims, 0)]))])
      : [];
    if (outputs.length && by.modelSplit) outputs.push(['_model_split', `[${JSON.stringify({ name: by.modelName, version: by.modelVersion, sha: by.modelSha })}]`]);
    const dropped = shrink(inputs, outputs, shadowCols, this.settings.max_record_bytes);
    let text = recordText(head, requestId, inputs, outputs, dropped);
    for (const [label, v] of shadowCols) text += `,${JSON.stringify(label)}:${v}`;
    const schema = `${sig.inputs.map((x) => x.name).join(',')}|${sig.outputs.map((x) => x.name).join(',')}|${shadows ? [...shadows.keys()].join(',') : ''}`;
    return { text: text + '}', schema };
  }

  /** An Image model's record: `in.body` and `out.body` are the bodies as JSON where they are JSON, else text or base64. */
  private renderExchange(seq: number, packed: Uint8Array, body: Uint8Array, contentType: string, by: ServedBy): Rendered {
    const requestId = readId(packed);
    let p = 1 + requestId.length;
    const flags = packed[p++]!;
    const typeLen = packed[p]! | (packed[p + 1]! << 8);
    p += 2;
    const responseType = Buffer.from(packed.subarray(p, p + typeLen)).toString('latin1');
    p += typeLen;
    const inputs: [string, string][] = flags & REQUEST_DROPPED ? [] : [['body', bodyJson(body, contentType)]];
    const outputs: [string, string][] = flags & RESPONSE_DROPPED ? [] : [['body', bodyJson(packed.subarray(p), responseType)]];
    const dropped = [...(flags & REQUEST_DROPPED ? ['in.body'] : []), ...(flags & RESPONSE_DROPPED ? ['out.body'] : []), ...shrink(inputs, outputs, [], this.settings.max_record_bytes)];
    return { text: recordText(this.recordHead(seq, by), requestId, inputs, outputs, dropped) + '}', schema: 'body|body|' };
  }

  /** What a record's text takes from the arrays (read before any wait). */
  private recordHead(seq: number, by: ServedBy): RecordHead {
    const i = seq % this.n;
    return { time: this.time[i]!, by, elapsed: [this.elapsed[2 * i]!, this.elapsed[2 * i + 1]!], status: this.status[i]!, error: this.errors.get(seq) };
  }
}

interface Rendered {
  text: string;
  schema: string;
}

interface RecordHead {
  time: number;
  by: ServedBy;
  elapsed: [number, number];
  status: number;
  error: string | undefined;
}

/** A record as JSON, without its closing brace (shadow columns may follow). */
function recordText(h: RecordHead, requestId: string, inputs: [string, string][], outputs: [string, string][], dropped: string[]): string {
  const metadata = {
    last_model: JSON.stringify({ model_name: h.by.modelName, model_sha: h.by.modelSha }),
    pipeline_version: h.by.serviceVersion,
    elapsed: h.elapsed,
    dropped,
    request_id: requestId,
    status: h.status,
    ...(h.error !== undefined ? { error: h.error } : {}),
  };
  return `{"time":${h.time},"in":${columnsObject(inputs)},"out":${columnsObject(outputs)},"check_failures":[],"metadata":${JSON.stringify(metadata)}`;
}

const EMPTY = new Uint8Array(0);
const UTF8 = new TextDecoder('utf-8', { fatal: true });

/**
 * A body as a log value: its JSON where it is JSON (by type, or untyped), its text where it is
 * text, and `{"base64": ...}` for anything else; an empty body is null.
 */
function bodyJson(bytes: Uint8Array, contentType: string): string {
  if (bytes.length === 0) return 'null';
  let text: string;
  try {
    text = UTF8.decode(bytes);
  } catch {
    return JSON.stringify({ base64: Buffer.from(bytes).toString('base64') });
  }
  if (contentType === '' || /[/+]json\b/i.test(contentType)) {
    try {
      return JSON.stringify(JSON.parse(text));
    } catch { /* typed as JSON but not: kept as text */ }
  }
  return JSON.stringify(text);
}

function writeU32(b: Uint8Array, p: number, v: number): number {
  b[p] = v & 0xff;
  b[p + 1] = (v >>> 8) & 0xff;
  b[p + 2] = (v >>> 16) & 0xff;
  b[p + 3] = (v >>> 24) & 0xff;
  return p + 4;
}

/** A record's request id at the start of its packed bytes: [u8 length][ASCII], at most MAX_ID. */
function writeId(b: Uint8Array, p: number, requestId: string): number {
  const len = Math.min(requestId.length, MAX_ID);
  b[p++] = len;
  for (let k = 0; k < len; k++) b[p++] = requestId.charCodeAt(k) & 0x7f;
  return p;
}

const readId = (b: Uint8Array): string => String.fromCharCode(...b.subarray(1, 1 + b[0]!));

const readU32 = (b: Uint8Array, p: number): number => (b[p]! | (b[p + 1]! << 8) | (b[p + 2]! << 16) | (b[p + 3]! << 24)) >>> 0;

function unpackOutputs(b: Uint8Array, sig: ModelSignature): { requestId: string; outputs: [string, string][] } {
  const requestId = readId(b);
  let p = 1 + requestId.length;
  const n = b[p++]!;
  const outputs: [string, string][] = [];
  for (let o = 0; o < n; o++) {
    const spec = sig.outputs[o]!;
    const rank = b[p++]!;
    if (rank === STRING_OUTPUT) {
      const len = readU32(b, p);
      p += 4;
      outputs.push([spec.name, Buffer.from(b.buffer, b.byteOffset + p, len).toString('utf8')]);
      p += len;
      continue;
    }
    const dims: number[] = [];
    for (let k = 0; k < rank; k++, p += 4) dims.push(readU32(b, p));
    const bytes = readU32(b, p);
    p += 4;
    const type = spec.type as Exclude<Tensor['type'], 'string'>;
    const copy = b.slice(p, p + bytes);
    p += bytes;
    const t: Tensor = { type, dims, data: typedView(type, copy.buffer, 0, bytes / bytesPerElement(type)) };
    outputs.push([spec.name, tensorJson(t, dims, 0)]);
  }
  return { requestId, outputs };
}

const columnsObject = (cols: [string, string][]): string => `{${cols.map(([k, v]) => `${JSON.stringify(k)}:${v}`).join(',')}}`;

/** Over the size limit, the largest input columns go first, then the largest outputs; returns what went. */
function shrink(inputs: [string, string][], outputs: [string, string][], shadows: [string, string][], maxBytes: number): string[] {
  const dropped: string[] = [];
  const size = (): number => [...inputs, ...outputs, ...shadows].reduce((n, [k, v]) => n + k.length + v.length + 4, 256);
  for (const [cols, prefix] of [[inputs, 'in'], [outputs, 'out']] as const) {
    while (size() > maxBytes && cols.length > 0) {
      let largest = 0;
      for (let i = 1; i < cols.length; i++) if (cols[i]![1].length > cols[largest]![1].length) largest = i;
      dropped.push(`${prefix}.${cols[largest]![0]}`);
      cols.splice(largest, 1);
    }
  }
  return dropped;
}

/** A shadow version's answer for a sampled request. */
export function recordShadow(slot: ShadowSlot, label: string, sig: ModelSignature, result: InferResult | null, rows: number, error: string | null): void {
  if (!result) {
    slot.set(label, error ?? 'no answer');
    return;
  }
  // The shadow's batch outputs are cut to this request's rows now: the batch's arrays are not kept.
  const outputs = result.outputs.map((t, k): Tensor => {
    const batched = !result.whole && sig.outputs[k]!.batched;
    if (!batched) return t;
    let rowElems = 1;
    for (let d = 1; d < t.dims.length; d++) rowElems *= t.dims[d]!;
    return { type: t.type, dims: [rows, ...t.dims.slice(1)], data: t.data.slice(result.offset * rowElems, (result.offset + rows) * rowElems) as Tensor['data'] };
  });
  slot.set(label, { sig, outputs });
}

/** Date.parse rolls an impossible day over ("02-30" is March 2nd); RFC 3339 does not have it. */
function realDate(v: string): boolean {
  const [y, m, d] = v.slice(0, 10).split('-').map(Number) as [number, number, number];
  const [hh, mm, ss] = [Number(v.slice(11, 13)), Number(v.slice(14, 16)), v[16] === ':' ? Number(v.slice(17, 19)) : 0];
  return m >= 1 && m <= 12 && d >= 1 && d <= new Date(Date.UTC(y, m, 0)).getUTCDate() && hh <= 23 && mm <= 59 && ss <= 60;
}

/** The log query's body (Wallaroo get_logs): start_time, end_time, order, page_size, cursor. */
export function parseLogQuery(b: Record<string, unknown>): LogQuery {
  const known = new Set(['start_time', 'end_time', 'order', 'page_size', 'cursor']);
  const extra = Object.keys(b).find((k) => !known.has(k));
  if (extra) throw badRequest(`unknown field '${extra}'; expected ${[...known].join(', ')}`, 'BadQuery');
  const time = (k: string, dflt: number): number => {
    const v = b[k];
    if (v === undefined || v === null) return dflt;
    const t = typeof v === 'string' && /^\d{4}-\d\d-\d\dT\d\d:\d\d(:\d\d(\.\d+)?)?(Z|[+-]\d\d:\d\d)$/i.test(v) && realDate(v) ? Date.parse(v) : NaN;
    if (Number.isNaN(t)) throw badRequest(`'${k}' must be an RFC 3339 time such as "2026-11-22T10:00:00Z", got ${JSON.stringify(v)}`, 'BadQuery');
    return t;
  };
  const start = time('start_time', 0);
  const end = time('end_time', Number.POSITIVE_INFINITY);
  if (start > end) throw badRequest(`'start_time' is after 'end_time'`, 'BadQuery');
  const order = b['order'] ?? 'Desc';
  if (order !== 'Asc' && order !== 'Desc') throw badRequest(`'order' must be "Asc" or "Desc", got ${JSON.stringify(order)}`, 'BadQuery');
  const pageSize = b['page_size'] ?? 1000;
  if (typeof pageSize !== 'number' || !Number.isInteger(pageSize) || pageSize < 1 || pageSize > 100_000) {
    throw badRequest(`'page_size' must be an integer from 1 to 100000, got ${JSON.stringify(pageSize)}`, 'BadQuery');
  }
  let cursor: number | null = null;
  if (b['cursor'] !== undefined && b['cursor'] !== null) {
    if (typeof b['cursor'] !== 'string' || !/^\d{1,15}$/.test(b['cursor'])) {
      throw badRequest(`'cursor' must be the x-iteration-cursor header of the previous page, got ${JSON.stringify(b['cursor'])}`, 'BadQuery');
    }
    cursor = Number(b['cursor']);
  }
  return { start, end, order, pageSize, cursor };
}

/** The page's encoding by Accept: pandas-records JSON, or the same records as an Arrow table (file or stream). */
export function checkLogAccept(accept: string): 'json' | 'arrow-file' | 'arrow-stream' {
  const f = replyFormat(accept, 'json');
  const json = accept === '' || /application\/json|\*\/\*|application\/\*/i.test(accept);
  if (f === 'arrow-file' || f === 'arrow-stream' || (f === 'json' && json)) return f;
  if (json) return 'json';
  throw new GatewayError(406, 'NotAcceptable', `the inference log is served as application/json (pandas records) or as an Arrow table (application/vnd.apache.arrow.file or .stream); Accept was '${accept}'`);
}
