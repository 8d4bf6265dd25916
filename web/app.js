// The drawing page: a canvas for mouse, touch and pen; after every change of the drawing the
// JavaScript preprocessing (preprocess.js, the port of serve/runtime/preprocess.py) and both models
// (onnxruntime-web, WebAssembly, one thread) run here, and the answers replace the last ones.
// site.json (written by `flaxdigits web`) names the models, their metadata and answer rules (applied
// by answer.js: "digit", "not sure" or "not a digit"), the gate if there is one (a third model,
// never shown, run with them: its drawing rule decides "not a digit" for all), and the constants.
import * as ort from "./ort/ort.wasm.min.mjs";
import { answer, answerWords, drawingAnswers, drawingScore, summary } from "./answer.js";
import { EmptyCanvasError, preprocess } from "./preprocess.js";

const BRUSH_RADIUS = 14; // serve/page/app.py BRUSH_RADIUS: the Gradio brush's circle, canvas pixels
// wasm-feature-detect's SIMD probe (v128 ops): onnxruntime-web ships only a SIMD build.
const SIMD_PROBE = new Uint8Array([
  0, 97, 115, 109, 1, 0, 0, 0, 1, 5, 1, 96, 0, 1, 123, 3, 2, 1, 0, 10, 10, 1, 8, 0, 65, 0, 253, 15,
  253, 98, 11,
]);

const $ = (id) => document.getElementById(id);
const sketch = $("sketch");
const ctx = sketch.getContext("2d", { willReadFrequently: true });
const input28 = $("input28").getContext("2d");

// What tests and curious visitors can read: per stroke, pointer-up to both answers on the page.
// Each list keeps its last STATS_KEPT values, so a long session does not grow it.
const STATS_KEPT = 2000;
const stats = { strokeToAnswerMs: [], passMs: [], modelMs: [], loadMs: null, ready: false, idle: true, error: null };
window.fdStats = stats;

let site = null;
let sessions = null; // {name: InferenceSession} once loaded; null without WebAssembly SIMD
let gate = null; // the gate's InferenceSession when site.json has a gate
let method = "mnist";
const strokes = []; // each an array of [x, y] in canvas pixels
let current = null;
let pointer = null; // the one pointer drawing now: a second finger does not join the stroke
let dirty = false;
let running = false;
let pending = null; // {t0}: a stroke ended at t0 and its answer is not shown yet

// ------------------------------------------------------------------------------- drawing

function resetCanvas() {
  ctx.fillStyle = "#ffffff";
  ctx.fillRect(0, 0, sketch.width, sketch.height);
  ctx.fillStyle = "#000000";
  ctx.strokeStyle = "#000000";
  ctx.lineWidth = 2 * BRUSH_RADIUS;
  ctx.lineCap = "round";
  ctx.lineJoin = "round";
}

function dot([x, y]) {
  ctx.beginPath();
  ctx.arc(x, y, BRUSH_RADIUS, 0, 2 * Math.PI);
  ctx.fill();
}

function segment([x0, y0], [x1, y1]) {
  ctx.beginPath();
  ctx.moveTo(x0, y0);
  ctx.lineTo(x1, y1);
  ctx.stroke();
}

function redraw() {
  resetCanvas();
  for (const s of strokes) {
    dot(s[0]);
    for (let i = 1; i < s.length; i++) segment(s[i - 1], s[i]);
  }
}

function point(e) {
  const r = sketch.getBoundingClientRect();
  return [((e.clientX - r.left) * sketch.width) / r.width, ((e.clientY - r.top) * sketch.height) / r.height];
}

sketch.addEventListener("pointerdown", (e) => {
  if (current || (e.pointerType === "mouse" && e.button !== 0)) return;
  e.preventDefault();
  sketch.setPointerCapture(e.pointerId);
  pointer = e.pointerId;
  current = [point(e)];
  strokes.push(current);
  dot(current[0]);
  changed();
});

sketch.addEventListener("pointermove", (e) => {
  if (!current || e.pointerId !== pointer) return;
  const events = e.getCoalescedEvents ? e.getCoalescedEvents() : [e];
  for (const ev of events.length ? events : [e]) {
    const p = point(ev);
    segment(current[current.length - 1], p);
    current.push(p);
  }
  changed();
});

