import type { Tensor } from './onnx/tensor.js';
import type { RawParts } from './onnx/protocol.js';

/** The one internal request every codec produces: tensors aligned with the model's inputs. */
export interface InferRequest {
  /** inputs[i] feeds signature.inputs[i]. */
  inputs: Tensor[];
  /** Rows along dimension 0 (1 for models without a batch dimension); for raw parts, known once the run answers. */
  rows: number;
  /** Multipart parts for the preprocess hook instead of tensors (inputs is empty): the request runs alone. */
  parts?: RawParts;
}

/** The one internal result every codec encodes: tensors aligned with the model's outputs. */
export interface InferResult {
  /** The whole batch's outputs, aligned with the model's outputs; this request's rows start at `offset`. */
  outputs: Tensor[];
  offset: number;
  /** The run was this request's alone: its outputs are whole, whatever their first dimension. */
  whole: boolean;
  /** Nanoseconds spent queued before the batch ran, and running it (Wallaroo `elapsed`). */
  queueNs: number;
  runNs: number;
  /** A postprocess hook's own answer instead of tensors: sent as the reply body. */
  custom?: unknown;
}
