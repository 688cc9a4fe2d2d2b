"""The what-if page: one HTML file, one stylesheet, one script, all served by the app itself.

Nothing is loaded from anywhere else (no CDN, no web font): the app works offline, and its
Content-Security-Policy header makes the browser refuse any other origin. Kept as Python strings
so that they ship inside the package without package-data configuration.
"""

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>anomalens what-if explorer</title>
<link rel="stylesheet" href="/style.css">
</head>
<body>
<header>
  <h1>anomalens <span>what-if explorer</span></h1>
  <label>Detector <select id="run"></select></label>
  <span id="run-info" class="hint"></span>
</header>
<div id="message" role="alert" hidden></div>
<main>
  <section id="pick">
    <h2>1. Pick an image</h2>
    <p>A test image of the run (click it):</p>
    <div id="examples" class="row"></div>
    <p id="examples-message" class="note" hidden></p>
    <p><label>or your own image: <input type="file" id="upload" accept="image/*"></label></p>
    <p id="limits" class="hint"></p>
  </section>
  <section id="result" hidden>
    <h2>2. What the detector says</h2>
    <div class="row">
      <figure><img id="input" alt="input image"><figcaption>input: score <b id="score"></b>
        <span id="verdict"></span></figcaption></figure>
      <figure><img id="heatmap" alt="heatmap"><figcaption id="heatmap-caption">heatmap</figcaption></figure>
    </div>
    <p id="decision" class="hint"></p>
    <p id="note" class="note" hidden></p>
    <h2>3. What if? Counterfactuals</h2>
    <p><label for="alpha">target score &alpha; = <b id="alpha-value">0</b></label>
      <input type="range" id="alpha" min="0" max="2" step="1" value="0"></p>
    <p class="hint">The generator edits the image until the detector scores it &alpha;, one way per concept:
      &alpha; = 0 asks what would make it normal, &alpha; = 1 what would make it anomalous.</p>
    <div id="counterfactuals" class="row"></div>
    <p id="cf-message" class="note" hidden></p>
    <p id="timing" class="hint"></p>
    <h2>4. Repair (AR-Pro)</h2>
    <div id="repair" class="row"></div>
    <p id="repair-message" class="note" hidden></p>
  </section>
</main>
<script src="/app.js"></script>
</body>
</html>
"""

STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; color: #222; margin: 0; background: #fafafa; }
header { background: #263238; color: #fff; padding: .6rem 1.2rem; display: flex; gap: 1.2rem; align-items: center;
         flex-wrap: wrap; }
header h1 { font-size: 1.25rem; margin: 0; } header h1 span { font-weight: normal; color: #b0bec5; }
header .hint { color: #cfd8dc; }
main { padding: 0 1.2rem 2rem; max-width: 72rem; }
h2 { font-size: 1.05rem; border-bottom: 1px solid #ddd; margin-top: 1.4rem; padding-bottom: .2rem; }
.row { display: flex; flex-wrap: wrap; gap: .8rem; align-items: flex-start; }
figure { margin: 0; background: #fff; border: 1px solid #ddd; padding: .4rem; text-align: center; }
figure img, #examples img { width: 160px; height: 160px; image-rendering: pixelated; display: block; }
figcaption { font-size: 13px; margin-top: .25rem; max-width: 160px; }
#examples button { border: 2px solid transparent; padding: 0; background: none; cursor: pointer; }
#examples button.selected { border-color: #1565c0; }
#examples img { width: 72px; height: 72px; } #examples span { display: block; font-size: 12px; }
#message { background: #ffebee; color: #b71c1c; border: 1px solid #e57373; padding: .6rem 1.2rem;
           margin: .6rem 1.2rem; }
.note { background: #fff8e1; border: 1px solid #ffe082; padding: .4rem .6rem; }
.hint { color: #555; font-size: 13px; }
.verdict-anomalous { color: #b71c1c; font-weight: bold; } .verdict-normal { color: #1b5e20; font-weight: bold; }
.checks { font-size: 12px; } .checks .ok { color: #1b5e20; } .checks .no { color: #b71c1c; }
input[type=range] { width: 14rem; vertical-align: middle; } input[type=range]:disabled { opacity: .4; }
"""

