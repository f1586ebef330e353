import { Bool, Field, Float64, Int32, List, Null, Table, TimestampMillisecond, Utf8, makeData, makeVector, tableToIPC, vectorFromArray, type DataType, type Vector } from 'apache-arrow';
import type { ArrowKind } from './arrow.js';

/**
 * A page of the inference log (SPEC §10, Wallaroo's get_logs) as an Arrow table: the same records
 * as the pandas-records page, flattened one level the way Wallaroo names its log columns (`time`,
 * `in.<input>`, `out.<output>`, `check_failures`, `metadata.<key>`, and `<shadow>.<key>` for a
 * shadow's answer). Values keep their JSON types: numbers as float64 (int32 when every value is a
 * 32-bit integer), strings as utf8, lists as nested lists; anything else as its JSON text. A key
 * some records lack is null there. The log is read rarely and its pages are built as JSON, so
 * this converts that JSON rather than keeping a second writer.
 */
export function logPageArrow(pageJson: string, kind: ArrowKind): Uint8Array {
  const records = JSON.parse(pageJson) as Record<string, unknown>[];
  const columns = new Map<string, unknown[]>();
  const put = (key: string, r: number, v: unknown): void => {
    let col = columns.get(key);
    if (!col) columns.set(key, (col = new Array<unknown>(records.length).fill(null)));
    col[r] = v;
  };
  records.forEach((rec, r) => {
    for (const [k, v] of Object.entries(rec)) {
      if (k !== 'time' && k !== 'check_failures' && v !== null && typeof v === 'object' && !Array.isArray(v)) {
        // An object emptied by the size limit (in: {} when its columns were dropped) adds no column.
        for (const [k2, v2] of Object.entries(v)) put(`${k}.${k2}`, r, v2);
      } else {
        put(k, r, v);
      }
    }
  });
  const vectors: Record<string, Vector> = {};
  for (const [key, values] of columns) {
    vectors[key] = key === 'time' ? timeVector(values) : vectorOf(values);
  }
  return tableToIPC(new Table(vectors), kind === 'arrow-file' ? 'file' : 'stream');
}

function timeVector(values: unknown[]): Vector {
  const ms = new BigInt64Array(values.length);
  values.forEach((v, i) => (ms[i] = BigInt(typeof v === 'number' ? Math.round(v) : 0)));
  return makeVector(makeData({ type: new TimestampMillisecond(), length: values.length, data: ms }));
}

type Leaf = 'number' | 'int' | 'string' | 'boolean' | 'none';

/** The nesting depth and leaf kind shared by every value, or null when they differ. */
function shape(values: unknown[]): { depth: number; leaf: Leaf } | null {
  let depth = -1;
  let leaf: Leaf = 'none';
  const visit = (v: unknown, d: number): boolean => {
    if (v === null || v === undefined) return true;
    if (Array.isArray(v)) return v.every((x) => visit(x, d + 1));
    if (depth >= 0 && depth !== d) return false;
    depth = d;
    const k: Leaf = typeof v === 'number' ? (Number.isInteger(v) && v >= -2147483648 && v <= 2147483647 ? 'int' : 'number') : typeof v === 'string' ? 'string' : typeof v === 'boolean' ? 'boolean' : 'none';
    if (k === 'none') return false;
    if (leaf === 'none' || leaf === k) leaf = k;
    else if ((leaf === 'int' && k === 'number') || (leaf === 'number' && k === 'int')) leaf = 'number';
    else return false;
    return true;
  };
  for (const v of values) if (!visit(v, 0)) return null;
  if (depth < 0) {
    // Only nulls and empty lists: their depth is that of the deepest list seen.
    let d = 0;
    for (const v of values) for (let x = v; Array.isArray(x); x = x[0]) d = Math.max(d, 1);
    return { depth: d, leaf: 'none' };
  }
  return { depth, leaf };
}

function vectorOf(values: unknown[]): Vector {
  const s = shape(values);
  if (!s) return vectorFromArray(values.map((v) => (v === null || v === undefined ? null : JSON.stringify(v))), new Utf8());
  let type: DataType = s.leaf === 'string' ? new Utf8() : s.leaf === 'boolean' ? new Bool() : s.leaf === 'int' && s.depth === 0 ? new Int32() : s.leaf === 'none' ? new Null() : new Float64();
  for (let d = 0; d < s.depth; d++) type = new List(new Field('item', type, true));
  if (type instanceof Null) return makeVector(makeData({ type: new Null(), length: values.length }));
  return vectorFromArray(values, type);
}
