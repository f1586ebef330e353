import type sharpModule from 'sharp';
import { badRequest, GatewayError } from '../errors.js';
import type { IoSpec, ModelSignature } from '../runtime/onnx/signature.js';
import { describeDims } from '../runtime/onnx/signature.js';
import { allocate, bytesPerElement, type Tensor, type TypedData } from '../runtime/onnx/tensor.js';
import { toHalf } from './values.js';

/**
 * Image files → one input's rows, as config.json `preprocess.image` says (SPEC §4): decoded by
 * sharp (libvips, on libuv's thread pool, so the event loop keeps serving), oriented by EXIF,
 * alpha dropped, converted to RGB or grey, resized, then scaled and normalised per channel into
 * the input's layout and element type.
 */

export type ImageSpec = NonNullable<ModelSignature['image']>;

export interface ImagePart {
  /** "part 'images' (cat.png)", for messages. */
  where: string;
  bytes: Uint8Array;
}

/** sharp (libvips) takes ~11 MB once loaded: it is loaded with the first image, not at start. */
let sharpLoaded: Promise<typeof sharpModule> | null = null;
function loadSharp(): Promise<typeof sharpModule> {
  sharpLoaded ??= import('sharp').then((m) => {
    // Each upload is decoded once: sharp's operation cache would only hold clients' images in memory.
    m.default.cache(false);
    return m.default;
  });
  return sharpLoaded;
}

/** Images per request: each costs a decode on the thread pool. */
export const MAX_IMAGES = 256;
/** A decompression bomb stops here: about a 40-megapixel photo, far above any model's input. */
const MAX_INPUT_PIXELS = 40_000_000;
/** Without a resize the image is the tensor: 4096² RGB is already 200 MB of float32. */
const MAX_OWN_SIZE_PIXELS = 4096 * 4096;
/** All images of one request together, as tensor bytes. */
const MAX_TENSOR_BYTES = 256 * 1024 * 1024;

/** Formats told apart by their first bytes; SVG and other text formats never reach a decoder. */
export function sniffImage(b: Uint8Array): string | null {
  const at = (off: number, s: string): boolean => {
    if (b.length < off + s.length) return false;
    for (let i = 0; i < s.length; i++) if (b[off + i] !== s.charCodeAt(i)) return false;
    return true;
  };
  if (b.length >= 3 && b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff) return 'jpeg';
  if (at(0, '\x89PNG\r\n\x1a\n')) return 'png';
  if (at(0, 'GIF87a') || at(0, 'GIF89a')) return 'gif';
  if (at(0, 'RIFF') && at(8, 'WEBP')) return 'webp';
  if (at(0, 'II*\0') || at(0, 'MM\0*')) return 'tiff';
  if (at(4, 'ftyp') && ['avif', 'avis', 'heic', 'heix', 'mif1', 'msf1', 'hevc', 'heim', 'heis'].some((brand) => at(8, brand))) return 'heif';
  return null;
}

export const IMAGE_FORMATS = 'JPEG, PNG, WebP, GIF, TIFF, AVIF or HEIF';

interface Pixels {
  data: Buffer;
  width: number;
  height: number;
  channels: number;
}

