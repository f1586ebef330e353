/**
 * apache-arrow takes ~13 MB once loaded; most gateways never see an Arrow body. The Arrow codec
 * and the log's Arrow pages are loaded on first use instead of at start.
 */
type ArrowCodec = typeof import('./arrow.js');
type ArrowLog = typeof import('./arrow-log.js');

let codec: ArrowCodec | null = null;
let loading: Promise<ArrowCodec> | null = null;

/** The codec when it is loaded already, else null. */
export function arrowCodec(): ArrowCodec | null {
  return codec;
}

export function loadArrowCodec(): Promise<ArrowCodec> {
  loading ??= import('./arrow.js').then((m) => (codec = m));
  return loading;
}

export function loadArrowLog(): Promise<ArrowLog> {
  return import('./arrow-log.js');
}
