/**
 * A JSON body's bytes as text. A leading UTF-8 byte order mark is dropped: RFC 8259 §8.1 lets a
 * parser ignore it, and Windows tools (PowerShell, Notepad's "UTF-8 with BOM") write one, which
 * JSON.parse would refuse as an unexpected token.
 */
export function jsonText(bytes: Uint8Array): string {
  const start = bytes.length >= 3 && bytes[0] === 0xef && bytes[1] === 0xbb && bytes[2] === 0xbf ? 3 : 0;
  return Buffer.from(bytes.buffer, bytes.byteOffset + start, bytes.byteLength - start).toString('utf8');
}