/** Every image part, stacked in part order into the input's rows. */
export async function imageTensor(parts: readonly ImagePart[], pre: ImageSpec, spec: IoSpec): Promise<Tensor> {
  const channels = pre.channels === 'GRAY' ? 1 : 3;
  if (spec.type === 'string' || spec.type === 'bool' || spec.type === 'int8') {
    // signature.ts refuses string and bool; int8 cannot hold 0–255.
    throw new GatewayError(500, 'ImageConfig', `preprocess.image feeds input '${spec.name}', which is ${spec.type}; images need a float or unsigned-range integer input`);
  }
  if (spec.fixedBatch > 0 && parts.length !== spec.fixedBatch) {
    throw badRequest(`input '${spec.name}' has a fixed batch of ${spec.fixedBatch} (shape ${describeDims(spec.dims)}); send exactly ${spec.fixedBatch} image${spec.fixedBatch > 1 ? 's' : ''}, got ${parts.length}`, 'WrongShape');
  }
  const [H, W] = pre.layout === 'NCHW' ? [spec.dims[2]!, spec.dims[3]!] : [spec.dims[1]!, spec.dims[2]!];
  const bytesPer = bytesPerElement(spec.type);
  // Sizes first, from the images' headers: a request refused for its sizes decodes no pixels.
  const probes = await Promise.all(parts.map((p) => probe(p, pre)));
  let frameW: number;
  let frameH: number;
  if (pre.resize) {
    [frameW, frameH] = pre.resize;
  } else {
    // Without a resize every image keeps its size, so they must agree with each other and the model.
    frameW = probes[0]!.width;
    frameH = probes[0]!.height;
    for (let i = 1; i < probes.length; i++) {
      const p = probes[i]!;
      if (p.width !== frameW || p.height !== frameH) {
        throw badRequest(`${parts[i]!.where} is ${p.width}×${p.height} but ${parts[0]!.where} is ${frameW}×${frameH}; without preprocess.image.resize every image of a request must have the same size`, 'WrongShape');
      }
    }
    if ((W >= 0 && W !== frameW) || (H >= 0 && H !== frameH)) {
      throw badRequest(`${parts[0]!.where} is ${frameW}×${frameH} but input '${spec.name}' takes ${W >= 0 ? W : 'any'}×${H >= 0 ? H : 'any'} (width×height, shape ${describeDims(spec.dims)}); resize the image or set preprocess.image.resize`, 'WrongShape');
    }
  }
  if (parts.length * frameW * frameH * channels * bytesPer > MAX_TENSOR_BYTES) {
    throw badRequest(`${parts.length} images of ${frameW}×${frameH} make a tensor over ${MAX_TENSOR_BYTES >> 20} MiB; send fewer or smaller images`, 'TooLarge');
  }
  const pixels = await Promise.all(probes.map((p) => decodeLimit(() => decode(p, channels))));

  const n = parts.length;
  const plane = frameW * frameH;
  const data = allocate(spec.type, n * plane * channels) as TypedData;
  const luts = lookupTables(pre, spec.type, channels);
  const nchw = pre.layout === 'NCHW';
  for (let k = 0; k < n; k++) {
    const px = pixels[k]!;
    const base = k * plane * channels;
    for (let c = 0; c < channels; c++) {
      // BGR models read OpenCV's channel order: output channel 0 is the image's blue.
      const src = pre.channels === 'BGR' ? 2 - c : c;
      const lut = luts[c]!;
      for (let y = 0; y < px.height; y++) {
        let from = y * px.width * channels + src;
        let to = nchw ? base + c * plane + y * frameW : base + y * frameW * channels + c;
        const step = nchw ? 1 : channels;
        for (let x = 0; x < px.width; x++, from += channels, to += step) {
          (data as Float32Array)[to] = lut[px.data[from]!] as number;
        }
      }
    }
  }
  const dims = nchw ? [n, channels, frameH, frameW] : [n, frameH, frameW, channels];
  return { type: spec.type, dims, data };
}

/** For each channel, the input value of every 0–255 pixel value: (v·scale − mean) / std, or v itself for integer inputs. */
function lookupTables(pre: ImageSpec, type: IoSpec['type'], channels: number): Array<ArrayLike<number | bigint>> {
  const tables: Array<ArrayLike<number | bigint>> = [];
  for (let c = 0; c < channels; c++) {
    const t = new Array<number | bigint>(256);
    for (let v = 0; v < 256; v++) {
      if (type === 'float32' || type === 'float64') t[v] = (v * pre.scale - pre.mean[c]!) / pre.std[c]!;
      else if (type === 'float16') t[v] = toHalf((v * pre.scale - pre.mean[c]!) / pre.std[c]!);
      else if (type === 'int64' || type === 'uint64') t[v] = BigInt(v);
      else t[v] = v;
    }
    // float32 tables are rounded once here rather than on every store.
    tables.push(type === 'float32' ? Float32Array.from(t as number[]) : t);
  }
  return tables;
}

/** An image part whose header was read: its format and its size as it will be fed (after any resize). */
interface Probe {
  part: ImagePart;
  format: string;
  input: Buffer;
  /** Its size as stored, turned by its EXIF orientation. */
  own: [number, number];
  width: number;
  height: number;
}

