import { Precision, Type, type Data, type Table } from 'apache-arrow';
import type { RecordsEcho } from './pandas.js';
import { vectorOf } from './arrow-read.js';
import { fromHalf } from './values.js';

/**
 * The rows of an Arrow request, echoed as pandas-records `in` (JSON or msgpack answers) and passed
 * through as the `in.<col>` columns of an Arrow answer. It holds the table read from the request's
 * own copy of the body, so nothing is converted unless an answer asks for it.
 */
export class ArrowEcho implements RecordsEcho {
  /** JSON-quoted column names. */
  private readonly keys: string[];
  private readonly names: string[];
  /** First table row of each record batch, and one past the last. */
  private readonly starts: number[];

  private released = false;

  constructor(
    readonly table: Table,
    /** The copy of the request body the table's columns are views into. */
    readonly bytes: Uint8Array,
  ) {
    this.names = table.schema.fields.map((f) => f.name);
    this.keys = this.names.map((n) => JSON.stringify(n));
    this.starts = [0];
    for (const b of table.batches) this.starts.push(this.starts[this.starts.length - 1]! + b.numRows);
  }

  /** The body copy, for reuse: the table must not be read after this. */
  release(): Uint8Array {
    if (this.released) throw new Error('an Arrow request was answered twice');
    this.released = true;
    return this.bytes;
  }

  json(r: number): string {
    const b = this.batchOf(r);
    const cols = this.table.batches[b]!.data.children;
    const i = r - this.starts[b]!;
    let s = '{';
    for (let c = 0; c < cols.length; c++) s += (c ? ',' : '') + this.keys[c] + ':' + cellJson(cols[c]!, i);
    return s + '}';
  }

  value(r: number): unknown {
    const b = this.batchOf(r);
    const cols = this.table.batches[b]!.data.children;
    const i = r - this.starts[b]!;
    const o: Record<string, unknown> = {};
    for (let c = 0; c < cols.length; c++) o[this.names[c]!] = cellValue(cols[c]!, i);
    return o;
  }

  private batchOf(r: number): number {
    const s = this.starts;
    let lo = 0;
    let hi = s.length - 2;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (s[mid]! <= r) lo = mid;
      else hi = mid - 1;
    }
    return lo;
  }
}

const num = (x: number): string => (Number.isFinite(x) ? String(x) : 'null');

/** Element i of a column as JSON text; NaN and infinities become null, as JSON has neither. */
function cellJson(d: Data, i: number): string {
  if (!d.getValid(i)) return 'null';
  switch (d.type.typeId) {
    case Type.Float: {
      const x = (d.values as Float64Array)[i]!;
      return num((d.type as unknown as { precision: Precision }).precision === Precision.HALF ? fromHalf(x) : x);
    }
    case Type.Int:
      return String((d.values as Float64Array | BigInt64Array)[i]!);
    case Type.Bool: {
      const k = d.offset + i;
      return ((d.values as Uint8Array)[k >> 3]! >> (k & 7)) & 1 ? 'true' : 'false';
    }
    case Type.FixedSizeList:
    case Type.List:
    case Type.LargeList: {
      const [from, to] = listRange(d, i);
      const child = d.children[0]!;
      let s = '[';
      for (let k = from; k < to; k++) s += (k > from ? ',' : '') + cellJson(child, k);
      return s + ']';
    }
    default:
      return JSON.stringify(vectorOf(d).get(i)) ?? 'null';
  }
}

/** Element i of a column as a plain value (int64 stays a bigint, which msgpack writes as an integer). */
function cellValue(d: Data, i: number): unknown {
  if (!d.getValid(i)) return null;
  switch (d.type.typeId) {
    case Type.Float: {
      const x = (d.values as Float64Array)[i]!;
      return (d.type as unknown as { precision: Precision }).precision === Precision.HALF ? fromHalf(x) : x;
    }
    case Type.Int:
      return (d.values as Float64Array | BigInt64Array)[i]!;
    case Type.Bool: {
      const k = d.offset + i;
      return (((d.values as Uint8Array)[k >> 3]! >> (k & 7)) & 1) === 1;
    }
    case Type.FixedSizeList:
    case Type.List:
    case Type.LargeList: {
      const [from, to] = listRange(d, i);
      const child = d.children[0]!;
      const out = new Array<unknown>(to - from);
      for (let k = from; k < to; k++) out[k - from] = cellValue(child, k);
      return out;
    }
    default:
      return vectorOf(d).get(i);
  }
}

/** Child elements of list element i. A fixed-size list's child is sliced with it, a list's offsets index its child. */
function listRange(d: Data, i: number): [number, number] {
  if (d.type.typeId === Type.FixedSizeList) {
    const size = (d.type as unknown as { listSize: number }).listSize;
    return [i * size, (i + 1) * size];
  }
  const offs = d.valueOffsets as Int32Array | BigInt64Array;
  return [Number(offs[i]!), Number(offs[i + 1]!)];
}
