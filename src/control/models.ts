import { createHash, randomUUID } from 'node:crypto';
import { constants, existsSync, type Dirent } from 'node:fs';
import { access, cp, mkdir, readdir, rename, rm, realpath, rmdir, stat } from 'node:fs/promises';
import path from 'node:path';
import ort from 'onnxruntime-node';
import { GatewayError, notFound } from '../errors.js';
import type { Db } from '../store/db.js';
import type { EventLog, EventRecord } from '../store/events.js';
import { extractTarGz, extractZip, MAX_ENTRIES, tooMany, writeBareOnnx } from './archives.js';
import { PackageError, readPackage, type ModelPackage } from './packages.js';

export interface ModelVersionView {
  id: string;
  name: string;
  version: string;
  description: string;
  model_type: string;
  sha256: string;
  size: number;
  status: string;
  created_at: string;
  metrics?: unknown;
  demo_weights?: unknown;
}

export interface ModelView {
  id: string;
  name: string;
  project: string;
  description: string;
  created_at: string;
  versions: ModelVersionView[];
}

export interface ImportMeta {
  name: string;
  version?: string | undefined;
  description?: string | undefined;
  projectId: string;
}

interface VersionRow { id: string; model_id: string; version: string; description: string; model_type: string; sha256: string; size: number; dir: string; config: string; status: string; created_at: number }
interface ModelRow { id: string; project_id: string; name: string; description: string; created_at: number }

const NAME = /^[A-Za-z0-9_-]{1,64}$/;
/** Starts with a letter or digit: a version is a folder name, and '.' or '..' would name another folder. */
const VERSION = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

/** Says which service uses a model version, if any (a version in use cannot be deleted). */
export type UsageCheck = (projectId: string, model: string, version: string) => string | null;

/**
 * Model versions (SPEC §4, §6): imported from a folder, an archive or a bare .onnx, checked,
 * copied under the data dir and recorded with their sha256. The files are written to a scratch
 * folder and renamed into place before the row is committed, so a crash leaves either nothing or
 * an orphan folder that the next start removes, never a row without files.
 */
export class ModelRegistry {
  private readonly modelsRoot: string;
  private readonly scratchRoot: string;
  private readonly dataDir: string;

  constructor(
    private readonly db: Db,
    private readonly eventLog: EventLog,
    dataDir: string,
    private readonly maxPackageBytes: number,
    private readonly usage: UsageCheck,
  ) {
    this.dataDir = path.resolve(dataDir);
    this.modelsRoot = path.join(dataDir, 'models');
    this.scratchRoot = path.join(dataDir, 'tmp');
  }

  /** Removes unfinished imports: scratch folders and version folders that no row claims. */
  async recover(): Promise<void> {
    await rm(this.scratchRoot, { recursive: true, force: true });
    await mkdir(this.scratchRoot, { recursive: true });
    const claimed = new Set((this.db.prepare('SELECT dir FROM model_versions').all() as { dir: string }[]).map((r) => path.resolve(r.dir)));
    for (const model of await readdir(this.modelsRoot).catch(() => [] as string[])) {
      for (const version of await readdir(path.join(this.modelsRoot, model)).catch(() => [] as string[])) {
        const dir = path.resolve(this.modelsRoot, model, version);
        if (!claimed.has(dir)) await rm(dir, { recursive: true, force: true });
      }
    }
  }

  /** An upload: `filename` says the form (.onnx, .tar.gz/.tgz, .zip). */
  async importUpload(meta: ImportMeta, filename: string, data: Uint8Array): Promise<ModelVersionView> {
    if (data.byteLength > this.maxPackageBytes) throw new GatewayError(413, 'PackageTooLarge', `package '${filename}' is ${data.byteLength} bytes, over the limit of ${this.maxPackageBytes}`);
    const scratch = await this.scratch();
    try {
      const lower = filename.toLowerCase();
      if (lower.endsWith('.onnx')) await writeBareOnnx(data, scratch);
      else if (lower.endsWith('.tar.gz') || lower.endsWith('.tgz')) await extractTarGz(data, scratch, this.maxPackageBytes, filename);
      else if (lower.endsWith('.zip')) await extractZip(data, scratch, this.maxPackageBytes, filename);
      else throw new PackageError(`file '${filename}': expected a .onnx model, a .tar.gz (.tgz) or a .zip package`);
      return await this.commit(meta, await packageRoot(scratch, filename), scratch, false, filename);
    } finally {
      await rm(scratch, { recursive: true, force: true });
    }
  }