function strokeEnd(e) {
  if (!current || e.pointerId !== pointer) return;
  current = null;
  pointer = null;
  pending = { t0: performance.now() };
  changed();
}
sketch.addEventListener("pointerup", strokeEnd);
sketch.addEventListener("pointercancel", strokeEnd);

$("clear").addEventListener("click", () => {
  current = pointer = null; // a stroke under way ends here
  strokes.length = 0;
  redraw();
  changed();
});

$("undo").addEventListener("click", () => {
  current = pointer = null;
  strokes.pop();
  redraw();
  changed();
});

for (const radio of document.querySelectorAll('input[name="method"]')) {
  radio.addEventListener("change", () => {
    method = radio.value;
    changed();
  });
}

// ----------------------------------------------------------------------------- answering

// Passes never overlap; changes while one runs are folded into the next (the latest drawing).
function changed() {
  $("undo").disabled = $("clear").disabled = strokes.length === 0;
  dirty = true;
  if (!running && site) run();
}

async function run() {
  running = true;
  stats.idle = false;
  try {
    while (dirty) {
      dirty = false;
      await pass();
    }
  } catch (e) {
    stats.error = String(e);
    setStatus(`Something went wrong: ${e.message ?? e}`, true);
  } finally {
    running = false;
    stats.idle = true;
  }
}

async function pass() {
  const started = performance.now();
  const image = ctx.getImageData(0, 0, sketch.width, sketch.height);
  let pixels = null;
  try {
    pixels = preprocess(image.data, image.width, image.height, method, site.preprocess);
  } catch (e) {
    if (!(e instanceof EmptyCanvasError)) throw e;
    showInput(null);
    showAnswers(null);
    setStatus(e.message);
  }
  if (pixels) {
    showInput(pixels);
    if (sessions) {
      const t = performance.now();
      showAnswers(await classify(pixels));
      record(stats.modelMs, performance.now() - t);
    }
  }
  const done = performance.now();
  record(stats.passMs, done - started);
  if (pending && started >= pending.t0) {
    record(stats.strokeToAnswerMs, done - pending.t0);
    pending = null;
  }
}

function record(list, value) {
  list.push(value);
  if (list.length > STATS_KEPT) list.splice(0, list.length - STATS_KEPT);
}

// {models: {name: probabilities}, gate: probabilities or null}
async function classify(pixels) {
  const side = site.preprocess.image_side;
  const x = Float32Array.from(pixels, (v) => v / site.preprocess.pixel_max);
  const tensor = new ort.Tensor("float32", x, [1, side, side, 1]);
  const probabilities = async (session) => Array.from((await session.run({ image: tensor })).probabilities.data);
  const models = {};
  for (const m of site.models) models[m.name] = await probabilities(sessions[m.name]);
  return { models, gate: gate ? await probabilities(gate) : null };
}

// Each model's {name, digit, answer} by its own answer rule, then, with a gate, under the drawing
// rule (contract.drawing_answers), as serve/runtime/model_set.py ModelSet.predict answers. The
// drawing's answer is kept in window.fdLastDrawing for tests and the curious.
function answered(results) {
  const out = site.models.map((m) => {
    const probs = results.models[m.name];
    const digit = argmax(probs);
    return { name: m.name, digit, answer: answer(probs[digit], m.answer_rule) };
  });
  if (results.gate) {
    const rule = site.gate.drawing_rule;
    const score = drawingScore(site.models.map((m) => results.models[m.name]), results.gate);
    const said = drawingAnswers(out.map((m) => m.answer), score, rule);
    said.forEach((a, i) => (out[i].answer = a));
    const below = rule.not_a_digit_below;
    window.fdLastDrawing = { answer: score < below ? "not a digit" : "digit", score, not_a_digit_below: below };
  }
  return out;
}

// --------------------------------------------------------------------------------- showing

