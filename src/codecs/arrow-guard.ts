/**
 * Bounds on Arrow IPC metadata before apache-arrow reads it. Its flatbuffer decoding trusts the
 * vector lengths it finds: one flipped byte in a schema made it loop over billions of fields until
 * the heap ran out, a crash any client could cause. This walks the same messages the reader will
 * (every message of a stream; a file's footer and the blocks it names), checks that every vector,
 * string and table lies inside its buffer and that row counts fit the body, and throws a
 * `GuardError` naming what is wrong. Well-formed metadata costs a few hundred reads per message.
 */

export class GuardError extends Error {}

const HEADER_NAMES = ['NONE', 'Schema', 'DictionaryBatch', 'RecordBatch'];

const MAGIC = [0x41, 0x52, 0x52, 0x4f, 0x57, 0x31]; // "ARROW1"

/** Fields visited per message at most: a cycle in `children` is corrupt, not deep. */
const MAX_FIELDS = 10_000;
const MAX_DEPTH = 64;

/** A flatbuffer with every read bounds-checked. */
class Flat {
  private readonly dv: DataView;

  constructor(private readonly b: Uint8Array) {
    this.dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  }

  private at(pos: number, size: number, what: string): number {
    if (!Number.isInteger(pos) || pos < 0 || pos + size > this.b.length) throw new GuardError(`${what} lies outside its metadata (${this.b.length} bytes)`);
    return pos;
  }

  u16(pos: number): number { return this.dv.getUint16(this.at(pos, 2, 'a vtable entry'), true); }
  u32(pos: number): number { return this.dv.getUint32(this.at(pos, 4, 'an offset'), true); }
  i32(pos: number): number { return this.dv.getInt32(this.at(pos, 4, 'an offset'), true); }
  i64(pos: number): number { return Number(this.dv.getBigInt64(this.at(pos, 8, 'a length'), true)); }
  u8(pos: number): number { return this.dv.getUint8(this.at(pos, 1, 'a byte')); }

  root(): number { return this.table(this.u32(0)); }

  /** A table's position, once its vtable is known to be inside the buffer. */
  table(pos: number): number {
    this.at(pos, 4, 'a table');
    const vt = pos - this.i32(pos);
    const size = this.u16(vt);
    if (size < 4 || size % 2) throw new GuardError(`a vtable of ${size} bytes`);
    this.at(vt, size, 'a vtable');
    return pos;
  }

  /** Absolute position of field `id` of a table, or -1 when absent. */
  field(table: number, id: number): number {
    const vt = table - this.i32(table);
    const entry = 4 + 2 * id;
    if (entry >= this.u16(vt)) return -1;
    const off = this.u16(vt + entry);
    return off === 0 ? -1 : table + off;
  }

  /** The table an offset field points to, or -1. */
  child(table: number, id: number): number {
    const f = this.field(table, id);
    return f < 0 ? -1 : this.table(f + this.u32(f));
  }

  /** A vector field: its first element's position and length, checked to fit; null when absent. */
  vector(table: number, id: number, elemSize: number): { start: number; len: number } | null {
    const f = this.field(table, id);
    if (f < 0) return null;
    const v = f + this.u32(f);
    const len = this.u32(v);
    this.at(v + 4, len * elemSize, `a vector of ${len}`);
    return { start: v + 4, len };
  }

  string(table: number, id: number): void {
    this.vector(table, id, 1);
  }

  /** Element k of a vector of tables. */
  tableAt(start: number, k: number): number {
    const p = start + 4 * k;
    return this.table(p + this.u32(p));
  }

  scalar64(table: number, id: number): number {
    const f = this.field(table, id);
    return f < 0 ? 0 : this.i64(f);
  }

  scalar8(table: number, id: number): number {
    const f = this.field(table, id);
    return f < 0 ? 0 : this.u8(f);
  }
}

function keyValues(fb: Flat, table: number, id: number): void {
  const kv = fb.vector(table, id, 4);
  if (!kv) return;
  for (let k = 0; k < kv.len; k++) {
    const t = fb.tableAt(kv.start, k);
    fb.string(t, 0);
    fb.string(t, 1);
  }
}

function checkSchema(fb: Flat, schema: number): void {
  let seen = 0;
  const field = (f: number, depth: number): void => {
    if (++seen > MAX_FIELDS || depth > MAX_DEPTH) throw new GuardError(`the schema's fields nest deeper or wider than any table (a cycle?)`);
    fb.string(f, 0);
    if (fb.field(f, 3) >= 0) fb.child(f, 3);
    const dict = fb.child(f, 4);
    if (dict >= 0 && fb.field(dict, 1) >= 0) fb.child(dict, 1);
    const children = fb.vector(f, 5, 4);
    if (children) for (let k = 0; k < children.len; k++) field(fb.tableAt(children.start, k), depth + 1);
    keyValues(fb, f, 6);
  };
  const fields = fb.vector(schema, 1, 4);
  if (fields) for (let k = 0; k < fields.len; k++) field(fb.tableAt(fields.start, k), 0);
  keyValues(fb, schema, 2);
  fb.vector(schema, 3, 8);
}

