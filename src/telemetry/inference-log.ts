import type { ServedBy } from '../codecs/types.js';
import { tensorJson } from '../codecs/jsonvalues.js';
import { badRequest, GatewayError } from '../errors.js';
import type { ModelSignature } from '../runtime/onnx/signature.js';
import type { Tensor } from '../runtime/onnx/tensor.js';
import type { InferRequest, InferResult } from '../runtime/types.js';

export interface LogSettings {
  /** Share of requests recorded, 0–1 (a service's log_sample_rate overrides it). */
  sample_rate: number;
  /** Records kept per service; the oldest go first. */
  records_per_service: number;
  /** A record over this size drops its largest input columns, then outputs, and says so. */
  max_record_bytes: number;
}

/** What a version answered, as the log keeps it: the batch's outputs and this request's rows in them. */
interface Answer {
  by: ServedBy;
  sig: ModelSignature;
  outputs: Tensor[];
  offset: number;
  rows: number;
  whole: boolean;
}

/** One request in the log. Shadow answers arrive after the reply and are filled in then. */
export interface LogEntry {
  seq: number;
  time: number;
  requestId: string;
  status: number;
  error: string | null;
  /** The request's inputs, copied before they were handed to a worker. */
  inputs: Tensor[] | null;
  inputSig: ModelSignature;
  answer: Answer | null;
  by: ServedBy;
  elapsedNs: [number, number];
  split: boolean;
  /** `out_<version>` → a shadow's answer, the error it gave, or null while it runs. */
  shadows: Map<string, Answer | string | null> | null;
  /** The shadow label of the version that answered, when a shadow version drew the request itself. */
  ownShadow: string | null;
}

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

/**
 * One service's inference log (SPEC §10): a ring of the latest records in memory. The request
 * path only copies the sampled request's inputs and keeps references to its outputs; turning
 * them into JSON waits until someone reads the log.
 */
export class ServiceLog {
  private readonly ring: (LogEntry | undefined)[];
  private nextSeq = 0;
  sampleRate: number;

  constructor(private readonly settings: LogSettings, sampleRate: number) {
    this.ring = new Array<LogEntry | undefined>(settings.records_per_service);
    this.sampleRate = sampleRate;
  }

  /** Should this request be recorded (decided before its inputs go to a worker). */
  sample(): boolean {
    const r = this.sampleRate;
    return r >= 1 || (r > 0 && Math.random() < r);
  }

  /** The start of a record: the request's inputs, copied. */
  begin(requestId: string, request: InferRequest, sig: ModelSignature, by: ServedBy, split: boolean, shadowLabels: readonly string[]): LogEntry {
    return {
      seq: -1, time: 0, requestId, status: 0, error: null, inputs: request.inputs.map(copyTensor), inputSig: sig,
      answer: null, by, elapsedNs: [0, 0], split, ownShadow: null,
      shadows: shadowLabels.length ? new Map(shadowLabels.map((l) => [l, null])) : null,
    };
  }

  /** The reply went out: the record joins the log. */
  commit(e: LogEntry, status: number, result: InferResult | null, error: string | null, sig: ModelSignature, rows: number): void {
    e.time = Date.now();
    e.status = status;
    e.error = error;
    if (result) {
      e.answer = { by: e.by, sig, outputs: result.outputs, offset: result.offset, rows, whole: result.whole };
      e.elapsedNs = [result.queueNs, result.runNs];
      // A shadow version that drew the request itself answered it once, as the primary.
      if (e.ownShadow !== null) e.shadows?.set(e.ownShadow, e.answer);
    }
    e.seq = this.nextSeq++;
    this.ring[e.seq % this.ring.length] = e;
  }

  query(q: LogQuery): LogPage {
    const oldest = Math.max(0, this.nextSeq - this.ring.length);
    const newest = this.nextSeq - 1;
    const step = q.order === 'Asc' ? 1 : -1;
    let seq = q.cursor ?? (q.order === 'Asc' ? oldest : newest);
    seq = q.order === 'Asc' ? Math.max(seq, oldest) : Math.min(seq, newest);
    let body = '[';
    let count = 0;
    let schema: string | null = null;
    for (; seq >= oldest && seq <= newest; seq += step) {
      const e = this.ring[seq % this.ring.length]!;
      if (e.time < q.start || e.time >= q.end) continue;
      if (count === q.pageSize) return { body: body + ']', cursor: String(seq), status: 'RecordLimited' };
      const shape = schemaOf(e);
      if (schema !== null && shape !== schema) return { body: body + ']', cursor: String(seq), status: 'SchemaChange' };
      schema = shape;
      const text = renderEntry(e, this.settings.max_record_bytes);
      if (count > 0 && body.length + text.length > PAGE_BYTES) return { body: body + ']', cursor: String(seq), status: 'ByteLimited' };
      body += (count ? ',' : '') + text;
      count++;
    }
    return { body: body + ']', cursor: null, status: 'All' };
  }
}

