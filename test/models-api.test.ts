import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { cpSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import net from 'node:net';
import { once } from 'node:events';
import zlib from 'node:zlib';
import { after, before, describe, test } from 'node:test';
import { tarGz, zip, type ArchiveEntry } from './helpers/archives.js';
import { ADMIN_TOKEN, SAMPLE_MODELS, api, postJson, startGateway, tempDir, upload, waitForService, type Answer, type RunningGateway } from './helpers/gateway.js';

const file = (model: string, name: string): Buffer => readFileSync(path.join(SAMPLE_MODELS, model, name));
const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');
const packageEntries = (model: string, prefix = ''): ArchiveEntry[] => [
  { name: `${prefix}config.json`, data: file(model, 'config.json') },
  { name: `${prefix}model.onnx`, data: file(model, 'model.onnx') },
];

function refused(a: Answer, status: number, code: string, msg: RegExp): void {
  assert.equal(a.status, status, a.text);
  assert.equal(a.json.error_code, code);
  assert.match(a.json.error_msg, msg);
}

describe('model import and versions', () => {
  let gw: RunningGateway;
  let many: string;
  before(async () => {
    // Made before any connection to the gateway is open: writing 100,000 files can outlast uWS's
    // 10 s keep-alive idle timeout, and a request sent as it closes the connection fails.
    many = tempDir('infergate-pkg-');
    cpSync(path.join(SAMPLE_MODELS, 'iris'), many, { recursive: true });
    mkdirSync(path.join(many, 'data'));
    for (let i = 0; i < 100_000; i++) writeFileSync(path.join(many, 'data', String(i)), '');
    gw = await startGateway({ modelsDir: path.join(SAMPLE_MODELS, 'nothing-here') });
  });
  after(async () => {
    await gw.stop();
  });

  test('a bare .onnx upload: stored with its sha256, deployable, answers like the sample', async () => {
    const onnx = file('ccfraud', 'model.onnx');
    const a = await upload(gw, { name: 'fraud', version: '1.0.0', description: 'bare onnx' }, 'ccfraud.onnx', onnx);
    assert.equal(a.status, 201, a.text);
    assert.equal(a.json.name, 'fraud');
    assert.equal(a.json.version, '1.0.0');
    assert.equal(a.json.sha256, sha(onnx));
    assert.equal(a.json.model_type, 'ONNX');
    assert.equal(a.json.status, 'normal');
    const got = await api(gw, 'GET', '/v1/models/fraud/versions/1.0.0');
    assert.equal(got.status, 200);
    assert.equal(got.json.sha256, sha(onnx));
    const created = await api(gw, 'POST', '/v1/services', { name: 'fraud-svc', auth: 'none', versions: [{ model: 'fraud', version: '1.0.0', weight: 100 }] });
    assert.equal(created.status, 202, created.text);
    assert.equal(created.json.status, 'deploying');
    await waitForService(gw, 'fraud-svc', 'running');
    const inferred = await postJson(`${gw.url}/v1/infers/fraud-svc`, [{ tensor: new Array(29).fill(0.5) }]);
    assert.equal(inferred.status, 200, inferred.text);
    assert.equal(inferred.headers.get('x-model-version'), 'fraud@1.0.0');
  });

  test('a .tar.gz package, with config.json at the top or in one top-level folder', async () => {
    const flat = await upload(gw, { name: 'iris-tar' }, 'iris.tar.gz', tarGz(packageEntries('iris')));
    assert.equal(flat.status, 201, flat.text);
    assert.equal(flat.json.version, '0.0.1');
    assert.deepEqual(flat.json.metrics.accuracy, 0.98);
    const nested = await upload(gw, { name: 'iris-tar' }, 'iris.tgz', tarGz([{ name: 'iris/', type: 'dir' }, ...packageEntries('iris', 'iris/')]));
    assert.equal(nested.status, 201, nested.text);
    assert.equal(nested.json.version, '0.0.2', 'no version given: the next one');
    const model = await api(gw, 'GET', '/v1/models/iris-tar');
    assert.deepEqual(model.json.versions.map((v: { version: string }) => v.version), ['0.0.1', '0.0.2']);
  });

  test('a .zip package', async () => {
    const a = await upload(gw, { name: 'credit', version: '2.0.0' }, 'credit-risk.zip', zip(packageEntries('credit-risk')));
    assert.equal(a.status, 201, a.text);
    assert.equal(a.json.sha256, sha(file('credit-risk', 'model.onnx')));
    assert.equal(a.json.demo_weights, true);
  });

  test('a folder on the gateway machine, by JSON source.path', async () => {
    const a = await api(gw, 'POST', '/v1/models', { name: 'iris-folder', version: '0.1.0', source: { path: path.join(SAMPLE_MODELS, 'iris') } });
    assert.equal(a.status, 201, a.text);
    assert.equal(a.statusText, 'Created', 'the status line is "201 Created"');
    assert.equal(a.json.sha256, sha(file('iris', 'model.onnx')));
    const missing = await api(gw, 'POST', '/v1/models', { name: 'nope', source: { path: '/no/such/folder' } });
    refused(missing, 400, 'IG.400.BadPackage', /source path '\/no\/such\/folder' is not a folder/);
  });

  test('a source.path that is no package folder is refused with 400 saying why, naming the path the client gave', async () => {
    const withFifo = tempDir('infergate-pkg-');
    cpSync(path.join(SAMPLE_MODELS, 'iris'), withFifo, { recursive: true });
    execFileSync('mkfifo', [path.join(withFifo, 'pipe')]);
    const withSocket = tempDir('infergate-pkg-');
    cpSync(path.join(SAMPLE_MODELS, 'iris'), withSocket, { recursive: true });
    const socket = net.createServer().listen(path.join(withSocket, 'sock'));
    await once(socket, 'listening');
    const noConfig = tempDir('infergate-pkg-');
    writeFileSync(path.join(noConfig, 'model.onnx'), file('iris', 'model.onnx'));
    const configFolder = tempDir('infergate-pkg-');
    mkdirSync(path.join(configFolder, 'config.json'));
    const cases: [string, RegExp][] = [
      ['/proc', /source path '\/proc' is in \/proc, the kernel's view of the machine, not a package folder/],
      ['/sys/kernel/mm', /source path '\/sys\/kernel\/mm' is in \/sys, the kernel's view of the machine/],
      ['/', /source path '\/' holds the gateway's data folder; import a package folder of its own/],
      [gw.dataDir, /holds the gateway's data folder/],
      [path.join(gw.dataDir, 'models'), /is inside the gateway's stored models; import the package's own folder/],
      [withSocket, /'sock' is a socket; packages may hold only files and folders/],
      [withFifo, /'pipe' is a named pipe \(FIFO\); packages may hold only files and folders/],
      [noConfig, new RegExp(`^${noConfig}: config\\.json is missing`)],
      [configFolder, new RegExp(`^${configFolder}/config\\.json: is a folder; config\\.json must be a file`)],
    ];
    try {
      for (const [source, msg] of cases) {
        refused(await api(gw, 'POST', '/v1/models', { name: 'nope', source: { path: source } }), 400, 'IG.400.BadPackage', msg);
      }
    } finally {
      socket.close();
    }
    // Nothing of them was kept, and imports go on.
    assert.equal((await api(gw, 'GET', '/v1/models/nope')).status, 404);
    assert.equal((await api(gw, 'POST', '/v1/models', { name: 'after-refusals', source: { path: path.join(SAMPLE_MODELS, 'iris') } })).status, 201);
  });

  test('a source.path folder over limits.max_package_bytes is refused with 413 before anything is copied', async () => {
    const small = await startGateway({ config: { limits: { max_package_bytes: 1024 } } });
    try {
      const a = await api(small, 'POST', '/v1/models', { name: 'big', source: { path: path.join(SAMPLE_MODELS, 'ccfraud') } });
      refused(a, 413, 'IG.413.PackageTooLarge', new RegExp(`^source path '${path.join(SAMPLE_MODELS, 'ccfraud')}' holds more than 1024 bytes, over the package limit$`));
      assert.deepEqual(readdirSync(path.join(small.dataDir, 'tmp')), [], 'no scratch copy was made');
    } finally {
      await small.stop();
    }
  });

  test('a source.path folder with more than 100,000 entries is refused before anything is copied', async () => {
    refused(await api(gw, 'POST', '/v1/models', { name: 'many', source: { path: many } }), 400, 'IG.400.BadPackage', new RegExp(`^source path '${many}': holds more than 100000 files and folders; a package holds at most 100000$`));
    assert.deepEqual(readdirSync(path.join(gw.dataDir, 'tmp')), [], 'no scratch copy was made');
  });

  test('an existing version is refused with 409', async () => {
    const a = await upload(gw, { name: 'fraud', version: '1.0.0' }, 'm.onnx', file('ccfraud', 'model.onnx'));
    refused(a, 409, 'IG.409.VersionExists', /model 'fraud' already has version '1.0.0'/);
  });

  test('a version that is not a folder name of its own (\'.\', \'..\') is refused, and the stored models keep their files', async () => {
    assert.equal((await upload(gw, { name: 'kept', version: '1.0.0' }, 'm.onnx', file('iris', 'model.onnx'))).status, 201);
    for (const version of ['..', '.', '.hidden']) {
      refused(await upload(gw, { name: 'evil', version }, 'm.onnx', file('ccfraud', 'model.onnx')), 400, 'IG.400.BadPackage', new RegExp(`version '${version.replace(/\./g, '\\.')}' must be 1–64 of A-Za-z0-9\\._-, starting with a letter or digit`));
      refused(await api(gw, 'POST', '/v1/models', { name: 'evil', version, source: { path: path.join(SAMPLE_MODELS, 'ccfraud') } }), 400, 'IG.400.BadPackage', /starting with a letter or digit/);
    }
    const kept = (await api(gw, 'GET', '/v1/models/kept')).json;
    assert.equal(kept.versions[0].version, '1.0.0');
    const stored = path.join(gw.dataDir, 'models', kept.id, '1.0.0', 'model.onnx');
    assert.equal(sha(readFileSync(stored)), sha(file('iris', 'model.onnx')));
  });

  test('imports of one version racing: one is stored, the other is 409, and the files are the row\'s', async () => {
    const [a, b] = await Promise.all([
      upload(gw, { name: 'race', version: '2.1' }, 'iris.onnx', file('iris', 'model.onnx')),
      upload(gw, { name: 'race', version: '2.1' }, 'fraud.onnx', file('ccfraud', 'model.onnx')),
    ]);
    assert.deepEqual([a.status, b.status].sort(), [201, 409], `${a.text}\n${b.text}`);
    const winner = a.status === 201 ? a : b;
    const model = (await api(gw, 'GET', '/v1/models/race')).json;
    assert.equal(model.versions.length, 1);
    assert.equal(model.versions[0].sha256, winner.json.sha256);
    assert.equal(sha(readFileSync(path.join(gw.dataDir, 'models', model.id, '2.1', 'model.onnx'))), winner.json.sha256);
  });

  test('a model deleted while a version of it is imported: no 500, and no version folder is left without its row', async () => {
    const source = { path: path.join(SAMPLE_MODELS, 'credit-risk') };
    for (let i = 0; i < 16; i++) {
      const name = `race-delete-${i}`;
      assert.equal((await api(gw, 'POST', '/v1/models', { name, version: '1.0.0', source })).status, 201);
      const imported = api(gw, 'POST', '/v1/models', { name, version: '2.0.0', source });
      // Spread over the import's course: reading, checking the model loads, storing.
      await new Promise((r) => setTimeout(r, i * 4));
      const [imp, del] = await Promise.all([imported, api(gw, 'DELETE', `/v1/models/${name}`)]);
      assert.equal(imp.status, 201, imp.text);
      assert.equal(del.status, 204, del.text);
    }
    const rows = new Set<string>();
    for (const m of (await api(gw, 'GET', '/v1/models')).json.models as { id: string; versions: { version: string }[] }[]) {
      for (const v of m.versions) rows.add(`${m.id}/${v.version}`);
    }
    const root = path.join(gw.dataDir, 'models');
    const folders = readdirSync(root).flatMap((id) => readdirSync(path.join(root, id)).map((v) => `${id}/${v}`));
    assert.deepEqual(folders.filter((f) => !rows.has(f)), [], 'version folders no row claims');
  });

  test('archive bombs stop at the first header over a limit: a declared size past the package limit, or too many entries', async () => {
    // A header declaring an 8 GiB file, and no data behind it.
    const header = Buffer.alloc(512);
    header.write('huge.bin', 0);
    header.write('0000644\0', 100);
    header.write('0000000\0', 108);
    header.write('0000000\0', 116);
    header.write('77777777777\0', 124);
    header.write('00000000000\0', 136);
    header.write('        ', 148);
    header.write('0', 156);
    header.write('ustar\0', 257);
    header.write('00', 263);
    let sum = 0;
    for (const x of header) sum += x;
    header.write(sum.toString(8).padStart(6, '0') + '\0 ', 148);
    const bomb = zlib.gzipSync(Buffer.concat([header, Buffer.alloc(64 * 1024)]));
    refused(await upload(gw, { name: 'bomb' }, 'bomb.tar.gz', bomb), 400, 'IG.400.BadPackage', /bomb\.tar\.gz: unpacks to more than the package size limit of \d+ bytes/);
    const many = tarGz([...packageEntries('iris'), ...Array.from({ length: 100_000 }, (_, i) => ({ name: `f/${i}`, data: '' }))]);
    refused(await upload(gw, { name: 'many' }, 'many.tar.gz', many), 400, 'IG.400.BadPackage', /many\.tar\.gz: holds more than 100000 files and folders; a package holds at most 100000/);
  });

  describe('bad packages are refused with 400 naming the file and what is wrong', () => {
    const cases: [string, string, () => Buffer, RegExp][] = [
      ['an entry escaping with ..', 'evil.tar.gz', () => tarGz([...packageEntries('iris'), { name: '../evil.txt', data: 'x' }]), /entry '\.\.\/evil\.txt' escapes the package folder/],
      ['an absolute entry', 'abs.tar.gz', () => tarGz([...packageEntries('iris'), { name: '/etc/evil', data: 'x' }]), /entry '\/etc\/evil' has an absolute path/],
      ['a symlink in a tar', 'link.tar.gz', () => tarGz([...packageEntries('iris'), { name: 'passwd', type: 'symlink', link: '/etc/passwd' }]), /entry 'passwd' is a link/],
      ['an entry escaping in a zip', 'evil.zip', () => zip([...packageEntries('iris'), { name: 'a/../../evil.txt', data: 'x' }]), /^evil\.zip: entry 'a\/\.\.\/\.\.\/evil\.txt' escapes the package folder \('\.\.'\); entries must stay inside it$/],
      ['a symlink in a zip', 'link.zip', () => zip([...packageEntries('iris'), { name: 'passwd', type: 'symlink', link: '/etc/passwd' }]), /entry 'passwd' is a link/],
      ['no config.json', 'noconfig.tar.gz', () => tarGz([{ name: 'model.onnx', data: file('iris', 'model.onnx') }]), /config\.json is missing/],
      ['an unknown model_type', 'tf.zip', () => zip([{ name: 'config.json', data: JSON.stringify({ model_type: 'TensorFlow' }) }, { name: 'model.onnx', data: file('iris', 'model.onnx') }]), /^tf\.zip\/config\.json: model_type "TensorFlow" is not supported; expected "ONNX" or "Image"/],
      ['a config.json that is not JSON', 'badcfg.tar.gz', () => tarGz([{ name: 'pkg/config.json', data: '{"model_type": ONNX}' }, { name: 'pkg/model.onnx', data: file('iris', 'model.onnx') }]), /^badcfg\.tar\.gz\/pkg\/config\.json: not valid JSON: /],
      ['a model file ONNX Runtime cannot load', 'garbage.onnx', () => Buffer.from('this is not an onnx model'), /model file 'model\.onnx' cannot be loaded by ONNX Runtime/],
      ['a missing model file', 'nomodel.zip', () => zip([{ name: 'config.json', data: JSON.stringify({ model_type: 'ONNX', model_file: 'net.onnx' }) }]), /^nomodel\.zip: model file 'net\.onnx' \(config "model_file"\) is missing/],
      ['an unknown file type', 'model.pkl', () => Buffer.from('pickle'), /file 'model\.pkl': expected a \.onnx model, a \.tar\.gz \(\.tgz\) or a \.zip package/],
      ['a corrupt archive', 'broken.zip', () => Buffer.from('PK not really'), /broken\.zip: not a readable \.zip archive/],
    ];
    for (const [what, filename, make, msg] of cases) {
      test(what, async () => {
        refused(await upload(gw, { name: 'bad' }, filename, make()), 400, 'IG.400.BadPackage', msg);
      });
    }

    test('multipart without a metadata or file part', async () => {
      const noFile = new FormData();
      noFile.append('metadata', JSON.stringify({ name: 'x' }));
      const a = await fetch(`${gw.url}/v1/models`, { method: 'POST', body: noFile, headers: { 'x-auth-token': ADMIN_TOKEN } });
      assert.equal(a.status, 400);
      assert.match(((await a.json()) as { error_msg: string }).error_msg, /needs a 'file' part/);
      const noMeta = new FormData();
      noMeta.append('file', new Blob([file('iris', 'model.onnx')]), 'm.onnx');
      const b = await fetch(`${gw.url}/v1/models`, { method: 'POST', body: noMeta, headers: { 'x-auth-token': ADMIN_TOKEN } });
      assert.equal(b.status, 400);
      assert.match(((await b.json()) as { error_msg: string }).error_msg, /needs a 'metadata' part with JSON \{"name", "version"\?, "description"\?, "project"\?\}/);
    });

    test('metadata fields of the wrong type name the field as the client sent it', async () => {
      refused(await upload(gw, { name: 'x', description: 5 }, 'm.onnx', file('iris', 'model.onnx')), 400, 'IG.400.BadSpec', /^metadata 'description' must be a string, got 5$/);
      refused(await api(gw, 'POST', '/v1/models', { description: 'd', source: { path: path.join(SAMPLE_MODELS, 'iris') } }), 400, 'IG.400.BadSpec', /^'name' must be a model name \(1–64 of A-Za-z0-9_-\), got nothing$/);
      refused(await api(gw, 'POST', '/v1/models', { name: 'x', version: 2, source: { path: path.join(SAMPLE_MODELS, 'iris') } }), 400, 'IG.400.BadSpec', /^'version' must be a string such as "0\.0\.1", got 2$/);
    });

    test('a bad model name', async () => {
      refused(await upload(gw, { name: 'no spaces allowed' }, 'm.onnx', file('iris', 'model.onnx')), 400, 'IG.400.BadPackage', /model name 'no spaces allowed' must be 1–64 of A-Za-z0-9_-/);
    });

    test('nothing of a refused package is kept', async () => {
      assert.equal((await api(gw, 'GET', '/v1/models/bad')).status, 404);
    });
  });

  test('a version in use cannot be deleted (409); an unused one can', async () => {
    const inUse = await api(gw, 'DELETE', '/v1/models/fraud/versions/1.0.0');
    refused(inUse, 409, 'IG.409.VersionInUse', /model 'fraud' version '1.0.0' is used by service 'fraud-svc'/);
    refused(await api(gw, 'DELETE', '/v1/models/fraud'), 409, 'IG.409.VersionInUse', /used by service 'fraud-svc'/);
    assert.equal((await api(gw, 'DELETE', '/v1/models/iris-tar/versions/0.0.1')).status, 204);
    refused(await api(gw, 'GET', '/v1/models/iris-tar/versions/0.0.1'), 404, 'IG.404.VersionNotFound', /model 'iris-tar' has no version '0.0.1'/);
    assert.equal((await api(gw, 'DELETE', '/v1/models/credit')).status, 204);
    refused(await api(gw, 'GET', '/v1/models/credit'), 404, 'IG.404.ModelNotFound', /model 'credit' does not exist/);
  });

  test('models list and events', async () => {
    const list = await api(gw, 'GET', '/v1/models');
    const names = list.json.models.map((m: { name: string }) => m.name);
    assert.ok(names.includes('fraud') && names.includes('iris-tar') && !names.includes('credit'));
    const events = await api(gw, 'GET', '/v1/models/iris-tar/events');
    assert.deepEqual(events.json.events.map((e: { message: string }) => e.message.replace(/ \(sha256 .*\)\./, '.')), [
      'Model iris-tar version 0.0.1 imported.',
      'Model iris-tar version 0.0.2 imported.',
      'Model iris-tar version 0.0.1 deleted.',
    ]);
  });
});

describe('package size limit', () => {
  test('a package over limits.max_package_bytes is refused with 413', async () => {
    const gw = await startGateway({ modelsDir: path.join(SAMPLE_MODELS, 'nothing-here'), config: { limits: { max_package_bytes: 2000 } } });
    try {
      refused(await upload(gw, { name: 'big' }, 'big.onnx', file('ccfraud', 'model.onnx')), 413, 'IG.413.PackageTooLarge', /package 'big\.onnx' is 3258 bytes, over the limit of 2000/);
      // Small when compressed, large when unpacked: the unpacked size is what counts.
      const bomb = tarGz([{ name: 'config.json', data: '{"model_type":"ONNX"}' }, { name: 'pad.bin', data: Buffer.alloc(50_000) }]);
      assert.ok(bomb.length < 2000);
      refused(await upload(gw, { name: 'big' }, 'big.tar.gz', bomb), 400, 'IG.400.BadPackage', /big\.tar\.gz: unpacks to more than the package size limit of 2000 bytes/);
    } finally {
      await gw.stop();
    }
  });
});
