import {
  Field, FixedSizeList, Float32, Float64, List, Table, makeData, makeVector, tableFromIPC, tableToIPC, vectorFromArray,
  type DataType, type Vector,
} from 'apache-arrow';

/** Arrow tables for tests, built the way pyarrow clients send them, and answers read back as plain values. */

export const ARROW_FILE = 'application/vnd.apache.arrow.file';
export const ARROW_STREAM = 'application/vnd.apache.arrow.stream';

/** Rows of K float32 values as FixedSizeList<Float32>[K] (numpy [N, K] float32 through pyarrow). */
export function fixedFloat32(rows: number[][], width = rows[0]!.length): Vector {
  const child = makeData({ type: new Float32(), length: rows.length * width, data: Float32Array.from(rows.flat()) });
  return makeVector(makeData({ type: new FixedSizeList(width, new Field('item', new Float32(), true)), length: rows.length, child }));
}

/** Rows as List<Float64> (a pandas column of Python lists); null rows and null elements allowed. */
export function listFloat64(rows: (readonly (number | null)[] | null)[]): Vector {
  return vectorFromArray(rows, new List(new Field('item', new Float64(), true)));
}

export function vector(values: unknown[], type: DataType): Vector {
  return vectorFromArray(values, type);
}

/** A table of named columns in IPC file or stream form; `batchRows` splits it into record batches. */
export function ipc(columns: Record<string, Vector>, kind: 'file' | 'stream', batchRows = 0): Uint8Array {
  let table = new Table(columns);
  if (batchRows > 0) {
    const n = table.numRows;
    const parts: Table[] = [];
    for (let s = 0; s < n; s += batchRows) parts.push(table.slice(s, Math.min(n, s + batchRows)));
    table = new Table(parts.flatMap((p) => p.batches));
  }
  return tableToIPC(table, kind);
}

export interface ArrowAnswer {
  status: number;
  headers: Headers;
  bytes: Uint8Array;
  text: string;
  json: any;
}

export async function postBytes(url: string, body: Uint8Array | string, contentType: string, headers: Record<string, string> = {}): Promise<ArrowAnswer> {
  const res = await fetch(url, { method: 'POST', body, headers: { 'content-type': contentType, ...headers } });
  const bytes = new Uint8Array(await res.arrayBuffer());
  const text = Buffer.from(bytes).toString('utf8');
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: res.status, headers: res.headers, bytes, text, json };
}

export const readTable = (bytes: Uint8Array): Table => tableFromIPC(bytes);

/** A cell as a plain value: lists (vectors, typed arrays) become arrays, int64 stays a bigint. */
export function plain(v: unknown): unknown {
  if (v !== null && typeof v === 'object' && 'toArray' in v && typeof (v as Vector).get === 'function') {
    const vec = v as Vector;
    return Array.from({ length: vec.length }, (_, i) => plain(vec.get(i)));
  }
  if (ArrayBuffer.isView(v)) return Array.from(v as unknown as ArrayLike<unknown>);
  return v;
}

/** One column of a table as plain values, one per row. */
export function columnValues(t: Table, name: string): unknown[] {
  const col = t.getChild(name);
  if (!col) throw new Error(`the table has no column '${name}' (columns: ${t.schema.fields.map((f) => f.name).join(', ')})`);
  return Array.from({ length: col.length }, (_, i) => plain(col.get(i)));
}

export const columnNames = (t: Table): string[] => t.schema.fields.map((f) => f.name);

export const columnType = (t: Table, name: string): string => String(t.schema.fields.find((f) => f.name === name)?.type);
