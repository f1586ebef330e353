import { GatewayError } from '../errors.js';
import type { ModelSignature } from '../runtime/onnx/signature.js';
import type { Decoded, WireFormat } from './types.js';

/**
 * multipart/form-data (SPEC §5.3): `.npy` and JSON parts named after inputs, image parts through
 * the model's preprocess.image, anything else to the preprocess hook as {field: {filename: bytes}}.
 * Images decode asynchronously; what is kept of the body is copied before this returns.
 */
export function decodeMultipart(_body: Uint8Array, _contentType: string, _sig: ModelSignature, _reply: WireFormat): Decoded | Promise<Decoded> {
  throw new GatewayError(415, 'UnsupportedMediaType', 'multipart bodies are not supported yet');
}