function checkBatch(fb: Flat, batch: number, bodyLength: number): void {
  // Every row takes at least a bit of some buffer; more rows than the body has bits is corrupt
  // (and would have the reader size bitmaps by it).
  const maxRows = bodyLength * 8 + 64;
  const length = fb.scalar64(batch, 0);
  if (length < 0 || length > maxRows) throw new GuardError(`a record batch of ${length} rows in a body of ${bodyLength} bytes`);
  const nodes = fb.vector(batch, 1, 16);
  if (nodes) {
    for (let k = 0; k < nodes.len; k++) {
      const n = fb.i64(nodes.start + 16 * k);
      const nulls = fb.i64(nodes.start + 16 * k + 8);
      if (n < 0 || n > maxRows || nulls < 0 || nulls > n) throw new GuardError(`column node ${k} claims ${n} values (${nulls} null) in a body of ${bodyLength} bytes`);
    }
  }
  const buffers = fb.vector(batch, 2, 16);
  if (buffers) {
    for (let k = 0; k < buffers.len; k++) {
      const off = fb.i64(buffers.start + 16 * k);
      const len = fb.i64(buffers.start + 16 * k + 8);
      if (off < 0 || len < 0 || off + len > bodyLength) throw new GuardError(`buffer ${k} (${len} bytes at ${off}) runs past the message body of ${bodyLength} bytes`);
    }
  }
  if (fb.field(batch, 3) >= 0) fb.child(batch, 3);
  fb.vector(batch, 4, 8);
}

/** One message's metadata (a flatbuffer `Message`); gives its body length. `want`: the header type it must have. */
function checkMessage(meta: Uint8Array, want: number): number {
  const fb = new Flat(meta);
  const m = fb.root();
  const bodyLength = fb.scalar64(m, 3);
  if (bodyLength < 0) throw new GuardError(`a message body of ${bodyLength} bytes`);
  keyValues(fb, m, 4);
  const type = fb.scalar8(m, 1);
  if (want >= 0 && type !== want) throw new GuardError(`a footer block points at a message of type ${type}, not ${HEADER_NAMES[want]}`);
  const header = fb.field(m, 2) >= 0 ? fb.child(m, 2) : -1;
  if (header < 0) return bodyLength;
  if (type === 1) checkSchema(fb, header);
  else if (type === 3) checkBatch(fb, header, bodyLength);
  else if (type === 2) {
    const data = fb.field(header, 1) >= 0 ? fb.child(header, 1) : -1;
    if (data >= 0) checkBatch(fb, data, bodyLength);
  }
  return bodyLength;
}

/**
 * The messages of a stream from `pos`, as the reader takes them (an optional 0xFFFFFFFF
 * continuation, a length, the metadata, the body), up to the end marker. A cut the reader would
 * stop at is left for it to report.
 */
function checkStream(b: Uint8Array, pos: number, end: number, messages = Infinity, want = -1): void {
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  for (let n = 0; n < messages && pos + 4 <= end; n++) {
    let len = dv.getInt32(pos, true);
    pos += 4;
    if (len === -1) {
      if (pos + 4 > end) return;
      len = dv.getInt32(pos, true);
      pos += 4;
    }
    // A negative length has the reader decode an empty buffer as a message: refused here.
    if (len < 0) throw new GuardError(`a message length of ${len}`);
    if (len === 0 || pos + len > end) return;
    const body = checkMessage(b.subarray(pos, pos + len), want);
    pos += len + body;
  }
}

function checkFile(b: Uint8Array): void {
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  if (b.length < 10 + 8) return;
  const footerLen = dv.getInt32(b.length - 10, true);
  const footerAt = b.length - 10 - footerLen;
  if (footerLen <= 0 || footerAt < 8) return;
  const fb = new Flat(b.subarray(footerAt, footerAt + footerLen));
  const footer = fb.root();
  if (fb.field(footer, 1) >= 0) checkSchema(fb, fb.child(footer, 1));
  // The reader loops on a record-batch block until it reads a record batch: a block pointing at
  // any other message would never end.
  for (const [id, want] of [[2, 2], [3, 3]] as const) {
    const blocks = fb.vector(footer, id, 24);
    if (!blocks) continue;
    for (let k = 0; k < blocks.len; k++) {
      const offset = fb.i64(blocks.start + 24 * k);
      const metaLen = fb.i32(blocks.start + 24 * k + 8);
      const bodyLen = fb.i64(blocks.start + 24 * k + 16);
      if (offset < 0 || metaLen < 0 || bodyLen < 0 || offset + metaLen + bodyLen > footerAt) {
        throw new GuardError(`block ${k} of the file's footer lies outside the file`);
      }
      // The reader takes the message's own length prefix at the block, whatever the block says.
      checkStream(b, offset, footerAt, 1, want);
    }
  }
  keyValues(fb, footer, 4);
}

/** Throws GuardError when the IPC metadata would send the reader out of bounds. */
export function guardIpc(b: Uint8Array): void {
  const file = b.length >= 6 && MAGIC.every((c, i) => b[i] === c);
  if (file) checkFile(b);
  else checkStream(b, 0, b.length);
}