SCRIPT = r"""
"use strict";
const state = { run: 0, ref: null, info: null, alphas: [0, 0.5, 1], request: 0 };
const $ = (id) => document.getElementById(id);
const fmt = (v) => (v === null || v === undefined) ? "-" : Number(v).toFixed(3);

async function api(path, options) {
  let response;
  try { response = await fetch(path, options); }
  catch (e) {
    throw new Error("the server cannot be reached (" + e.message + "). Fix: is `anomalens serve` still running?");
  }
  let body = null;
  try { body = await response.json(); } catch (e) { body = null; }
  if (!response.ok) throw new Error((body && body.error) || ("the server answered " + response.status));
  return body;
}

function showError(error) { $("message").textContent = error.message || String(error); $("message").hidden = false; }
function clearError() { $("message").hidden = true; $("message").textContent = ""; }
function showNote(id, text) { $(id).textContent = text || ""; $(id).hidden = !text; }

function checksLine(checks) {
  const span = document.createElement("div");
  span.className = "checks";
  if (!checks) return span;
  for (const p of ["P1", "P2", "P3", "P4"]) {
    const s = document.createElement("span");
    s.className = checks[p] ? "ok" : "no";
    s.textContent = p + (checks[p] ? "\u2713 " : "\u2717 ");
    s.title = { P1: "lower score", P2: "unchanged outside the anomalous region", P3: "anomalous region improved",
                P4: "rest not degraded" }[p];
    span.appendChild(s);
  }
  return span;
}

function figure(src, caption, score, checks, cls) {
  const f = document.createElement("figure");
  if (cls) f.className = cls;
  const img = document.createElement("img");
  img.src = src; img.alt = caption;
  const c = document.createElement("figcaption");
  c.textContent = caption + (score === undefined ? "" : ": score " + fmt(score));
  if (score !== undefined) f.dataset.score = String(score);
  f.append(img, c, checksLine(checks));
  return f;
}

async function loadInfo() {
  state.info = await api("/api/info");
  state.alphas = state.info.alphas;
  const select = $("run");
  select.innerHTML = "";
  for (const run of state.info.runs) {
    const o = document.createElement("option");
    o.value = run.index; o.textContent = run.name;
    select.appendChild(o);
  }
  const mib = state.info.limits.bytes / 1048576;
  const side = Math.round(Math.sqrt(state.info.limits.pixels));
  $("limits").textContent = "PNG, JPEG, BMP, TIFF or WebP; at most " + mib + " MiB and " + side + "x" + side +
    " pixels. Other sizes and channel counts are converted to the detector's input.";
  await selectRun(0);
}

async function selectRun(index) {
  state.run = Number(index);
  const run = state.info.runs[state.run];
  $("run-info").textContent = "images " + run.image_shape.join("x") + "; threshold " +
    (run.threshold === null ? "none" : fmt(run.threshold)) + " (raw score)";
  const answer = await api("/api/runs/" + state.run + "/examples");
  const box = $("examples");
  box.innerHTML = "";
  for (const ex of answer.examples) {
    const b = document.createElement("button");
    b.type = "button"; b.dataset.ref = ex.ref; b.title = ex.label + " (" + ex.ref + ")";
    const img = document.createElement("img"); img.src = ex.png; img.alt = ex.label;
    const s = document.createElement("span"); s.textContent = ex.label;
    b.append(img, s);
    b.addEventListener("click", () => pick(ex.ref).catch(showError));
    box.appendChild(b);
  }
  showNote("examples-message", answer.message);
  if (state.ref) await analyze();
}

function markSelected() {
  for (const b of $("examples").querySelectorAll("button")) b.classList.toggle("selected", b.dataset.ref === state.ref);
}

async function pick(ref) { state.ref = ref; markSelected(); await analyze(); }

async function upload(file) {
  const limit = state.info.limits.bytes;
  if (file.size > limit) {
    throw new Error(file.name + " is " + (file.size / 1048576).toFixed(1) + " MiB, above the upload limit of " +
      (limit / 1048576) + " MiB. Fix: downscale or crop the image (the detector sees small images anyway)");
  }
  const answer = await api("/api/upload?run=" + state.run, { method: "POST", body: file,
                                            headers: { "X-Filename": encodeURIComponent(file.name) } });
  await pick(answer.ref);
}

function alpha() { return state.alphas[Number($("alpha").value)]; }

function renderCounterfactuals(answer) {
  const box = $("counterfactuals");
  box.innerHTML = "";
  for (const cf of answer.counterfactuals) {
    box.appendChild(figure(cf.png, "concept " + cf.concept, cf.score, cf.checks, "counterfactual"));
  }
  box.dataset.alpha = String(answer.alpha);
  $("alpha").disabled = !answer.counterfactuals.length;
  showNote("cf-message", answer.counterfactual_message);
}

async function analyze() {
  const ticket = ++state.request;
  clearError();
  const r = await api("/api/runs/" + state.run + "/analyze?ref=" + encodeURIComponent(state.ref) + "&alpha=" + alpha());
  if (ticket !== state.request) return;
  $("result").hidden = false;
  $("input").src = r.input;
  $("score").textContent = fmt(r.score);
  $("score").dataset.score = String(r.score);
  const verdict = $("verdict");
  verdict.textContent = r.verdict ? "\u2192 " + r.verdict : "";
  verdict.className = r.verdict ? "verdict-" + r.verdict : "";
  $("decision").textContent = "raw score " + fmt(r.raw_score) + (r.threshold === null ? "; no threshold: " :
    (r.raw_score > r.threshold ? " > " : " <= ") + "threshold " + fmt(r.threshold) + " (") + r.threshold_rule +
    (r.threshold === null ? "" : ")");
  $("heatmap").src = r.heatmap;
  $("heatmap-caption").textContent = "heatmap (" + r.heatmap_method + ")";
  showNote("note", r.note ? "converted: " + r.note : "");
  renderCounterfactuals(r);
  $("timing").textContent = "";
  await repair(ticket);
}

async function whatIf() {
  $("alpha-value").textContent = String(alpha());
  if (!state.ref) return;
  const ticket = ++state.request;
  const started = performance.now();
  clearError();
  const r = await api("/api/runs/" + state.run + "/counterfactuals?ref=" + encodeURIComponent(state.ref) +
                      "&alpha=" + alpha());
  if (ticket !== state.request) return;
  renderCounterfactuals(r);
  const ms = performance.now() - started;
  $("timing").textContent = "what-if: " + ms.toFixed(0) + " ms in the browser, " + (r.seconds * 1000).toFixed(0) +
    " ms on the server";
  $("timing").dataset.ms = String(ms);
}

async function repair(ticket) {
  const box = $("repair");
  box.innerHTML = "";
  showNote("repair-message", "");
  box.dataset.state = "running";
  const r = await api("/api/runs/" + state.run + "/repair?ref=" + encodeURIComponent(state.ref));
  if (ticket !== state.request) return;
  if (r.repair) {
    box.appendChild(figure(r.repair.omega, "repaired region (omega)", undefined, null, "omega"));
    box.appendChild(figure(r.repair.png, "repair", r.repair.score, r.repair.checks, "repaired"));
  }
  showNote("repair-message", r.repair_message);
  box.dataset.state = "done";
}

$("run").addEventListener("change", (e) => selectRun(e.target.value).catch(showError));
$("alpha").addEventListener("input", () => whatIf().catch(showError));
$("upload").addEventListener("change", (e) => {
  const file = e.target.files[0];
  e.target.value = "";
  if (file) upload(file).catch(showError);
});
loadInfo().catch(showError);
"""
