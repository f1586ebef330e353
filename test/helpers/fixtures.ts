import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { SAMPLE_MODELS, tempDir } from './gateway.js';

export interface FixturePackage {
  /** The sample package whose model.onnx and config.json it starts from. */
  from: string;
  /** Fields merged over the sample's config.json. */
  config?: Record<string, unknown>;
  /** customize_service.js source (CommonJS: the temp folder has no package.json). */
  hook?: string;
}

/** A models directory of packages built from the samples, for tests that need other settings. */
export function makeModelsDir(packages: Record<string, FixturePackage>): string {
  const dir = tempDir('infergate-models-');
  for (const [name, p] of Object.entries(packages)) {
    const src = path.join(SAMPLE_MODELS, p.from);
    const dst = path.join(dir, name);
    mkdirSync(dst);
    copyFileSync(path.join(src, 'model.onnx'), path.join(dst, 'model.onnx'));
    const config = { ...(JSON.parse(readFileSync(path.join(src, 'config.json'), 'utf8')) as object), ...p.config };
    writeFileSync(path.join(dst, 'config.json'), JSON.stringify(config, null, 2));
    if (p.hook) writeFileSync(path.join(dst, 'customize_service.js'), p.hook);
  }
  return dir;
}

/**
 * A ccfraud hook that misbehaves on cue, through the first value of the first row:
 * 666 ends the worker thread, 777 throws, 555 blocks the worker for `SLEEP_MS`.
 */
export const SLEEP_MS = 1000;
export const MISCHIEF_HOOK = `
exports.preprocess = function (feeds) {
  const x = feeds.tensor.data[0];
  if (x === 666) process.exit(1);
  if (x === 777) throw new Error('hook refused the value 777');
  if (x === 555) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ${SLEEP_MS});
  return feeds;
};
`;

export function cueRow(first: number): number[] {
  return [first, ...Array.from({ length: 28 }, (_, i) => (i % 7) / 7)];
}
