import { createWriteStream } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import * as tar from 'tar';
import yauzl from 'yauzl';
import { PackageError } from './packages.js';

/**
 * Unpacking uploaded packages safely: every entry is checked before anything is written, and
 * entries that would land outside the folder (absolute paths, `..`), links and device files
 * refuse the whole archive, naming the entry. Unpacked size is bounded (archive bombs).
 */

function checkEntryPath(name: string, archive: string): string {
  const clean = name.replace(/\\/g, '/');
  if (clean.startsWith('/') || /^[A-Za-z]:/.test(clean)) throw new PackageError(`${archive}: entry '${name}' has an absolute path; entries must stay inside the package folder`);
  const parts = clean.split('/').filter((p) => p !== '' && p !== '.');
  if (parts.includes('..')) throw new PackageError(`${archive}: entry '${name}' escapes the package folder ('..'); entries must stay inside it`);
  return parts.join('/');
}

/** A package holds at most this many files and folders (each is written in the data dir): room for an image model's node_modules or Python environment. */
export const MAX_ENTRIES = 100_000;

/** Compressed bytes handed to the unpacker at a time: what one synchronous inflate step may grow from. */
const STEP_BYTES = 16 * 1024;

/**
 * The archive as a stream of small pieces, one per turn of the event loop: node-tar inflates
 * each write synchronously, so a whole archive written at once would be inflated in one go on the
 * main thread (a 6 MB bomb to gigabytes) before any entry could be checked.
 */
function piecewise(bytes: Uint8Array): Readable {
  let at = 0;
  return new Readable({
    highWaterMark: STEP_BYTES,
    read() {
      setImmediate(() => {
        if (at >= bytes.length) {
          this.push(null);
          return;
        }
        const end = Math.min(at + STEP_BYTES, bytes.length);
        this.push(Buffer.from(bytes.buffer, bytes.byteOffset + at, end - at));
        at = end;
      });
    },
  });
}

export const tooMany = (archive: string): PackageError => new PackageError(`${archive}: holds more than ${MAX_ENTRIES} files and folders; a package holds at most ${MAX_ENTRIES}`);

export async function extractTarGz(bytes: Uint8Array, dest: string, limitBytes: number, archive: string): Promise<void> {
  let total = 0;
  let entries = 0;
  // First pass: list and check every entry; nothing is written unless all are fine. The first
  // problem stops the reading (the rest of a bomb is never inflated).
  const source = piecewise(bytes);
  await pipeline(source, tar.t({
    onReadEntry: (entry) => {
      try {
        if (entry.type !== 'File' && entry.type !== 'OldFile' && entry.type !== 'Directory') {
          throw new PackageError(`${archive}: entry '${entry.path}' is a ${entry.type === 'SymbolicLink' || entry.type === 'Link' ? 'link' : entry.type}; packages may hold only files and folders`);
        }
        checkEntryPath(entry.path, archive);
        if (++entries > MAX_ENTRIES) throw tooMany(archive);
        total += entry.size ?? 0;
        if (total > limitBytes) throw new PackageError(`${archive}: unpacks to more than the package size limit of ${limitBytes} bytes`);
      } catch (err) {
        source.destroy(err as Error);
        return;
      }
      entry.resume();
    },
  })).catch((err: Error) => {
    if (err instanceof PackageError) throw err;
    throw new PackageError(`${archive}: not a readable .tar.gz archive: ${err.message}`);
  });
  await mkdir(dest, { recursive: true });
  await pipeline(piecewise(bytes), tar.x({ cwd: dest, strict: true, preservePaths: false })).catch((err: NodeJS.ErrnoException) => {
    // Entries checked above can still clash on disk (a file 'x', then 'x/y').
    throw new PackageError(`${archive}: could not be unpacked: ${err.code === 'EEXIST' || err.code === 'ENOTDIR' ? `entry '${path.relative(dest, err.path ?? '')}' clashes with another entry of the same name` : err.message}`);
  });
}

/** yauzl checks entry names before we see them; its refusals are said as a tar's would be. */
function zipEntryError(err: Error, archive: string): PackageError {
  const m = /^(?:invalid relative path|absolute path): (.*)$/s.exec(err.message);
  if (m) {
    try {
      checkEntryPath(m[1]!, archive);
    } catch (named) {
      return named as PackageError;
    }
  }
  return new PackageError(`${archive}: ${err.message}`);
}

export async function extractZip(bytes: Uint8Array, dest: string, limitBytes: number, archive: string): Promise<void> {
  const zip = await new Promise<yauzl.ZipFile>((resolve, reject) =>
    yauzl.fromBuffer(Buffer.from(bytes), { lazyEntries: true, validateEntrySizes: true }, (err, z) => (err ? reject(new PackageError(`${archive}: not a readable .zip archive: ${err.message}`)) : resolve(z!))),
  );
  if (zip.entryCount > MAX_ENTRIES) {
    zip.close();
    throw tooMany(archive);
  }
  await mkdir(dest, { recursive: true });
  let total = 0;
  await new Promise<void>((resolve, reject) => {
    const fail = (err: Error): void => {
      zip.close();
      reject(err instanceof PackageError ? err : zipEntryError(err, archive));
    };
    zip.on('error', fail);
    zip.on('end', resolve);
    zip.on('entry', (entry: yauzl.Entry) => {
      try {
        const mode = (entry.externalFileAttributes >>> 16) & 0o170000;
        if (mode === 0o120000) throw new PackageError(`${archive}: entry '${entry.fileName}' is a link; packages may hold only files and folders`);
        const rel = checkEntryPath(entry.fileName, archive);
        total += entry.uncompressedSize;
        if (total > limitBytes) throw new PackageError(`${archive}: unpacks to more than the package size limit of ${limitBytes} bytes`);
        const target = path.join(dest, rel);
        if (entry.fileName.endsWith('/') || rel === '') {
          mkdir(target, { recursive: true }).then(() => zip.readEntry(), fail);
          return;
        }
        zip.openReadStream(entry, (err, stream) => {
          if (err) return fail(err);
          mkdir(path.dirname(target), { recursive: true })
            .then(() => pipeline(stream!, createWriteStream(target)))
            .then(() => zip.readEntry(), fail);
        });
      } catch (err) {
        fail(err as Error);
      }
    });
    zip.readEntry();
  });
}

/** A bare .onnx upload becomes a package: the model file and a minimal config.json. */
export async function writeBareOnnx(bytes: Uint8Array, dest: string): Promise<void> {
  await mkdir(dest, { recursive: true });
  await writeFile(path.join(dest, 'model.onnx'), bytes);
  await writeFile(path.join(dest, 'config.json'), JSON.stringify({ model_type: 'ONNX', model_file: 'model.onnx' }, null, 2));
}
