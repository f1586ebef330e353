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

export async function extractTarGz(bytes: Uint8Array, dest: string, limitBytes: number, archive: string): Promise<void> {
  let total = 0;
  const problems: string[] = [];
  // First pass: list and check every entry; nothing is written unless all are fine.
  await pipeline(Readable.from([Buffer.from(bytes)]), tar.t({
    onReadEntry: (entry) => {
      try {
        if (entry.type !== 'File' && entry.type !== 'OldFile' && entry.type !== 'Directory') {
          throw new PackageError(`${archive}: entry '${entry.path}' is a ${entry.type === 'SymbolicLink' || entry.type === 'Link' ? 'link' : entry.type}; packages may hold only files and folders`);
        }
        checkEntryPath(entry.path, archive);
        total += entry.size ?? 0;
        if (total > limitBytes) throw new PackageError(`${archive}: unpacks to more than the package size limit of ${limitBytes} bytes`);
      } catch (err) {
        problems.push((err as Error).message);
      }
      entry.resume();
    },
  })).catch((err: Error) => {
    throw new PackageError(`${archive}: not a readable .tar.gz archive: ${err.message}`);
  });
  if (problems.length) throw new PackageError(problems[0]!);
  await mkdir(dest, { recursive: true });
  await pipeline(Readable.from([Buffer.from(bytes)]), tar.x({ cwd: dest, strict: true, preservePaths: false }));
}

export async function extractZip(bytes: Uint8Array, dest: string, limitBytes: number, archive: string): Promise<void> {
  const zip = await new Promise<yauzl.ZipFile>((resolve, reject) =>
    yauzl.fromBuffer(Buffer.from(bytes), { lazyEntries: true, validateEntrySizes: true }, (err, z) => (err ? reject(new PackageError(`${archive}: not a readable .zip archive: ${err.message}`)) : resolve(z!))),
  );
  await mkdir(dest, { recursive: true });
  let total = 0;
  await new Promise<void>((resolve, reject) => {
    const fail = (err: Error): void => {
      zip.close();
      reject(err instanceof PackageError ? err : new PackageError(`${archive}: ${err.message}`));
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
