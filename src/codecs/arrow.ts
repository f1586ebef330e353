import { GatewayError } from '../errors.js';
import type { ModelSignature } from '../runtime/onnx/signature.js';
import type { InferResult } from '../runtime/types.js';
import type { Decoded, Encoded, ServedBy, WireFormat } from './types.js';

export type ArrowKind = 'arrow-file' | 'arrow-stream';

/** Arrow IPC (file or stream) → a records request (SPEC §5.2): columns are record fields. */
export function decodeArrow(_body: Uint8Array, _kind: ArrowKind, _sig: ModelSignature, _reply: WireFormat): Decoded {
  throw new GatewayError(415, 'UnsupportedMediaType', 'Arrow bodies are not supported yet');
}

/** The answer as an Arrow table: time, in.<col>, out.<output>, check_failures. */
export function encodeArrow(_decoded: Decoded, _result: InferResult, _sig: ModelSignature, _by: ServedBy, _kind: ArrowKind): Encoded {
  throw new GatewayError(406, 'NotAcceptable', 'Arrow answers are not supported yet');
}
