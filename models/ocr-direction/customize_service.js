'use strict';
/**
 * ocr-direction: the answer PaddleOCR's text-direction classifier gives, as ModelArts'
 * _postprocess would shape it. The gateway has already decoded and normalised the images
 * (config.json preprocess.image), so there is no preprocess hook; this one turns the softmax
 * [N, 2] into {"results": [{"angle": "0" | "180", "score": p}, ...]}, one entry per image.
 *
 * CommonJS (see package.json here), so it loads the same wherever the gateway keeps the package.
 */
const fs = require('node:fs');
const path = require('node:path');

const OUTPUT = 'softmax_0.tmp_0';
let labels = null;

/** The class names live in the package's config.json, read once per worker thread. */
function labelsOf(ctx) {
  if (!labels) {
    const config = JSON.parse(fs.readFileSync(path.join(ctx.modelPath, 'config.json'), 'utf8'));
    labels = Array.isArray(config.labels) ? config.labels : ['0', '180'];
  }
  return labels;
}

exports.postprocess = function postprocess(outputs, ctx) {
  const probs = outputs[OUTPUT];
  const [n, k] = probs.dims;
  const names = labelsOf(ctx);
  const results = [];
  for (let i = 0; i < n; i++) {
    let best = 0;
    for (let j = 1; j < k; j++) if (probs.data[i * k + j] > probs.data[i * k + best]) best = j;
    results.push({ angle: names[best], score: probs.data[i * k + best] });
  }
  return { results };
};
