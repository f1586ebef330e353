import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { Elem, floatTensor, model, node, onnx, valueInfo } from '../../scripts/onnx-builder.js';
import { tempDir } from './gateway.js';

/** Models of particular shapes, written by the test into a fresh models directory. */

/** y = x * 2 with x of shape [1,4]: a fixed batch of one. */
export function fixedBatchModel() {
  return model({
    graphName: 'fixed', doc: 'y = 2x, fixed batch 1', usesMl: false,
    inputs: [valueInfo('x', Elem.FLOAT, [1, 4])],
    outputs: [valueInfo('y', Elem.FLOAT, [1, 4])],
    initializers: [floatTensor('two', [], [2])],
    nodes: [node('Mul', ['x', 'two'], ['y'], { name: 'double' })],
  });
}

/** y = x * scale with x [N,3] and a scalar `scale`: must never be merged across requests. */
export function scalarInputModel() {
  return model({
    graphName: 'scaled', doc: 'y = x * scale', usesMl: false,
    inputs: [valueInfo('x', Elem.FLOAT, ['N', 3]), valueInfo('scale', Elem.FLOAT, [])],
    outputs: [valueInfo('y', Elem.FLOAT, ['N', 3])],
    nodes: [node('Mul', ['x', 'scale'], ['y'], { name: 'scale' })],
  });
}

export function writeModelsDir(models: Record<string, { proto: ReturnType<typeof model>; config?: Record<string, unknown> }>): string {
  const dir = tempDir('infergate-shapes-');
  for (const [name, m] of Object.entries(models)) {
    mkdirSync(path.join(dir, name));
    writeFileSync(path.join(dir, name, 'model.onnx'), onnx.ModelProto.encode(m.proto).finish());
    writeFileSync(path.join(dir, name, 'config.json'), JSON.stringify({ model_type: 'ONNX', ...m.config }));
  }
  return dir;
}
