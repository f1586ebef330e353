/**
 * Small helpers for writing ONNX models with onnx-proto: used by build-models.ts for the sample
 * packages and by tests that need a model of a particular shape.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import onnxProto from 'onnx-proto';

export const { onnx } = onnxProto;

export type ModelProto = InstanceType<typeof onnx.ModelProto>;
export type NodeProto = InstanceType<typeof onnx.NodeProto>;
export type AttributeProto = InstanceType<typeof onnx.AttributeProto>;
export type TensorProto = InstanceType<typeof onnx.TensorProto>;
export type ValueInfoProto = InstanceType<typeof onnx.ValueInfoProto>;

// ---------------------------------------------------------------------------------------------
// Shared constants
// ---------------------------------------------------------------------------------------------

export const PRODUCER_NAME = 'infergate build-models';
export const PRODUCER_VERSION = '1';
export const IR_VERSION = 8;
/** Default (ai.onnx) opset. */
export const ONNX_OPSET = 13;
/** ai.onnx.ml opset: LabelEncoder with keys_strings / values_floats / default_float is v2+. */
export const ONNX_ML_OPSET = 3;
export const ML_DOMAIN = 'ai.onnx.ml';
/** Symbolic batch dimension used on every input and output. */
export const BATCH_DIM = 'N';

export const Elem = {
  FLOAT: onnx.TensorProto.DataType.FLOAT,
  STRING: onnx.TensorProto.DataType.STRING,
} as const;
export type ElemType = (typeof Elem)[keyof typeof Elem];

export const Attr = onnx.AttributeProto.AttributeType;

// ---------------------------------------------------------------------------------------------
// ONNX builders
// ---------------------------------------------------------------------------------------------

export const utf8 = (s: string): Uint8Array => new Uint8Array(Buffer.from(s, 'utf8'));

export function valueInfo(name: string, elemType: ElemType, dims: (number | string)[], doc?: string): ValueInfoProto {
  return onnx.ValueInfoProto.create({
    name,
    docString: doc ?? '',
    type: onnx.TypeProto.create({
      tensorType: onnx.TypeProto.Tensor.create({
        elemType,
        shape: onnx.TensorShapeProto.create({
          dim: dims.map((d) =>
            typeof d === 'string'
              ? onnx.TensorShapeProto.Dimension.create({ dimParam: d })
              : onnx.TensorShapeProto.Dimension.create({ dimValue: d }),
          ),
        }),
      }),
    }),
  });
}

export function floatTensor(name: string, dims: number[], values: number[]): TensorProto {
  const expected = dims.reduce((a, b) => a * b, 1);
  if (values.length !== expected) throw new Error(`tensor ${name}: ${values.length} values for dims [${dims}]`);
  return onnx.TensorProto.create({
    name,
    dims,
    dataType: Elem.FLOAT,
    floatData: values.map((v) => Math.fround(v)),
  });
}

export type AttrValue =
  | { kind: 'int'; v: number }
  | { kind: 'float'; v: number }
  | { kind: 'string'; v: string }
  | { kind: 'ints'; v: number[] }
  | { kind: 'floats'; v: number[] }
  | { kind: 'strings'; v: string[] };

export function attribute(name: string, a: AttrValue): AttributeProto {
  switch (a.kind) {
    case 'int':
      return onnx.AttributeProto.create({ name, type: Attr.INT, i: a.v });
    case 'float':
      return onnx.AttributeProto.create({ name, type: Attr.FLOAT, f: Math.fround(a.v) });
    case 'string':
      return onnx.AttributeProto.create({ name, type: Attr.STRING, s: utf8(a.v) });
    case 'ints':
      return onnx.AttributeProto.create({ name, type: Attr.INTS, ints: a.v });
    case 'floats':
      return onnx.AttributeProto.create({ name, type: Attr.FLOATS, floats: a.v.map((v) => Math.fround(v)) });
    case 'strings':
      return onnx.AttributeProto.create({ name, type: Attr.STRINGS, strings: a.v.map(utf8) });
  }
}

export function node(
  opType: string,
  inputs: string[],
  outputs: string[],
  opts: { name: string; domain?: string; doc?: string; attrs?: Record<string, AttrValue> },
): NodeProto {
  return onnx.NodeProto.create({
    name: opts.name,
    opType,
    domain: opts.domain ?? '',
    input: inputs,
    output: outputs,
    docString: opts.doc ?? '',
    attribute: Object.entries(opts.attrs ?? {}).map(([k, v]) => attribute(k, v)),
  });
}

export function model(opts: {
  graphName: string;
  doc: string;
  nodes: NodeProto[];
  inputs: ValueInfoProto[];
  outputs: ValueInfoProto[];
  initializers?: TensorProto[];
  usesMl: boolean;
}): ModelProto {
  const opsetImport = [onnx.OperatorSetIdProto.create({ domain: '', version: ONNX_OPSET })];
  if (opts.usesMl) opsetImport.push(onnx.OperatorSetIdProto.create({ domain: ML_DOMAIN, version: ONNX_ML_OPSET }));
  return onnx.ModelProto.create({
    irVersion: IR_VERSION,
    opsetImport,
    producerName: PRODUCER_NAME,
    producerVersion: PRODUCER_VERSION,
    domain: 'ai.infergate.samples',
    modelVersion: 1,
    docString: opts.doc,
    graph: onnx.GraphProto.create({
      name: opts.graphName,
      docString: opts.doc,
      node: opts.nodes,
      input: opts.inputs,
      output: opts.outputs,
      initializer: opts.initializers ?? [],
    }),
  });
}

export function writePackage(outDir: string, name: string, m: ModelProto, config: unknown): void {
  const dir = path.join(outDir, name);
  mkdirSync(dir, { recursive: true });
  const err = onnx.ModelProto.verify(m);
  if (err) throw new Error(`${name}: invalid ModelProto: ${err}`);
  const bytes = onnx.ModelProto.encode(m).finish();
  writeFileSync(path.join(dir, 'model.onnx'), bytes);
  writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config, null, 2) + '\n');
  console.log(`wrote ${path.join(dir, 'model.onnx')} (${bytes.length} bytes) and config.json`);
}