  /**
   * A package folder on this machine. With `skipIfKnown` (the models directory at start), a
   * package whose model file the model already has (same sha256) is not imported again.
   */
  async importFolder(meta: ImportMeta, given: string, skipIfKnown = false): Promise<ModelVersionView> {
    const st = await stat(given).catch(() => null);
    if (!st?.isDirectory()) throw new PackageError(`source path '${given}' is not a folder on the gateway's machine`);
    // The folder may be reached through a link; what it holds may not (checkFolder).
    const src = await realpath(given);
    if (SYSTEM_FOLDERS.some((d) => within(d, src))) {
      throw new PackageError(`source path '${given}' is in ${src.split('/').slice(0, 2).join('/')}, the kernel's view of the machine, not a package folder`);
    }
    // Copying the store into itself, or a scratch copy of an import under way, makes no package.
    const data = await realpath(this.dataDir);
    if (within(src, data)) throw new PackageError(`source path '${given}' holds the gateway's data folder; import a package folder of its own`);
    if ([this.modelsRoot, this.scratchRoot].some((d) => within(path.join(data, path.basename(d)), src))) {
      throw new PackageError(`source path '${given}' is inside the gateway's stored models; import the package's own folder`);
    }
    await checkFolder(src, given, this.maxPackageBytes);
    const scratch = await this.scratch();
    try {
      await cp(src, scratch, { recursive: true });
      // Again on the copy: a file swapped for a link between the check and the copy is caught here.
      await checkFolder(scratch, given, this.maxPackageBytes);
      return await this.commit(meta, scratch, scratch, skipIfKnown, given);
    } finally {
      await rm(scratch, { recursive: true, force: true });
    }
  }

  private async scratch(): Promise<string> {
    const dir = path.join(this.scratchRoot, randomUUID());
    await mkdir(dir, { recursive: true });
    return dir;
  }

  /** `shown`: the package as the client named it (its path or file name), for messages. */
  private async commit(meta: ImportMeta, root: string, scratch: string, skipIfKnown: boolean, shown: string): Promise<ModelVersionView> {
    if (!NAME.test(meta.name)) throw new PackageError(`model name '${meta.name}' must be 1–64 of A-Za-z0-9_-`);
    if (meta.version !== undefined && !VERSION.test(meta.version)) throw new PackageError(`version '${meta.version}' must be 1–64 of A-Za-z0-9._-, starting with a letter or digit`);
    const pkg = await readPackage(root, meta.name).catch((err: unknown) => {
      // The package is read from a scratch copy; the client knows it by its own name.
      throw err instanceof PackageError ? new PackageError(err.message.replaceAll(scratch, shown)) : err;
    });
    // One import or delete of a model at a time: two imports racing for one version would each see
    // it free, and the files of one would end up under the other's row; a delete landing inside an
    // import would leave its version a folder without a model.
    return this.oneAtATime(meta.projectId, meta.name, () => this.store(meta, pkg, root, scratch, skipIfKnown));
  }

  /** The import or delete of each project/model now running, which the next one waits for. */
  private readonly importing = new Map<string, Promise<unknown>>();

  private async oneAtATime<T>(projectId: string, name: string, work: () => Promise<T>): Promise<T> {
    const key = `${projectId}/${name}`;
    const before = this.importing.get(key) ?? Promise.resolve();
    const mine = before.catch(() => undefined).then(work);
    this.importing.set(key, mine);
    try {
      return await mine;
    } finally {
      if (this.importing.get(key) === mine) this.importing.delete(key);
    }
  }

