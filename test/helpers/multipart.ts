/**
 * Multipart bodies and NumPy .npy files written by hand, so tests control every byte (FormData
 * cannot make a malformed body, and numpy is not here).
 */

export interface RawPart {
  /** Omitted: the part has no name (malformed). */
  name?: string;
  filename?: string;
  type?: string;
  data: Uint8Array | string;
}

/** A multipart/form-data body with the given boundary; returns it with its Content-Type. */
export function formBody(parts: RawPart[], boundary = 'ig-test-boundary-7f3a'): { body: Buffer; contentType: string } {
  const chunks: Buffer[] = [];
  for (const p of parts) {
    let disposition = 'Content-Disposition: form-data';
    if (p.name !== undefined) disposition += `; name="${p.name}"`;
    if (p.filename !== undefined) disposition += `; filename="${p.filename}"`;
    let head = `--${boundary}\r\n${disposition}\r\n`;
    if (p.type !== undefined) head += `Content-Type: ${p.type}\r\n`;
    chunks.push(Buffer.from(head + '\r\n'), Buffer.from(p.data), Buffer.from('\r\n'));
  }
  chunks.push(Buffer.from(`--${boundary}--\r\n`));
  return { body: Buffer.concat(chunks), contentType: `multipart/form-data; boundary=${boundary}` };
}

export interface NpyOptions {
  /** Format version 1, 2 or 3 (the header length is 2 bytes in 1.0, 4 in 2.0 and 3.0). */
  version?: 1 | 2 | 3;
  fortran?: boolean;
  /** Replaces the whole header dict text. */
  header?: string;
}

/** A .npy file as numpy.save writes it: magic, version, header length, dict padded to 64 bytes, data. */
export function npy(descr: string, shape: number[], data: ArrayBufferView, opts: NpyOptions = {}): Buffer {
  const version = opts.version ?? 1;
  const shapeText = shape.length === 1 ? `(${shape[0]},)` : `(${shape.join(', ')})`;
  let dict = opts.header ?? `{'descr': '${descr}', 'fortran_order': ${opts.fortran ? 'True' : 'False'}, 'shape': ${shapeText}, }`;
  const prefix = version === 1 ? 10 : 12;
  const total = Math.ceil((prefix + dict.length + 1) / 64) * 64;
  dict = dict.padEnd(total - prefix - 1, ' ') + '\n';
  const head = Buffer.alloc(prefix);
  Buffer.from([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, version, 0]).copy(head);
  if (version === 1) head.writeUInt16LE(dict.length, 8);
  else head.writeUInt32LE(dict.length, 8);
  return Buffer.concat([head, Buffer.from(dict, 'latin1'), Buffer.from(data.buffer, data.byteOffset, data.byteLength)]);
}

export const f32npy = (rows: number[][]): Buffer => npy('<f4', [rows.length, rows[0]!.length], Float32Array.from(rows.flat()));
