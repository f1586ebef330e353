import sharp from 'sharp';

/**
 * Test images made with sharp, and PaddleOCR's cls preprocessing written out in plain JS as the
 * reference the gateway's declarative preprocess.image is compared with.
 */

/** A line of dark text on white, as a text detector would crop it; flipped: turned 180°. */
export async function textLine(text: string, opts: { flip?: boolean; format?: 'png' | 'jpeg' } = {}): Promise<Buffer> {
  const line = await sharp({ text: { text, font: 'DejaVu Sans 16', dpi: 150 } })
    .negate({ alpha: false })
    .extend({ top: 14, bottom: 14, left: 10, right: 10, background: '#ffffff' })
    .png()
    .toBuffer();
  let img = sharp(line);
  if (opts.flip) img = sharp(await img.rotate(180).png().toBuffer());
  return opts.format === 'jpeg' ? img.jpeg({ quality: 90 }).toBuffer() : img.png().toBuffer();
}

/** One colour, w×h, as PNG. */
export function solid(w: number, h: number, rgb: [number, number, number]): Promise<Buffer> {
  return sharp({ create: { width: w, height: h, channels: 3, background: { r: rgb[0], g: rgb[1], b: rgb[2] } } }).png().toBuffer();
}

/** w×h RGB PNG whose pixel (x, y) is [x·40, y·60, 255 − x·20]: every pixel and channel tells where it came from. */
export async function gradient(w: number, h: number): Promise<{ png: Buffer; pixel: (x: number, y: number) => [number, number, number] }> {
  const pixel = (x: number, y: number): [number, number, number] => [x * 40, y * 60, 255 - x * 20];
  const raw = Buffer.alloc(w * h * 3);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) raw.set(pixel(x, y), (y * w + x) * 3);
  const png = await sharp(raw, { raw: { width: w, height: h, channels: 3 } }).png().toBuffer();
  return { png, pixel };
}

export const CLS_H = 48;
export const CLS_W = 192;

/**
 * PaddleOCR ClsPredictor.resize_norm_img for one image: height 48, width ceil(48·w/h) up to 192,
 * bilinear resize, BGR (cv2's order), (v/255 − 0.5)/0.5, CHW, zero padding on the right.
 */
export async function paddleClsInput(img: Buffer): Promise<Float32Array> {
  const meta = await sharp(img).metadata();
  const ratio = meta.width! / meta.height!;
  const rw = Math.min(CLS_W, Math.ceil(CLS_H * ratio));
  const { data } = await sharp(img).removeAlpha().toColourspace('srgb').resize(rw, CLS_H, { fit: 'fill', kernel: 'linear' }).raw().toBuffer({ resolveWithObject: true });
  const out = new Float32Array(3 * CLS_H * CLS_W);
  for (let c = 0; c < 3; c++) {
    for (let y = 0; y < CLS_H; y++) {
      for (let x = 0; x < rw; x++) {
        const v = data[(y * rw + x) * 3 + (2 - c)]!;
        out[c * CLS_H * CLS_W + y * CLS_W + x] = (v / 255 - 0.5) / 0.5;
      }
    }
  }
  return out;
}