  private async store(meta: ImportMeta, pkg: Awaited<ReturnType<typeof readPackage>>, root: string, scratch: string, skipIfKnown: boolean): Promise<ModelVersionView> {
    const existing = this.modelRow(meta.name, meta.projectId);
    if (skipIfKnown && existing) {
      const same = this.db.prepare('SELECT * FROM model_versions WHERE model_id = ? AND sha256 = ?').get(existing.id, pkg.sha256 || configSha(pkg)) as VersionRow | undefined;
      if (same) return this.versionView(meta.name, same);
    }
    if (pkg.modelType === 'ONNX') await checkLoadable(pkg);
    const version = meta.version ?? this.nextVersion(existing?.id);
    if (existing && this.db.prepare('SELECT 1 FROM model_versions WHERE model_id = ? AND version = ?').get(existing.id, version)) {
      throw new GatewayError(409, 'VersionExists', `model '${meta.name}' already has version '${version}'; give another version`);
    }
    // Folders are per model id: two projects may each have a model of one name.
    const modelId = existing?.id ?? randomUUID();
    const dir = path.join(this.modelsRoot, modelId, version);
    if (path.dirname(dir) !== path.join(this.modelsRoot, modelId)) throw new PackageError(`version '${version}' does not name a folder of its own`);
    await mkdir(path.dirname(dir), { recursive: true });
    await rm(dir, { recursive: true, force: true });
    await rename(root === scratch ? scratch : root, dir);
    const size = await folderSize(dir);
    const now = Date.now();
    const row: VersionRow = {
      id: randomUUID(), model_id: modelId, version, description: meta.description ?? '', model_type: pkg.modelType,
      sha256: pkg.sha256 || configSha(pkg), size, dir, config: JSON.stringify(pkg.config), status: 'normal', created_at: now,
    };
    try {
      this.db.transaction(() => {
        if (!existing) {
          this.db.prepare('INSERT INTO models (id, project_id, name, description, created_at) VALUES (?, ?, ?, ?, ?)').run(row.model_id, meta.projectId, meta.name, meta.description ?? '', now);
        }
        this.db.prepare('INSERT INTO model_versions (id, model_id, version, description, model_type, sha256, size, dir, config, status, created_at) VALUES (@id, @model_id, @version, @description, @model_type, @sha256, @size, @dir, @config, @status, @created_at)').run(row);
      })();
    } catch (err) {
      // No row claims the folder: it goes now, not at the next start (with the model's, if it was new).
      await this.removeVersionDir(dir);
      if (!existing) await rmdir(path.dirname(dir)).catch(() => undefined);
      throw err;
    }
    this.eventLog.record('model', row.model_id, 'Normal', `Model ${meta.name} version ${version} imported (sha256 ${row.sha256.slice(0, 12)}…).`);
    return this.versionView(meta.name, row);
  }

  private nextVersion(modelId: string | undefined): string {
    if (!modelId) return '0.0.1';
    const versions = (this.db.prepare('SELECT version FROM model_versions WHERE model_id = ?').all(modelId) as { version: string }[]).map((r) => r.version);
    const numeric = versions.map((v) => v.split('.').map(Number)).filter((p) => p.length === 3 && p.every(Number.isInteger));
    if (numeric.length === 0) return '0.0.1';
    numeric.sort((a, b) => a[0]! - b[0]! || a[1]! - b[1]! || a[2]! - b[2]!);
    const [x, y, z] = numeric[numeric.length - 1]!;
    let next = `${x}.${y}.${z! + 1}`;
    while (versions.includes(next)) next = `${x}.${y}.${Number(next.split('.')[2]) + 1}`;
    return next;
  }

  private modelRow(name: string, projectId: string): ModelRow | undefined {
    return this.db.prepare('SELECT * FROM models WHERE name = ? AND project_id = ?').get(name, projectId) as ModelRow | undefined;
  }

  private requireModel(projectId: string, name: string): ModelRow {
    const m = this.modelRow(name, projectId);
    if (!m) throw notFound(`model '${name}' does not exist`, 'ModelNotFound');
    return m;
  }

  /** The projects holding a model of this name (names are unique within a project only). */
  projectsWith(name: string): string[] {
    return (this.db.prepare('SELECT project_id FROM models WHERE name = ? ORDER BY created_at').all(name) as { project_id: string }[]).map((r) => r.project_id);
  }

  private versionRow(projectId: string, name: string, version: string): VersionRow {
    const m = this.requireModel(projectId, name);
    const v = this.db.prepare('SELECT * FROM model_versions WHERE model_id = ? AND version = ?').get(m.id, version) as VersionRow | undefined;
    if (!v) throw notFound(`model '${name}' has no version '${version}'`, 'VersionNotFound');
    return v;
  }

  private versionView(name: string, v: VersionRow): ModelVersionView {
    const config = JSON.parse(v.config) as Record<string, unknown>;
    return {
      id: v.id, name, version: v.version, description: v.description, model_type: v.model_type, sha256: v.sha256, size: v.size,
      status: v.status, created_at: new Date(v.created_at).toISOString(),
      ...(config['metrics'] !== undefined ? { metrics: config['metrics'] } : {}),
      ...(config['demo_weights'] !== undefined ? { demo_weights: config['demo_weights'] } : {}),
    };
  }

