import { badRequest } from '../../errors.js';
import type { InferRequest, InferResult } from '../types.js';
import type { IoSpec, ModelSignature } from './signature.js';
import { allocate, elementCount, type Tensor, type TypedData } from './tensor.js';

/**
 * The state a streaming model keeps per WebSocket connection (SPEC §5.5, config.json
 * `stream.state`): each run's state outputs feed the next run's state inputs, zeros at first and
 * after `{"reset": true}`. Clients send and receive everything but the state.
 */

const CLIENT_VIEWS = new WeakMap<ModelSignature, ModelSignature>();

/** The model as a stream client sees it: without the state inputs and outputs the gateway keeps. */
export function clientSignature(sig: ModelSignature): ModelSignature {
  let view = CLIENT_VIEWS.get(sig);
  if (view) return view;
  const stateIn = new Set(sig.stream?.map((s) => s.input));
  const stateOut = new Set(sig.stream?.map((s) => s.output));
  const inputs = sig.inputs.filter((s) => !stateIn.has(s.name));
  const outputs = sig.outputs.filter((s) => !stateOut.has(s.name));
  view = {
    ...sig,
    inputs,
    outputs,
    inputIndex: new Map(inputs.map((s, i) => [s.name, i])),
    outputIndex: new Map(outputs.map((s, i) => [s.name, i])),
    outputKeysJson: outputs.map((o) => JSON.stringify(o.name)),
    outputListJson: JSON.stringify(outputs.map((o) => o.name)),
    features: null,
    featureIndex: null,
  };
  CLIENT_VIEWS.set(sig, view);
  return view;
}

export class StreamState {
  private readonly kept: (Tensor | null)[];
  /** For each model input: its state slot, or the client input it comes from. */
  private readonly sources: ({ state: number } | { client: number })[];
  /** For each model output: kept as state (its slot), or -1. */
  private readonly outputSlots: number[];

  constructor(readonly sig: ModelSignature) {
    const stream = sig.stream ?? [];
    const client = clientSignature(sig);
    this.kept = stream.map(() => null);
    this.sources = sig.inputs.map((s) => {
      const slot = stream.findIndex((st) => st.input === s.name);
      return slot >= 0 ? { state: slot } : { client: client.inputIndex.get(s.name)! };
    });
    this.outputSlots = sig.outputs.map((o) => stream.findIndex((st) => st.output === o.name));
  }

  get client(): ModelSignature {
    return clientSignature(this.sig);
  }

  /** The client's request (decoded against `client`) with the state inputs added, in model order. */
  feed(request: InferRequest): InferRequest {
    const inputs = this.sources.map((src, i): Tensor => {
      if ('client' in src) return request.inputs[src.client]!;
      const kept = this.kept[src.state];
      if (kept) checkStateRows(this.sig.inputs[i]!, kept, request.rows);
      // The tensor moves to a worker: the kept copy stays here for the next run.
      if (kept) return { type: kept.type, dims: kept.dims, data: (kept.data as TypedData).slice() };
      return zeros(this.sig.inputs[i]!, request.rows);
    });
    return { inputs, rows: request.rows };
  }

  /** Keeps this run's state outputs; the result the client sees loses them. */
  keep(result: InferResult): InferResult {
    const outputs: Tensor[] = [];
    for (let o = 0; o < result.outputs.length; o++) {
      const slot = this.outputSlots[o]!;
      if (slot >= 0) this.kept[slot] = result.outputs[o]!;
      else outputs.push(result.outputs[o]!);
    }
    return { ...result, outputs };
  }

  reset(): void {
    this.kept.fill(null);
  }
}

/** The state kept has the rows of the messages it came from: a message of other rows cannot continue it. */
function checkStateRows(spec: IoSpec, kept: Tensor, rows: number): void {
  const k = spec.dims.findIndex((d) => d < 0);
  if (k < 0 || kept.dims[k] === rows) return;
  const held = kept.dims[k]!;
  throw badRequest(
    `this connection's stream state ('${spec.name}') holds ${held} row${held === 1 ? '' : 's'} from its earlier messages, and this message has ${rows}; send ${held} row${held === 1 ? '' : 's'}, or {"reset": true} first to start afresh`,
    'WrongShape',
  );
}

/** Zeros of a state input's shape; its symbolic dimensions take the request's rows (Silero's state is [2, N, 128]). */
function zeros(spec: IoSpec, rows: number): Tensor {
  const dims = spec.dims.map((d) => (d < 0 ? rows : d));
  return { type: spec.type, dims, data: allocate(spec.type, elementCount(dims)) as TypedData };
}
