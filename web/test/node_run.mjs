// Runs the site's own files in Node for tests/test_web_parity.py: web/preprocess.js on raw RGBA
// canvases and the site's onnxruntime-web (ort/ort.wasm.min.mjs) on the results.
//
//   node web/test/node_run.mjs JOB.json OUT.json
// JOB: {"site": DIR, "cases": [{"rgba": FILE, "width", "height", "method"}],
//       "inputs": FILE (optional: float32 N*28*28 images to classify as given)}
// OUT: {"cases": [{"pixels": [784] | null, "error": str | null, "probabilities": {model: [10]}}],
//       "inputs": {model: [[10]...]}}
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

import { EmptyCanvasError, preprocess } from "../preprocess.js";

const [jobPath, outPath] = process.argv.slice(2);
const job = JSON.parse(readFileSync(jobPath, "utf8"));
const site = JSON.parse(readFileSync(join(job.site, "site.json"), "utf8"));
const ort = await import(pathToFileURL(join(job.site, site.ort.dir, "ort.wasm.min.mjs")).href);
ort.env.wasm.numThreads = 1;
ort.env.wasm.wasmPaths = pathToFileURL(join(job.site, site.ort.dir)).href + "/";

const sessions = {};
for (const m of site.models) {
  sessions[m.name] = await ort.InferenceSession.create(readFileSync(join(job.site, m.file)));
}
const side = site.preprocess.image_side;

async function classify(batch, n) {
  const out = {};
  for (const [name, session] of Object.entries(sessions)) {
    const input = new ort.Tensor("float32", batch, [n, side, side, 1]);
    const result = await session.run({ image: input });
    const probs = Array.from(result.probabilities.data);
    out[name] = Array.from({ length: n }, (_, i) => probs.slice(i * 10, i * 10 + 10));
  }
  return out;
}

const cases = [];
for (const c of job.cases ?? []) {
  const rgba = new Uint8Array(readFileSync(c.rgba));
  try {
    const pixels = preprocess(rgba, c.width, c.height, c.method, site.preprocess);
    const x = Float32Array.from(pixels, (v) => v / site.preprocess.pixel_max);
    const probs = await classify(x, 1);
    cases.push({
      pixels: Array.from(pixels),
      error: null,
      probabilities: Object.fromEntries(Object.entries(probs).map(([k, v]) => [k, v[0]])),
    });
  } catch (e) {
    if (!(e instanceof EmptyCanvasError)) throw e;
    cases.push({ pixels: null, error: e.message, probabilities: null });
  }
}
let inputs = null;
if (job.inputs) {
  const buf = readFileSync(job.inputs);
  const x = new Float32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4);
  inputs = await classify(x, x.length / (side * side));
}
writeFileSync(outPath, JSON.stringify({ cases, inputs, ort: ort.env.versions?.web ?? null }));