  private modelView(m: ModelRow): ModelView {
    const project = (this.db.prepare('SELECT name FROM projects WHERE id = ?').get(m.project_id) as { name: string } | undefined)?.name ?? m.project_id;
    const versions = this.db.prepare('SELECT * FROM model_versions WHERE model_id = ? ORDER BY created_at, rowid').all(m.id) as VersionRow[];
    return { id: m.id, name: m.name, project, description: m.description, created_at: new Date(m.created_at).toISOString(), versions: versions.map((v) => this.versionView(m.name, v)) };
  }

  /** The models of the given projects (all projects: null). */
  list(projectIds: ReadonlySet<string> | null): ModelView[] {
    return (this.db.prepare('SELECT * FROM models ORDER BY name, created_at').all() as ModelRow[])
      .filter((m) => projectIds === null || projectIds.has(m.project_id))
      .map((m) => this.modelView(m));
  }

  get(projectId: string, name: string): ModelView {
    return this.modelView(this.requireModel(projectId, name));
  }

  getVersion(projectId: string, name: string, version: string): ModelVersionView {
    return this.versionView(name, this.versionRow(projectId, name, version));
  }

  events(projectId: string, name: string): EventRecord[] {
    return this.eventLog.of('model', this.requireModel(projectId, name).id);
  }

  /** The stored package of a version, for deployment. */
  async package(projectId: string, name: string, version: string | undefined): Promise<ModelPackage> {
    const m = this.requireModel(projectId, name);
    const v = (version === undefined
      ? this.db.prepare('SELECT * FROM model_versions WHERE model_id = ? ORDER BY created_at DESC, rowid DESC LIMIT 1').get(m.id)
      : this.db.prepare('SELECT * FROM model_versions WHERE model_id = ? AND version = ?').get(m.id, version)) as VersionRow | undefined;
    if (!v) throw notFound(version === undefined ? `model '${name}' has no versions` : `model '${name}' has no version '${version}'`, 'VersionNotFound');
    return readPackage(v.dir, name, v.version);
  }

  deleteVersion(projectId: string, name: string, version: string): Promise<void> {
    return this.oneAtATime(projectId, name, () => this.removeVersion(projectId, name, version));
  }

  private async removeVersion(projectId: string, name: string, version: string): Promise<void> {
    const v = this.versionRow(projectId, name, version);
    const user = this.usage(projectId, name, version);
    if (user) throw new GatewayError(409, 'VersionInUse', `model '${name}' version '${version}' is used by service '${user}'; remove it from the service first`);
    this.db.prepare('DELETE FROM model_versions WHERE id = ?').run(v.id);
    this.eventLog.record('model', v.model_id, 'Normal', `Model ${name} version ${version} deleted.`);
    await this.removeVersionDir(v.dir);
  }

  /** A version's folder, only if it is one: models/<model>/<version> (never models/ itself or beyond). */
  private async removeVersionDir(dir: string): Promise<void> {
    const resolved = path.resolve(dir);
    if (path.dirname(path.dirname(resolved)) !== path.resolve(this.modelsRoot)) return;
    await rm(resolved, { recursive: true, force: true });
  }

  deleteModel(projectId: string, name: string): Promise<void> {
    return this.oneAtATime(projectId, name, () => this.removeModel(projectId, name));
  }

  private async removeModel(projectId: string, name: string): Promise<void> {
    const m = this.requireModel(projectId, name);
    const versions = this.db.prepare('SELECT * FROM model_versions WHERE model_id = ?').all(m.id) as VersionRow[];
    for (const v of versions) {
      const user = this.usage(projectId, name, v.version);
      if (user) throw new GatewayError(409, 'VersionInUse', `model '${name}' version '${v.version}' is used by service '${user}'; remove it from the service first`);
    }
    this.db.transaction(() => {
      this.db.prepare('DELETE FROM model_versions WHERE model_id = ?').run(m.id);
      this.db.prepare('DELETE FROM models WHERE id = ?').run(m.id);
    })();
    for (const v of versions) {
      await this.removeVersionDir(v.dir);
      // The model folder goes with its last version (legacy folders named by model may hold others).
      await rmdir(path.dirname(v.dir)).catch(() => undefined);
    }
  }
}

