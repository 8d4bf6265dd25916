// The drawing -> the 28x28 white-on-black input the models expect: serve/runtime/preprocess.py's `mnist`
// and `box` methods, ported once. The Python module is the reference (tests/test_web_parity.py
// holds the two together); every Pillow and numpy step it uses is reproduced here with the same
// integer and float32 arithmetic, so the two agree pixel for pixel on the test set.
//
// Pipeline: RGBA canvas -> 8-bit grey (alpha composited onto white, or black for light ink on
// transparency) -> ink map (background level and polarity from the border, faint noise removed)
// -> ink box (speckles ignored on large images) -> stretched to full white -> 28x28.
//
// The constants (noise level, box size, box padding, ...) come from the Python module by way of
// the site's site.json (flaxdigits web writes them), never copied here.

export class EmptyCanvasError extends Error {}

// Python's round(): half to even, on the same double.
export function roundHalfEven(x) {
  const r = Math.round(x);
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

const f32 = Math.fround;

// ------------------------------------------------------------------------------------ grey

// Pillow's L = R*299/1000 + G*587/1000 + B*114/1000 in 16-bit fixed point (Convert.c, L24).
function luma(r, g, b) {
  return (r * 19595 + g * 38470 + b * 7471 + 0x8000) >>> 16;
}

// Pillow's Image.alpha_composite of src over an opaque plain dst (AlphaComposite.c, 7 bits).
function compositeOver(src, alpha, dst) {
  if (alpha === 0) return dst;
  const coef1 = alpha * 128; // src.a * 255 * 255 * 128 / (255 * 255), exact for an opaque dst
  const coef2 = 255 * 128 - coef1;
  const tmp = src * coef1 + dst * coef2 + (0x80 << 7);
  return (((tmp >>> 8) + tmp) >>> 8) >>> 7;
}

/** RGBA bytes (width*height*4) -> grey bytes, as serve/runtime/preprocess.py's _grey. */
export function greyFromRgba(rgba, width, height) {
  const n = width * height;
  const grey = new Uint8Array(n);
  let minAlpha = 255;
  let opaque = 0;
  for (let i = 0; i < n; i++) {
    const a = rgba[4 * i + 3];
    if (a < minAlpha) minAlpha = a;
    if (a >= 128) opaque++;
  }
  if (minAlpha === 255) {
    for (let i = 0; i < n; i++) grey[i] = luma(rgba[4 * i], rgba[4 * i + 1], rgba[4 * i + 2]);
    return grey;
  }
  let background = 255;
  // A transparent canvas with light strokes: white would hide the ink, so it goes onto black.
  if (opaque > 0 && opaque < n / 2) {
    const lum = [];
    for (let i = 0; i < n; i++) {
      if (rgba[4 * i + 3] >= 128) lum.push(luma(rgba[4 * i], rgba[4 * i + 1], rgba[4 * i + 2]));
    }
    if (median(lum) > 127) background = 0;
  }
  for (let i = 0; i < n; i++) {
    const a = rgba[4 * i + 3];
    const r = compositeOver(rgba[4 * i], a, background);
    const g = compositeOver(rgba[4 * i + 1], a, background);
    const b = compositeOver(rgba[4 * i + 2], a, background);
    grey[i] = luma(r, g, b);
  }
  return grey;
}

// numpy's median of integers: the mean of the two middle values for an even count.
function median(values) {
  const sorted = Int32Array.from(values).sort();
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

// ------------------------------------------------------------------------------------- ink

function backgroundLevel(grey, width, height) {
  const k = Math.max(1, roundHalfEven(0.02 * Math.min(width, height)));
  const ring = [];
  for (let y = 0; y < k; y++) for (let x = 0; x < width; x++) ring.push(grey[y * width + x]);
  for (let y = height - k; y < height; y++) {
    for (let x = 0; x < width; x++) ring.push(grey[y * width + x]);
  }
  for (let y = 0; y < height; y++) for (let x = 0; x < k; x++) ring.push(grey[y * width + x]);
  for (let y = 0; y < height; y++) {
    for (let x = width - k; x < width; x++) ring.push(grey[y * width + x]);
  }
  return Math.trunc(median(ring));
}

// rint (half to even) of a float32, as np.rint.
function rint(x) {
  const r = Math.round(x);
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** The grey level -> ink lookup table for a background level (float32 steps, as numpy). */
export function inkLut(bg, noiseLevel) {
  const lut = new Uint8Array(256);
  const noise = f32(noiseLevel);
  const span = f32(1.0 - noiseLevel);
  for (let v = 0; v < 256; v++) {
    const contrast = bg >= 128 ? f32(f32(bg - v) / Math.max(bg, 1)) : f32(f32(v - bg) / Math.max(255 - bg, 1));
    let ink = f32(f32(contrast - noise) / span);
    ink = Math.min(1, Math.max(0, ink));
    lut[v] = rint(f32(ink * 255));
  }
  return lut;
}

// -------------------------------------------------------------------------------- images

// An 8-bit single-channel image: {width, height, data: Uint8Array(width*height)}.
function image(width, height, data = new Uint8Array(width * height)) {
  return { width, height, data };
}

function crop(img, left, top, right, bottom) {
  const out = image(right - left, bottom - top);
  for (let y = top; y < bottom; y++) {
    out.data.set(img.data.subarray(y * img.width + left, y * img.width + right), (y - top) * out.width);
  }
  return out;
}

// Pillow's getbbox of an "L" image: (left, top, right, bottom) of the non-zero pixels, or null.
function bbox(img) {
  let left = img.width;
  let top = img.height;
  let right = -1;
  let bottom = -1;
  for (let y = 0; y < img.height; y++) {
    const row = y * img.width;
    for (let x = 0; x < img.width; x++) {
      if (img.data[row + x]) {
        if (x < left) left = x;
        if (x > right) right = x;
        if (y < top) top = y;
        bottom = y;
      }
    }
  }
  return right < 0 ? null : [left, top, right + 1, bottom + 1];
}

// Pillow's BoxBlur(1), one pass each way, edges repeated (BoxBlur.c: weight 2**24 / 3 as float).
const BLUR_WEIGHT = 5592405;
function boxBlur1(img) {
  const { width: w, height: h } = img;
  const blurLine = (get, set, n) => {
    for (let i = 0; i < n; i++) {
      const s = get(Math.max(i - 1, 0)) + get(i) + get(Math.min(i + 1, n - 1));
      set(i, Math.floor((s * BLUR_WEIGHT + (1 << 23)) / (1 << 24)));
    }
  };
  const mid = new Uint8Array(w * h);
  for (let y = 0; y < h; y++) {
    blurLine((x) => img.data[y * w + x], (x, v) => (mid[y * w + x] = v), w);
  }
  const out = image(w, h);
  for (let x = 0; x < w; x++) {
    blurLine((y) => mid[y * w + x], (y, v) => (out.data[y * w + x] = v), h);
  }
  return out;
}

// ------------------------------------------------------------------------------ resampling
// Pillow's resize(size, LANCZOS, reducing_gap=3.0) of an "L" image: an integer box reduce
// (Reduce.c) when shrinking by 3x or more, then the separable Lanczos-3 convolution in 8-bit
// fixed point (Resample.c), horizontal pass first.

const PRECISION_BITS = 32 - 8 - 2;
const LANCZOS_SUPPORT = 3.0;

function sinc(x) {
  if (x === 0.0) return 1.0;
  x *= Math.PI;
  return Math.sin(x) / x;
}

function lanczos(x) {
  return -3.0 <= x && x < 3.0 ? sinc(x) * sinc(x / 3) : 0.0;
}

// Resample.c precompute_coeffs + normalize_coeffs_8bpc; in0, in1 are C floats.
function coefficients(inSize, in0, in1, outSize) {
  in0 = f32(in0);
  in1 = f32(in1);
  const scale = f32(in1 - in0) / outSize;
  const filterscale = Math.max(scale, 1.0);
  const support = LANCZOS_SUPPORT * filterscale;
  const ksize = Math.ceil(support) * 2 + 1;
  const bounds = new Int32Array(outSize * 2);
  const kk = new Int32Array(outSize * ksize);
  const k = new Float64Array(ksize);
  const invFilterscale = 1.0 / filterscale;
  for (let xx = 0; xx < outSize; xx++) {
    const center = in0 + (xx + 0.5) * scale;
    let ww = 0.0;
    const xmin = Math.max(Math.trunc(center - support + 0.5), 0);
    const xmax = Math.min(Math.trunc(center + support + 0.5), inSize) - xmin;
    for (let x = 0; x < xmax; x++) {
      const w = lanczos((x + xmin - center + 0.5) * invFilterscale);
      k[x] = w;
      ww += w;
    }
    for (let x = 0; x < xmax; x++) {
      const w = ww !== 0.0 ? k[x] / ww : k[x];
      kk[xx * ksize + x] = Math.trunc(w < 0 ? -0.5 + w * (1 << PRECISION_BITS) : 0.5 + w * (1 << PRECISION_BITS));
    }
    bounds[xx * 2] = xmin;
    bounds[xx * 2 + 1] = xmax;
  }
  return { ksize, bounds, kk };
}

function clip8(ss) {
  const v = ss >> PRECISION_BITS;
  return v < 0 ? 0 : v > 255 ? 255 : v;
}

// Resample.c ImagingResampleInner for an 8-bit image; box = [x0, y0, x1, y1] (C floats).
function resample(img, outW, outH, box) {
  box = box.map(f32);
  if (Number.isInteger(box[0]) && box[2] - box[0] === outW && Number.isInteger(box[1]) && box[3] - box[1] === outH) {
    return crop(img, box[0], box[1], box[2], box[3]); // _imaging.c _resize: a whole-pixel box of the size
  }
  const needH = outW !== img.width || box[0] !== 0 || f32(box[2]) !== outW;
  const needV = outH !== img.height || box[1] !== 0 || f32(box[3]) !== outH;
  const vert = coefficients(img.height, box[1], box[3], outH);
  const yFirst = vert.bounds[0];
  const yLast = vert.bounds[outH * 2 - 2] + vert.bounds[outH * 2 - 1];
  let src = img;
  if (needH) {
    const hor = coefficients(img.width, box[0], box[2], outW);
    for (let i = 0; i < outH; i++) vert.bounds[i * 2] -= yFirst;
    const tmp = image(outW, yLast - yFirst);
    for (let yy = 0; yy < tmp.height; yy++) {
      const row = (yy + yFirst) * img.width;
      for (let xx = 0; xx < outW; xx++) {
        const xmin = hor.bounds[xx * 2];
        const xmax = hor.bounds[xx * 2 + 1];
        let ss = 1 << (PRECISION_BITS - 1);
        for (let x = 0; x < xmax; x++) ss += img.data[row + x + xmin] * hor.kk[xx * hor.ksize + x];
        tmp.data[yy * outW + xx] = clip8(ss);
      }
    }
    src = tmp;
  }
  if (!needV) return src === img ? image(img.width, img.height, img.data.slice()) : src;
  const out = image(src.width, outH);
  for (let yy = 0; yy < outH; yy++) {
    const ymin = vert.bounds[yy * 2];
    const ymax = vert.bounds[yy * 2 + 1];
    for (let xx = 0; xx < src.width; xx++) {
      let ss = 1 << (PRECISION_BITS - 1);
      for (let y = 0; y < ymax; y++) ss += src.data[(y + ymin) * src.width + xx] * vert.kk[yy * vert.ksize + y];
      out.data[yy * src.width + xx] = clip8(ss);
    }
  }
  return out;
}

// Reduce.c for 8-bit images: the mean of each factor-sized block, (sum * m) >> 24 with m the
// float32 quotient 2**32 / (256 * count), partial blocks at the right and bottom edges.
function reduce(img, fx, fy) {
  const outW = Math.ceil(img.width / fx);
  const outH = Math.ceil(img.height / fy);
  const out = image(outW, outH);
  for (let y = 0; y < outH; y++) {
    const y0 = y * fy;
    const y1 = Math.min(y0 + fy, img.height);
    for (let x = 0; x < outW; x++) {
      const x0 = x * fx;
      const x1 = Math.min(x0 + fx, img.width);
      const count = (x1 - x0) * (y1 - y0);
      let ss = Math.floor(count / 2);
      for (let yy = y0; yy < y1; yy++) for (let xx = x0; xx < x1; xx++) ss += img.data[yy * img.width + xx];
      const multiplier = Math.trunc(f32(4294967296 / f32(256 * count)));
      out.data[y * outW + x] = Math.floor((ss * multiplier) / 16777216);
    }
  }
  return out;
}

/** Pillow's img.resize((outW, outH), LANCZOS, reducing_gap=3.0) of an 8-bit image. */
export function resizeLanczos(img, outW, outH) {
  if (img.width === outW && img.height === outH) return image(outW, outH, img.data.slice());
  const factorX = Math.trunc(img.width / outW / 3.0) || 1;
  const factorY = Math.trunc(img.height / outH / 3.0) || 1;
  let box = [0, 0, img.width, img.height];
  if (factorX > 1 || factorY > 1) {
    // The safe box of the full image is the full image: reduce all of it.
    box = [0, 0, img.width / factorX, img.height / factorY];
    img = reduce(img, factorX, factorY);
  }
  if (img.height > img.width * 100 && outH < img.height) {
    const tall = resample(img, img.width, outH, [0, box[1], img.width, box[3]]);
    return resample(tall, outW, outH, [box[0], 0, box[2], outH]);
  }
  return resample(img, outW, outH, box);
}

// ---------------------------------------------------------------------------------- pipeline

function inkBox(ink, c) {
  const hist = new Int32Array(256);
  for (const v of ink.data) hist[v]++;
  let peak = 0;
  for (let v = 255; v > 0; v--) {
    if (hist[v]) {
      peak = v;
      break;
    }
  }
  if (peak < (255 * (c.min_peak - c.noise_level)) / (1 - c.noise_level)) throw new EmptyCanvasError(c.empty_message);
  let strong = 0;
  for (let v = (peak + 1) >> 1; v < 256; v++) strong += hist[v];
  if (strong < c.min_ink_pixels) throw new EmptyCanvasError(c.empty_message);
  let box = bbox(ink);
  if (box !== null && Math.min(ink.width, ink.height) >= c.speckle_min_side) {
    // Only the raw box (+2 px of zeros) can hold ink, so filtering it alone is exact.
    const left = Math.max(box[0] - 2, 0);
    const top = Math.max(box[1] - 2, 0);
    const region = crop(ink, left, top, Math.min(box[2] + 2, ink.width), Math.min(box[3] + 2, ink.height));
    const blurred = boxBlur1(region);
    for (let i = 0; i < blurred.data.length; i++) blurred.data[i] = blurred.data[i] >= 128 ? 255 : 0;
    const core = bbox(blurred);
    if (core !== null) {
      // The 3x3 mean rounds stroke ends off by one pixel: give them back, as the ink itself
      // within that pixel (never a blank margin around the digit).
      const near = [
        Math.max(left + core[0] - 1, 0),
        Math.max(top + core[1] - 1, 0),
        Math.min(left + core[2] + 1, ink.width),
        Math.min(top + core[3] + 1, ink.height),
      ];
      const inner = bbox(crop(ink, ...near)); // never null: every core pixel has ink beside it
      box = [near[0] + inner[0], near[1] + inner[1], near[0] + inner[2], near[1] + inner[3]];
    }
  }
  if (box === null || Math.max(box[2] - box[0], box[3] - box[1]) < c.min_extent * Math.max(ink.width, ink.height)) {
    throw new EmptyCanvasError(c.empty_message);
  }
  return box;
}

function stretch(img) {
  let top = 0;
  for (const v of img.data) if (v > top) top = v;
  if (top >= 255) return img;
  const lut = new Uint8Array(256);
  for (let v = 0; v < 256; v++) lut[v] = Math.min(255, roundHalfEven((v * 255) / top));
  return image(img.width, img.height, img.data.map((v) => lut[v]));
}

function toMnist(cropped, c) {
  const { width: w, height: h } = cropped;
  const scale = c.mnist_box / Math.max(w, h);
  const small = resizeLanczos(cropped, Math.max(1, roundHalfEven(w * scale)), Math.max(1, roundHalfEven(h * scale)));
  let total = 0;
  let sy = 0;
  let sx = 0;
  for (let y = 0; y < small.height; y++) {
    let row = 0;
    for (let x = 0; x < small.width; x++) {
      const v = small.data[y * small.width + x];
      row += v;
      sx += v * x;
    }
    total += row;
    sy += row * y;
  }
  const side = c.image_side;
  let cy = (small.height - 1) / 2;
  let cx = (small.width - 1) / 2;
  if (total !== 0) {
    cy = sy / total;
    cx = sx / total;
  }
  // Whole-pixel shift, clamped so no ink is cut off at the frame.
  const clamp = (v, hi) => Math.min(Math.max(v, 0), hi);
  const top = clamp(roundHalfEven(c.mnist_centre - cy), side - small.height);
  const left = clamp(roundHalfEven(c.mnist_centre - cx), side - small.width);
  const out = new Uint8Array(side * side);
  for (let y = 0; y < small.height; y++) {
    out.set(small.data.subarray(y * small.width, (y + 1) * small.width), (top + y) * side + left);
  }
  return out;
}

function toBox(cropped, c) {
  const { width: w, height: h } = cropped;
  const longer = Math.max(w, h);
  const side = longer + 2 * roundHalfEven(c.box_padding * longer);
  const square = image(side, side);
  const left = Math.floor((side - w) / 2);
  const top = Math.floor((side - h) / 2);
  for (let y = 0; y < h; y++) square.data.set(cropped.data.subarray(y * w, (y + 1) * w), (top + y) * side + left);
  return resizeLanczos(square, c.image_side, c.image_side).data;
}

/**
 * An RGBA canvas -> the model input, as serve/runtime/preprocess.py's preprocess(array, method).
 *
 * @param {Uint8Array|Uint8ClampedArray} rgba width*height*4 bytes (ImageData.data)
 * @param {number} width
 * @param {number} height
 * @param {string} method "mnist" or "box" ("seed": box's old name)
 * @param {object} c the preprocessing constants from site.json ("preprocess")
 * @returns {Uint8Array} 28*28 bytes, white digit on black (divide by 255 for the model)
 * @throws {EmptyCanvasError} nothing is drawn
 */
export function preprocess(rgba, width, height, method, c) {
  method = c.renamed_methods?.[method] ?? method;
  if (!c.methods.includes(method)) throw new Error(`unknown preprocessing method ${method}`);
  const grey = greyFromRgba(rgba, width, height);
  const lut = inkLut(backgroundLevel(grey, width, height), c.noise_level);
  const ink = image(width, height, grey.map((v) => lut[v]));
  const box = inkBox(ink, c);
  const cropped = stretch(crop(ink, ...box));
  return method === "mnist" ? toMnist(cropped, c) : toBox(cropped, c);
}