/** The log query's body (Wallaroo get_logs): start_time, end_time, order, page_size, cursor. */
export function parseLogQuery(b: Record<string, unknown>): LogQuery {
  const known = new Set(['start_time', 'end_time', 'order', 'page_size', 'cursor']);
  const extra = Object.keys(b).find((k) => !known.has(k));
  if (extra) throw badRequest(`unknown field '${extra}'; expected ${[...known].join(', ')}`, 'BadQuery');
  const time = (k: string, dflt: number): number => {
    const v = b[k];
    if (v === undefined || v === null) return dflt;
    const t = typeof v === 'string' && /^\d{4}-\d\d-\d\dT\d\d:\d\d(:\d\d(\.\d+)?)?(Z|[+-]\d\d:\d\d)$/i.test(v) ? Date.parse(v) : NaN;
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

/** Arrow pages come with the Arrow codec; until then the log answers JSON only. */
export function checkLogAccept(accept: string): void {
  const a = accept.toLowerCase();
  if (a === '' || a.includes('application/json') || a.includes('*/*')) return;
  throw new GatewayError(406, 'NotAcceptable', `the inference log is served as application/json (pandas records); Accept was '${accept}'`);
}

function copyTensor(t: Tensor): Tensor {
  return { type: t.type, dims: t.dims.slice(), data: t.data.slice() as Tensor['data'] };
}

/** Names that make a record's columns: a page holds one schema (Arrow needs it; JSON readers like it). */
function schemaOf(e: LogEntry): string {
  const outs = e.answer ? e.answer.sig.outputs.map((o) => o.name).join(',') : '';
  return `${e.inputSig.inputs.map((i) => i.name).join(',')}|${outs}|${e.shadows ? [...e.shadows.keys()].join(',') : ''}`;
}

function answerColumns(a: Answer): [string, string][] {
  return a.outputs.map((t, i) => {
    const spec = a.sig.outputs[i]!;
    if (a.whole || !spec.batched) return [spec.name, tensorJson(t, t.dims, 0)];
    const rowSize = t.dims.slice(1).reduce((x, y) => x * y, 1);
    return [spec.name, tensorJson(t, [a.rows, ...t.dims.slice(1)], a.offset * rowSize)];
  });
}

const object = (cols: [string, string][]): string => `{${cols.map(([k, v]) => `${JSON.stringify(k)}:${v}`).join(',')}}`;

function splitJson(by: ServedBy): string {
  return `[${JSON.stringify({ name: by.modelName, version: by.modelVersion, sha: by.modelSha })}]`;
}

/**
 * One record as pandas-records JSON: time, in, out, check_failures, metadata and out_<version>
 * for shadows. Over the size limit, the largest input columns go first, then the largest outputs.
 */
export function renderEntry(e: LogEntry, maxBytes: number): string {
  const inputs: [string, string][] = e.inputs ? e.inputs.map((t, i) => [e.inputSig.inputs[i]!.name, tensorJson(t, t.dims, 0)]) : [];
  const outputs: [string, string][] = e.answer ? answerColumns(e.answer) : [];
  if (e.answer && e.split) outputs.push(['_model_split', splitJson(e.by)]);
  const shadows: [string, string][] = e.shadows
    ? [...e.shadows].map(([label, a]) => [label, a === null ? 'null' : typeof a === 'string' ? JSON.stringify({ error: a }) : object(answerColumns(a))])
    : [];
  const dropped: string[] = [];
  const size = (): number => [...inputs, ...outputs, ...shadows].reduce((n, [k, v]) => n + k.length + v.length + 4, 256);
  for (const cols of [inputs, outputs]) {
    while (size() > maxBytes && cols.length > 0) {
      let largest = 0;
      for (let i = 1; i < cols.length; i++) if (cols[i]![1].length > cols[largest]![1].length) largest = i;
      dropped.push(`${cols === inputs ? 'in' : 'out'}.${cols[largest]![0]}`);
      cols.splice(largest, 1);
    }
  }
  const metadata = {
    last_model: JSON.stringify({ model_name: e.by.modelName, model_sha: e.by.modelSha }),
    pipeline_version: e.by.serviceVersion,
    elapsed: e.elapsedNs,
    dropped,
    request_id: e.requestId,
    status: e.status,
    ...(e.error !== null ? { error: e.error } : {}),
  };
  let s = `{"time":${e.time},"in":${object(inputs)},"out":${object(outputs)},"check_failures":[],"metadata":${JSON.stringify(metadata)}`;
  for (const [label, v] of shadows) s += `,${JSON.stringify(label)}:${v}`;
  return s + '}';
}

/** A shadow version's answer for a logged request. */
export function recordShadow(e: LogEntry, label: string, by: ServedBy, sig: ModelSignature, result: InferResult | null, rows: number, error: string | null): void {
  if (!e.shadows) return;
  e.shadows.set(label, result ? { by, sig, outputs: result.outputs, offset: result.offset, rows, whole: result.whole } : (error ?? 'no answer'));
}