/** config.json at the top, or in the archive's single top-level folder. */
async function packageRoot(dir: string, archive: string): Promise<string> {
  if (existsSync(path.join(dir, 'config.json'))) return dir;
  const entries = (await readdir(dir, { withFileTypes: true })).filter((e) => !e.name.startsWith('.') && e.name !== '__MACOSX');
  if (entries.length === 1 && entries[0]!.isDirectory() && existsSync(path.join(dir, entries[0]!.name, 'config.json'))) return path.join(dir, entries[0]!.name);
  throw new PackageError(`${archive}: config.json is missing; a package holds config.json at its top (or in its one top-level folder)`);
}

async function checkLoadable(pkg: ModelPackage): Promise<void> {
  let session: ort.InferenceSession | null = null;
  try {
    session = await ort.InferenceSession.create(pkg.modelPath, { intraOpNumThreads: 1, interOpNumThreads: 1 });
  } catch (err) {
    // ONNX Runtime names the scratch path; the client knows the file by its name in the package.
    const reason = (err as Error).message.split('\n')[0]!.replaceAll(pkg.modelPath, path.basename(pkg.modelPath));
    throw new PackageError(`model file '${path.basename(pkg.modelPath)}' cannot be loaded by ONNX Runtime: ${reason}`);
  } finally {
    await session?.release().catch(() => undefined);
  }
}

function configSha(pkg: ModelPackage): string {
  // Image packages have no model file: their identity is their configuration.
  return createHashHex(JSON.stringify(pkg.config));
}

const createHashHex = (s: string): string => createHash('sha256').update(s).digest('hex');

/** Folders whose files are the kernel's (reading some never ends), never a package. */
const SYSTEM_FOLDERS = ['/proc', '/sys', '/dev'];

const within = (outer: string, inner: string): boolean => inner === outer || inner.startsWith(outer.endsWith('/') ? outer : outer + '/');

/**
 * A folder to import holds only files and folders (no links, FIFOs, sockets or devices: a FIFO
 * would block the copy), every one readable, within the package limits of an upload.
 */
async function checkFolder(dir: string, shown: string, limitBytes: number): Promise<void> {
  let total = 0;
  for (const { e, full } of await listFolder(dir, shown)) {
    const rel = path.relative(dir, full);
    if (e.isSymbolicLink()) throw new PackageError(`${shown}: '${rel}' is a link; packages may hold only files and folders`);
    if (!e.isFile() && !e.isDirectory()) throw new PackageError(`${shown}: '${rel}' is ${kindOf(e)}; packages may hold only files and folders`);
    if (!e.isFile()) continue;
    try {
      await access(full, constants.R_OK);
      total += (await stat(full)).size;
    } catch (err) {
      throw new PackageError(`${shown}: '${rel}' cannot be read: ${unreadable(err, dir, shown)}`);
    }
    if (total > limitBytes) throw new GatewayError(413, 'PackageTooLarge', `source path '${shown}' holds more than ${limitBytes} bytes, over the package limit`);
  }
}

/** Everything under `dir`, folder by folder, stopping past MAX_ENTRIES (a source path may be /usr). */
async function listFolder(dir: string, shown: string): Promise<{ e: Dirent; full: string }[]> {
  const out: { e: Dirent; full: string }[] = [];
  const folders = [dir];
  for (let folder = folders.pop(); folder !== undefined; folder = folders.pop()) {
    let entries: Dirent[];
    try {
      entries = await readdir(folder, { withFileTypes: true });
    } catch (err) {
      throw new PackageError(`source path '${shown}' cannot be read: ${unreadable(err, dir, shown)}`);
    }
    for (const e of entries) {
      const full = path.join(folder, e.name);
      if (out.push({ e, full }) > MAX_ENTRIES) throw tooMany(`source path '${shown}'`);
      if (e.isDirectory()) folders.push(full);
    }
  }
  return out;
}

function kindOf(e: Dirent): string {
  if (e.isFIFO()) return 'a named pipe (FIFO)';
  if (e.isSocket()) return 'a socket';
  return 'a device';
}

const unreadable = (err: unknown, dir: string, shown: string): string =>
  (err as NodeJS.ErrnoException).code === 'EACCES' ? 'permission denied' : String((err as Error).message).replaceAll(dir, shown);

async function folderSize(dir: string): Promise<number> {
  let total = 0;
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (e.isFile()) total += (await stat(path.join(e.parentPath ?? (e as unknown as { path: string }).path, e.name))).size;
  }
  return total;
}