const SHARP_OPTIONS = { limitInputPixels: MAX_INPUT_PIXELS, pages: 1 };

/** Reads an image's header only (format, size, orientation): no pixel is decoded. */
async function probe(part: ImagePart, pre: ImageSpec): Promise<Probe> {
  const format = sniffImage(part.bytes);
  if (!format) throw badRequest(`${part.where} is not a ${IMAGE_FORMATS} image (its first bytes are no known image signature)`, 'BadImage');
  const input = Buffer.from(part.bytes.buffer, part.bytes.byteOffset, part.bytes.byteLength);
  let w: number | undefined;
  let h: number | undefined;
  try {
    const meta = await (await loadSharp())(input, SHARP_OPTIONS).metadata();
    // EXIF orientations 5–8 swap width and height.
    w = meta.autoOrient?.width ?? meta.width;
    h = meta.autoOrient?.height ?? meta.height;
  } catch (err) {
    throw undecodable(part, format, err);
  }
  if (!w || !h) throw badRequest(`${part.where}: the ${format} image has no size`, 'BadImage');
  if (!pre.resize && w * h > MAX_OWN_SIZE_PIXELS) {
    throw badRequest(`${part.where} is ${w}×${h}; without preprocess.image.resize images are fed at their own size, at most ${MAX_OWN_SIZE_PIXELS} pixels`, 'TooLarge');
  }
  const [tw, th] = !pre.resize ? [w, h] : pre.fit === 'pad' ? fitInside(w, h, pre.resize[0], pre.resize[1]) : pre.resize;
  return { part, format, input, own: [w, h], width: tw, height: th };
}

async function decode(p: Probe, channels: number): Promise<Pixels> {
  try {
    const sharp = await loadSharp();
    let img = sharp(p.input, SHARP_OPTIONS).autoOrient();
    img = channels === 1 ? img.grayscale() : img.toColourspace('srgb');
    img = img.removeAlpha();
    // Bilinear, as OpenCV's default cv2.resize in the preprocessing most models were trained with.
    if (p.width !== p.own[0] || p.height !== p.own[1]) img = img.resize(p.width, p.height, { fit: 'fill', kernel: 'linear' });
    const { data, info } = await img.raw().toBuffer({ resolveWithObject: true });
    if (info.channels !== channels || data.length !== info.width * info.height * channels) {
      throw new Error(`decoded to ${info.channels} channels and ${data.length} bytes, expected ${channels} channels of 8 bits`);
    }
    return { data, width: info.width, height: info.height, channels };
  } catch (err) {
    if (err instanceof GatewayError) throw err;
    throw undecodable(p.part, p.format, err);
  }
}

function undecodable(part: ImagePart, format: string, err: unknown): GatewayError {
  if (err instanceof GatewayError) return err;
  const msg = (err instanceof Error ? err.message : String(err)).split('\n')[0]!.slice(0, 200);
  return badRequest(`${part.where} could not be decoded as a ${format} image: ${msg}`, 'BadImage');
}

/**
 * Pixel decodes run on libuv's thread pool (4 threads), which file and DNS work share: at most
 * this many at once across all requests, so a burst of uploads cannot take all of it.
 */
const MAX_DECODES = 2;
let decoding = 0;
const decodeQueue: (() => void)[] = [];

async function decodeLimit<T>(run: () => Promise<T>): Promise<T> {
  if (decoding >= MAX_DECODES) await new Promise<void>((resolve) => decodeQueue.push(resolve));
  decoding++;
  try {
    return await run();
  } finally {
    decoding--;
    decodeQueue.shift()?.();
  }
}

/**
 * fit 'pad': the largest size inside [W, H] with the image's aspect ratio. The scaled side is
 * rounded up, as PaddleOCR's resize_norm_img does (ceil(H · w/h)), so text lines of ratio up to
 * W/H get exactly its widths.
 */
export function fitInside(w: number, h: number, W: number, H: number): [number, number] {
  if (w * H <= W * h) return [Math.min(W, Math.max(1, Math.ceil(H * (w / h)))), H];
  return [W, Math.min(H, Math.max(1, Math.ceil(W * (h / w))))];
}