// parts: [[text, bold]] (answer.js summary), the Gradio page's Markdown status line as DOM.
function setStatus(text, error = false, parts = null) {
  const status = $("status");
  status.classList.toggle("error", error);
  status.textContent = text;
  if (parts) status.replaceChildren(...parts.map(([t, bold]) => (bold ? el("strong", "", t) : t)));
}

function showInput(pixels) {
  const side = site.preprocess.image_side;
  const img = input28.createImageData(side, side);
  for (let i = 0; i < side * side; i++) {
    const v = pixels ? pixels[i] : 0;
    img.data.set([v, v, v, 255], 4 * i);
  }
  input28.putImageData(img, 0, 0);
  window.fdLastInput = pixels ? Array.from(pixels) : null;
}

function argmax(p) {
  return p.reduce((best, v, i) => (v > p[best] ? i : best), 0);
}

// Each card as serve/page/views.py render_result draws it: the digit, or a muted one and "not sure
// — maybe N", or a muted "?" and "that doesn't look like a digit"; data-answer beside data-digit.
function showAnswers(results) {
  window.fdLastDrawing = null;
  const answers = results ? answered(results) : null;
  site.models.forEach((m, i) => {
    const card = $(`result-${m.name}`);
    const probs = results ? results.models[m.name] : null;
    const digit = answers ? answers[i].digit : null;
    const said = answers ? answers[i].answer : "";
    card.dataset.digit = digit === null ? "" : String(digit);
    card.dataset.answer = said;
    card.dataset.probabilities = probs ? JSON.stringify(probs) : "";
    const shown = card.querySelector(".fd-digit");
    shown.textContent = digit === null || said === "not a digit" ? "?" : String(digit);
    shown.classList.toggle("fd-none", said !== "digit");
    card.querySelector(".fd-conf").textContent =
      digit === null ? "no prediction" : `${(100 * probs[digit]).toFixed(1)}% confident`;
    card.querySelector(".fd-answer").textContent = answerWords(said, digit);
    card.querySelectorAll(".fd-col").forEach((col, i) => {
      const p = probs ? probs[i] : 0;
      col.classList.toggle("fd-top", i === digit);
      col.title = `${site.labels[i]}: ${(100 * p).toFixed(1)}%`;
      col.querySelector(".fd-pct").textContent = p >= 0.005 ? `${Math.round(100 * p)}%` : "";
      col.querySelector(".fd-fill").style.height = `${(100 * p).toFixed(1)}%`;
    });
    const described = site.labels.map((l, i) => `${l}: ${(100 * (probs ? probs[i] : 0)).toFixed(1)}%`);
    card.querySelector(".fd-bars").setAttribute("aria-label", `probabilities: ${described.join(", ")}`);
  });
  if (answers) setStatus("", false, summary(answers));
}

function el(tag, className, text) {
  const e = document.createElement(tag);
  if (className) e.className = className;
  if (text !== undefined) e.textContent = text;
  return e;
}

// The same words as the Gradio page's subtitle (serve/page/views.py model_subtitle).
// A model file from before the rename says "seed" for the original recipe.
function recipeName(name) {
  return site.renamed_recipes[name] ?? name;
}

function subtitle(meta) {
  const parts = [];
  const params = Number.parseInt(meta["flaxdigits.params"], 10);
  if (Number.isFinite(params)) parts.push(`${params.toLocaleString("en-US")} parameters`);
  const accuracy = Number.parseFloat(meta["flaxdigits.test_accuracy"]);
  if (accuracy >= 0 && accuracy <= 1) parts.push(`${(100 * accuracy).toFixed(1)}% test accuracy`);
  const recipe = recipeName(meta["flaxdigits.recipe"]);
  if (site.recipes.includes(recipe)) parts.push(`${recipe} recipe`);
  return parts.join(" · ");
}

