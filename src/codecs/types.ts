import type { ModelSignature } from '../runtime/onnx/signature.js';
import type { InferRequest, InferResult } from '../runtime/types.js';

/** Who answered a request: fixed per service version, so its JSON fragments are built once. */
export interface ServedBy {
  modelName: string;
  modelVersion: string;
  modelSha: string;
  /** `model@version`, the X-Model-Version header. */
  label: string;
  /** Wallaroo's `pipeline_version`. */
  serviceVersion: string;
  /** `"metadata":{"last_model":…,"pipeline_version":…,"elapsed":[` ready to append to. */
  pandasMetadataPrefix: string;
  /** `,"_model_split":[…]` for services that split traffic between versions (Wallaroo A/B), else ''. */
  modelSplit: string;
}

/**
 * How a body is written on the wire, apart from its shape: a msgpack body holds any JSON shape,
 * and an answer may be asked for in another encoding than the request's (Accept).
 */
export type WireFormat = 'json' | 'msgpack' | 'arrow-file' | 'arrow-stream';

/** A request decoded by one codec, with what that codec needs to encode the answer. */
export interface Decoded {
  codec: Codec;
  request: InferRequest;
  /** Codec-private state: uuid, v2 id and requested outputs, the records to echo, … */
  state: unknown;
  /** The encoding the answer goes out in: the request's, unless Accept named another. */
  reply: WireFormat;
}

export interface Encoded {
  body: string | Uint8Array;
  contentType: string;
  headers?: Record<string, string>;
}

/** One request shape (SPEC §5.2): decoded by its own function, answered in JSON text or as a plain value. */
export interface Codec {
  readonly name: string;
  /** The answer as JSON text, written by hand (the hot path). */
  encode(decoded: Decoded, result: InferResult, sig: ModelSignature, servedBy: ServedBy): Encoded;
  /** The same answer as plain values (arrays, objects, numbers, strings), for msgpack. */
  value(decoded: Decoded, result: InferResult, sig: ModelSignature, servedBy: ServedBy): unknown;
}

export function servedBy(modelName: string, modelVersion: string, modelSha: string, serviceVersion: string, split = false): ServedBy {
  const lastModel = JSON.stringify({ model_name: modelName, model_sha: modelSha });
  return {
    modelName,
    modelVersion,
    modelSha,
    label: `${modelName}@${modelVersion}`,
    serviceVersion,
    pandasMetadataPrefix: `"metadata":{"last_model":${JSON.stringify(lastModel)},"pipeline_version":${JSON.stringify(serviceVersion)},"elapsed":[`,
    modelSplit: split ? `,"_model_split":[${JSON.stringify({ name: modelName, version: modelVersion, sha: modelSha })}]` : '',
  };
}