function buildCards() {
  const cards = $("cards");
  for (const m of site.models) {
    const card = el("div", "fd-card");
    card.id = `result-${m.name}`;
    card.dataset.model = m.name;
    card.dataset.digit = "";
    card.dataset.answer = "";
    card.append(el("div", "fd-title", m.name.toUpperCase()), el("div", "fd-sub", subtitle(m.metadata)));
    const main = el("div", "fd-main");
    main.append(el("span", "fd-digit fd-none", "?"), el("span", "fd-conf", "no prediction"));
    const bars = el("div", "fd-bars");
    bars.setAttribute("role", "img");
    for (const label of site.labels) {
      const col = el("div", "fd-col");
      const track = el("div", "fd-track");
      track.append(el("div", "fd-fill"));
      col.append(el("div", "fd-pct", ""), track, el("div", "fd-label", label));
      bars.append(col);
    }
    card.append(main, el("div", "fd-answer", ""), bars);
    cards.append(card);
  }
}

function buildAbout() {
  const about = $("about");
  for (const m of site.models) {
    const meta = m.metadata;
    const accuracy = Number.parseFloat(meta["flaxdigits.test_accuracy"]);
    const parts = [
      `${m.name.toUpperCase()}: ${meta["flaxdigits.variant"] ?? site.variant}`,
      `flaxdigits ${meta["flaxdigits.version"] ?? "?"}`,
      Number.isFinite(accuracy) ? `test accuracy ${(100 * accuracy).toFixed(2)}%` : null,
      meta["flaxdigits.recipe"] ? `${recipeName(meta["flaxdigits.recipe"])} recipe` : null,
      `${(m.bytes / 1024).toFixed(0)} KB`,
      `sha256 ${m.sha256.slice(0, 12)}…`,
    ];
    const p = el("p", "", parts.filter(Boolean).join(" · "));
    p.dataset.model = m.name;
    about.append(p);
  }
  if (site.gate) {
    const g = site.gate; // no card: with both models it decides whether the drawing is a digit
    const said = `GATE ("not a digit" below a score of ${g.drawing_rule.not_a_digit_below}): ${site.variant}`;
    const p = el("p", "", `${said} · ${(g.bytes / 1024).toFixed(0)} KB · sha256 ${g.sha256.slice(0, 12)}…`);
    p.dataset.model = "gate";
    about.append(p);
  }
  about.append(el("p", "", `onnxruntime-web ${site.ort.version}, WebAssembly, one thread.`));
}

// ----------------------------------------------------------------------------------- start

async function start() {
  site = await (await fetch("site.json")).json();
  const c = site.preprocess;
  $("method-info").textContent =
    `mnist: fit the ink into ${c.mnist_box}x${c.mnist_box} and centre it by mass, the way MNIST was made. ` +
    `box: pad the ink box to a square with ${Math.round(100 * c.box_padding)}% margins.`;
  sketch.width = site.canvas.width;
  sketch.height = site.canvas.height;
  buildCards();
  buildAbout();
  redraw(); // strokes drawn while site.json loaded, on the canvas at its final size
  if (!WebAssembly.validate(SIMD_PROBE)) {
    // The only WebAssembly build of onnxruntime-web needs SIMD (Chrome 91, Firefox 89,
    // Safari 16.4 and later): drawing and the 28x28 input still work, the models cannot run.
    stats.error = "no WebAssembly SIMD";
    setStatus(
      "This browser's WebAssembly has no SIMD, which onnxruntime-web needs: the models cannot " +
        "run here. The 28x28 input is still shown; use a browser from 2021 or later.",
      true,
    );
  } else {
    ort.env.wasm.numThreads = 1; // no SharedArrayBuffer needed: no cross-origin isolation
    ort.env.wasm.wasmPaths = new URL(site.ort.dir, document.baseURI).href;
    const loaded = {};
    const options = { executionProviders: ["wasm"] };
    for (const m of site.models) loaded[m.name] = await ort.InferenceSession.create(m.file, options);
    if (site.gate) gate = await ort.InferenceSession.create(site.gate.file, options);
    sessions = loaded;
    setStatus(c.empty_message);
  }
  stats.loadMs = performance.now();
  stats.ready = true;
  document.body.dataset.ready = sessions ? "models" : "no-models";
  if (dirty) run();
}

start().catch((e) => {
  stats.error = String(e);
  setStatus(`The models could not be loaded: ${e.message ?? e}`, true);
  document.body.dataset.ready = "error";
});
