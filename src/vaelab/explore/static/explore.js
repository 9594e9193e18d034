// vaelab explore: the page's behaviour. No library, no network beyond this server.
//
// Every latent point the page sends is in a run's prior-standardized coordinates u (the server's
// vaelab.explore.space). A map shows plane coordinates w = V^T (u - o); the pointer gives (w1, w2),
// the sliders w3..wZ, and u = o + V w. With two runs, both maps share one view box and the pointer's
// (w1, w2), so the same position is decoded by both, each in its own coordinates.
// A run conditional on a label (q(z|x, y), p(x|z, y)) has a label picker: the label it names goes
// with every decode, encode, interpolation and sample request of that run.
// A hierarchical run (a Ladder VAE) is mapped on its top layer z_L: its u, dims and codes are z_L's,
// the server decodes a point down the layers' conditional prior means, and info.layer_note says so.
"use strict";

const state = {
  runs: [],          // per run: {info, map, plane, dims, sliders, label, el: {...}, decodeBusy, decodeNext, encoding}
  box: null,         // shared view box [w1min, w1max, w2min, w2max]: the fitted one, zoomed
  fitted: 1,         // half-width of the box that holds every run's codes and contours
  view: {centre: [0, 0], zoom: 1},
  pointer: null,     // [w1, w2] last decoded position
  pin: null,         // {kind: "point", w} or {kind: "example", index, w, label}
  ends: {a: null, b: null},  // interpolation ends: {kind: "point"|"example"|"drawing", ...}
  drawingBlob: null, // the last drawing or dropped file sent for encoding
  seed: 0,
};

// ------------------------------------------------------------------------------------ helpers

function status(text, isError) {
  const el = document.getElementById("status");
  el.textContent = text || "";
  el.classList.toggle("error", Boolean(isError));
}

async function api(path, options) {
  const response = await fetch(path, options);
  if (!response.ok) {
    let message = response.status + " " + response.statusText;
    try { message = (await response.json()).error || message; } catch (_) { /* not JSON */ }
    const err = new Error(message);
    err.status = response.status;
    throw err;
  }
  return response;
}

function postJSON(path, body) {
  return api(path, {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)});
}

function fmt(value, digits) { return Number(value).toFixed(digits); }

function planeQuery(run) {
  const dims = run.plane === "dims" ? "&dims=" + run.dims.map((d) => d + 1).join(",") : "";
  return "plane=" + run.plane + dims;
}

// the picked label of a conditional run, undefined for another (JSON.stringify leaves it out)
function labelOf(run) { return run.info.classes ? run.label : undefined; }
function labelQuery(run) { return run.info.classes ? "&label=" + run.label : ""; }
function labelName(run) { return run.info.classes[run.label]; }

// u = o + V w for one run, with w = (w1, w2, sliders...)
function toU(run, w1, w2) {
  const map = run.map, z = run.info.latent_dim;
  const w = [w1, w2].slice(0, Math.min(2, z)).concat(run.sliders);
  const u = map.origin.slice();
  for (let i = 0; i < z; i++) {
    for (let j = 0; j < w.length; j++) u[i] += map.basis[i][j] * w[j];
  }
  const bound = run.info.coordinate_bound;
  return u.map((v) => Math.max(-bound, Math.min(bound, v)));
}

// w = V^T (u - o)
function toW(run, u) {
  const map = run.map, z = run.info.latent_dim, w = new Array(z).fill(0);
  for (let j = 0; j < z; j++) for (let i = 0; i < z; i++) w[j] += map.basis[i][j] * (u[i] - map.origin[i]);
  return w;
}

// canvas pixel <-> plane coordinates of the shared box (w2 grows upwards)
function toPixel(canvas, w1, w2) {
  const [x0, x1, y0, y1] = state.box;
  return [(w1 - x0) / (x1 - x0) * canvas.width, (y1 - w2) / (y1 - y0) * canvas.height];
}
function toPlane(canvas, px, py) {
  const [x0, x1, y0, y1] = state.box;
  return [x0 + px / canvas.width * (x1 - x0), y1 - py / canvas.height * (y1 - y0)];
}

async function blobToCanvas(blob, canvas) {
  const bitmap = await createImageBitmap(blob);
  const ctx = canvas.getContext("2d");
  ctx.imageSmoothingEnabled = false;
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const scale = Math.min(canvas.width / bitmap.width, canvas.height / bitmap.height);
  const w = bitmap.width * scale, h = bitmap.height * scale;
  ctx.drawImage(bitmap, (canvas.width - w) / 2, (canvas.height - h) / 2, w, h);
  bitmap.close();
}

function imageElement(src, alt, cls) {
  const img = document.createElement("img");
  img.src = src; img.alt = alt; img.className = cls || "pixelated";
  return img;
}

// -------------------------------------------------------------------------------- the map

function unionBox() {
  const boxes = state.runs.map((r) => r.map.box);
  state.fitted = Math.max(...boxes.map((b) => Math.max(-b[0], b[1], -b[2], b[3])));
  setView(state.view.centre, state.view.zoom);
}

// Both maps show the same box, so the same pixel is the same (w1, w2) on each.
function setView(centre, zoom) {
  state.view = {centre, zoom: Math.max(0.5, Math.min(200, zoom))};
  const half = state.fitted / state.view.zoom, [c1, c2] = state.view.centre;
  state.box = [c1 - half, c1 + half, c2 - half, c2 + half];
}

function zoomAt(w, factor) {
  const zoom = Math.max(0.5, Math.min(200, state.view.zoom * factor)), kept = state.view.zoom / zoom;
  // the point under the pointer stays where it is
  const centre = [0, 1].map((k) => w[k] + (state.view.centre[k] - w[k]) * kept);
  setView(zoom <= 1 ? [0, 0] : centre, zoom);
  state.runs.forEach(drawMap);
  redrawOverlays();
}

function drawMap(run) {
  const canvas = run.el.map, ctx = canvas.getContext("2d"), map = run.map;
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  // grid lines at round numbers of prior s.d.s: about ten across the box
  const [x0, x1, y0, y1] = state.box, raw = (x1 - x0) / 10, magnitude = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * magnitude).find((s) => s >= raw);
  const label = (v) => String(Number(v.toFixed(6)));
  ctx.strokeStyle = "#eee"; ctx.lineWidth = 1; ctx.fillStyle = "#999"; ctx.font = "10px sans-serif";
  for (let v = Math.ceil(x0 / step) * step; v <= x1; v += step) {
    const [px] = toPixel(canvas, v, 0);
    ctx.beginPath(); ctx.moveTo(px, 0); ctx.lineTo(px, canvas.height); ctx.stroke();
    ctx.fillText(label(v), px + 2, canvas.height - 3);
  }
  for (let v = Math.ceil(y0 / step) * step; v <= y1; v += step) {
    const [, py] = toPixel(canvas, 0, v);
    ctx.beginPath(); ctx.moveTo(0, py); ctx.lineTo(canvas.width, py); ctx.stroke();
    ctx.fillText(label(v), 2, py - 2);
  }
  // the codes, coloured by label
  const colourOf = new Map(map.classes.map((c, i) => [c, map.class_colours[i]]));
  ctx.globalAlpha = 0.65;
  map.points.forEach((p, i) => {
    const [px, py] = toPixel(canvas, p[0], p[1]);
    ctx.fillStyle = map.labels ? colourOf.get(map.labels[i]) : map.class_colours[0];
    ctx.beginPath(); ctx.arc(px, py, 2.2, 0, 2 * Math.PI); ctx.fill();
  });
  ctx.globalAlpha = 1;
  // the prior's marginal on this plane
  ctx.strokeStyle = "#444"; ctx.setLineDash([4, 3]); ctx.lineWidth = 1;
  for (const contour of map.contours) {
    for (const line of contour.lines) {
      ctx.beginPath();
      line.forEach((p, i) => { const [px, py] = toPixel(canvas, p[0], p[1]); i ? ctx.lineTo(px, py) : ctx.moveTo(px, py); });
      ctx.stroke();
    }
  }
  ctx.setLineDash([]);
  ctx.fillStyle = "#333"; ctx.font = "11px sans-serif";
  ctx.fillText(map.axis_names[0] + " →", canvas.width - 60, canvas.height - 16);
  if (map.axis_names.length > 1) ctx.fillText("↑ " + map.axis_names[1], 6, 14);
  drawLegend(run);
}

function drawLegend(run) {
  const map = run.map, legend = run.el.legend, info = run.info;
  legend.replaceChildren();
  map.classes.forEach((c, i) => {
    const item = document.createElement("span");
    item.className = "swatch";
    const dot = document.createElement("i");
    dot.style.background = map.class_colours[i];
    item.append(dot, document.createTextNode(map.class_names[i]));
    legend.append(item);
  });
  const prior = document.createElement("p");
  prior.textContent = info.deterministic
    ? "dashed: N(0, I) at 1, 2, 3 σ (for reference: an AE has no prior)"
    : "dashed: the prior's marginal on this plane, regions of 39%, 86%, 99% of its mass (1, 2, 3 σ)";
  legend.append(prior);
}

function drawOverlay(run) {
  const canvas = run.el.overlay, ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  if (run.encoding) {  // the input's posterior: mean and 1-, 2-sigma ellipses
    ctx.strokeStyle = "#d62728"; ctx.lineWidth = 2;
    for (const ellipse of run.encoding.ellipses) {
      ctx.beginPath();
      ellipse.forEach((p, i) => { const [px, py] = toPixel(canvas, p[0], p[1]); i ? ctx.lineTo(px, py) : ctx.moveTo(px, py); });
      ctx.closePath(); ctx.stroke();
    }
    const w = toW(run, run.encoding.u), [px, py] = toPixel(canvas, w[0], w.length > 1 ? w[1] : 0);
    ctx.fillStyle = "#d62728"; ctx.beginPath(); ctx.arc(px, py, 4, 0, 2 * Math.PI); ctx.fill();
  }
  if (state.pin) {
    const [px, py] = toPixel(canvas, state.pin.w[0], state.pin.w[1]);
    ctx.strokeStyle = "#000"; ctx.lineWidth = 2;
    ctx.strokeRect(px - 5, py - 5, 10, 10);
  }
  if (state.pointer) {
    const [px, py] = toPixel(canvas, state.pointer[0], state.pointer[1]);
    ctx.strokeStyle = "#000"; ctx.lineWidth = 1;
    ctx.beginPath(); ctx.moveTo(px - 9, py); ctx.lineTo(px + 9, py); ctx.moveTo(px, py - 9); ctx.lineTo(px, py + 9); ctx.stroke();
  }
}

function redrawOverlays() { state.runs.forEach(drawOverlay); }

// ------------------------------------------------------------------------------ live decoding

// One request in flight per run; moves made meanwhile collapse into the latest position.
function requestDecode(run) {
  if (!state.pointer) return;
  if (run.decodeBusy) { run.decodeNext = true; return; }
  run.decodeBusy = true;
  const [w1, w2] = state.pointer, u = toU(run, w1, w2);
  run.el.coords.textContent = "u = (" + u.slice(0, 4).map((v) => fmt(v, 2)).join(", ") + (u.length > 4 ? ", …" : "") + ")";
  postJSON("/api/run/" + run.info.id + "/decode", {z: u, label: labelOf(run)})
    .then((r) => r.blob())
    .then((blob) => blobToCanvas(blob, run.el.decoded))
    .then(() => { run.el.decoded.dataset.decoded = String(Number(run.el.decoded.dataset.decoded || 0) + 1); })
    .catch((err) => status("decode: " + err.message, true))
    .finally(() => {
      run.decodeBusy = false;
      if (run.decodeNext) { run.decodeNext = false; requestDecode(run); }
    });
}

function pointerAt(w) {
  state.pointer = w;
  state.runs.forEach(requestDecode);
  redrawOverlays();
}

function nearestCode(run, w, pixels) {
  const canvas = run.el.overlay, [px, py] = toPixel(canvas, w[0], w[1]);
  let best = -1, bestDistance = pixels * pixels;
  run.map.points.forEach((p, i) => {
    const [qx, qy] = toPixel(canvas, p[0], p[1]), d = (qx - px) ** 2 + (qy - py) ** 2;
    if (d < bestDistance) { best = i; bestDistance = d; }
  });
  return best;
}

function attachMap(run) {
  const canvas = run.el.overlay;
  const planeAt = (event) => {
    const rect = canvas.getBoundingClientRect();
    return toPlane(canvas, (event.clientX - rect.left) * canvas.width / rect.width,
      (event.clientY - rect.top) * canvas.height / rect.height);
  };
  canvas.addEventListener("pointermove", (event) => pointerAt(planeAt(event)));
  canvas.addEventListener("wheel", (event) => {
    event.preventDefault();
    zoomAt(planeAt(event), event.deltaY < 0 ? 1.25 : 0.8);
  }, {passive: false});
  const centre = () => state.pointer || state.view.centre;
  run.el.zoomIn.addEventListener("click", () => zoomAt(centre(), 1.5));
  run.el.zoomOut.addEventListener("click", () => zoomAt(centre(), 1 / 1.5));
  run.el.zoomFit.addEventListener("click", () => zoomAt([0, 0], 1 / state.view.zoom));
  canvas.addEventListener("click", (event) => {
    const w = planeAt(event), index = nearestCode(run, w, 6);
    if (index >= 0) {
      const label = run.map.labels ? run.map.class_names[run.map.classes.indexOf(run.map.labels[index])] : null;
      state.pin = {kind: "example", index, w: run.map.points[index], label, run: run.info.id};
      status("pinned test image #" + index + (label !== null ? " (" + label + ")" : ""));
    } else {
      state.pin = {kind: "point", w};
      status("pinned (" + fmt(w[0], 2) + ", " + fmt(w[1], 2) + ")");
    }
    pointerAt(state.pin.w);
  });
}

// ---------------------------------------------------------------------------- plane and sliders

function buildPlaneControls(run) {
  const box = run.el.planeControls, info = run.info;
  box.replaceChildren();
  if (info.latent_dim <= 2) {
    const whole = info.layer_note ? "the whole top layer" : "the whole latent";
    box.textContent = info.latent_dim === 2 ? "plane: " + info.dim_names.join(", ") + " (" + whole + ")"
      : "one latent dim: " + info.dim_names[0] + " across, nothing up";
    return;
  }
  const planeSelect = document.createElement("select");
  for (const [value, text] of [["dims", "two latent dims"], ["pca", "PCA of the test codes"]]) {
    planeSelect.append(new Option(text, value, false, run.plane === value));
  }
  const dimSelects = [0, 1].map((k) => {
    const select = document.createElement("select");
    info.dim_order.forEach((d) => select.append(new Option(
      info.dim_names[d] + " (" + info.score_name + " " + fmt(info.dim_scores[d], 2) + ")", String(d), false, run.dims[k] === d)));
    select.disabled = run.plane !== "dims";
    return select;
  });
  const changed = async () => {
    const dims = dimSelects.map((s) => Number(s.value));
    if (planeSelect.value === "dims" && dims[0] === dims[1]) { status("pick two different dims", true); return; }
    run.plane = planeSelect.value; run.dims = dims;
    dimSelects.forEach((s) => { s.disabled = run.plane !== "dims"; });
    await loadMap(run);
  };
  planeSelect.addEventListener("change", changed);
  dimSelects.forEach((s) => s.addEventListener("change", changed));
  const label = document.createElement("label");
  label.append("plane ", planeSelect);
  box.append(label, " axes ", dimSelects[0], " × ", dimSelects[1]);
}

function buildSliders(run) {
  const box = run.el.sliders;
  box.replaceChildren();
  run.sliders = run.map.sliders.map(() => 0);
  run.map.sliders.forEach((slider, k) => {
    const label = document.createElement("label");
    const input = document.createElement("input");
    const value = document.createElement("output");
    Object.assign(input, {type: "range", min: -slider.max, max: slider.max, step: slider.max / 200, value: 0});
    value.textContent = "0.00";
    input.addEventListener("input", () => {
      run.sliders[k] = Number(input.value);
      value.textContent = fmt(input.value, 2);
      requestDecode(run);
    });
    label.append(slider.name + " ", input, " ", value);
    box.append(label);
  });
}

async function loadMap(run) {
  const response = await api("/api/run/" + run.info.id + "/map?" + planeQuery(run));
  run.map = await response.json();
  buildSliders(run);
  if (state.runs.every((r) => r.map)) {
    unionBox();
    state.runs.forEach(drawMap);
    if (run.encoding) reencode(run);
    redrawOverlays();
    if (state.pointer) requestDecode(run);
  }
}

// ------------------------------------------------------------------------------- encoding

async function encodeBlob(blob) {
  state.drawingBlob = blob;
  status("encoding…");
  await Promise.all(state.runs.map((run) => encodeFor(run, blob)));
  status("encoded: each run's q(z|x) is drawn on its map (mean and 1-, 2-σ ellipses)");
}

async function encodeFor(run, blob) {
  try {
    const response = await api("/api/run/" + run.info.id + "/encode?" + planeQuery(run) + labelQuery(run), {method: "POST", body: blob});
    run.encoding = await response.json();
    showEncoding(run);
    drawOverlay(run);
  } catch (err) {
    status("encode: " + err.message, true);
  }
}

function reencode(run) { if (state.drawingBlob) encodeFor(run, state.drawingBlob); }

function showEncoding(run) {
  const e = run.encoding, body = run.el.encoding, info = run.info;
  body.replaceChildren();
  const images = document.createElement("div");
  images.className = "pair";
  const reconstruction = info.classes ? "E[x | z = E_q[z|x, y], y]"
    : info.layer_note ? "E[x | z], every layer at q(z|x)'s top-down mean" : "E[x | z = E_q[z|x]]";
  const shown = [[e.input, "as the model sees it"], [e.reconstruction, reconstruction]];
  if (e.decoded_code) {  // a hierarchical run: what the map decodes where it placed the input
    const top = "z" + info.layer_shown;
    shown.push([e.decoded_code, "E[x | " + top + " = E_q[" + top + "|x]], lower layers at their prior means (the map's point)"]);
  }
  for (const [src, caption] of shown) {
    const figure = document.createElement("figure");
    const cap = document.createElement("figcaption");
    cap.textContent = caption;
    figure.append(imageElement(src, caption, "pixelated big"), cap);
    images.append(figure);
  }
  body.append(images);
  const text = document.createElement("div");
  text.className = "logpx";
  const logp = info.classes ? "log p(x | y = " + info.classes[e.given_label] + ")" : "log p(x)";
  if (e.log_px === null) {
    text.textContent = logp + ": " + e.note;
  } else {
    const line = document.createElement("p");
    line.append(logp + " ≈ ", Object.assign(document.createElement("b"), {textContent: fmt(e.log_px, 2)}),
      " ± " + fmt(e.log_px_stderr, 2) + " nats (s.e.; importance sampling, k = " + e.k + "), i.e. " +
      fmt(e.nll_bpd, 4) + " bits/dim of −log p(x)");
    text.append(line);
    const test = info.test_log_px;
    if (test.counts) {
      const where = document.createElement("p");
      const theirs = info.classes ? "log p(x | y), each at its own label" : "log p(x)";
      where.textContent = "higher than " + fmt(100 * e.percentile, 1) + "% of the " + test.num_examples +
        " test images' " + theirs + " (their mean " + fmt(test.mean, 2) + " nats, k = " + test.k + ")";
      text.append(where, histogram(test, e.log_px, info.classes ? "log p(x | y)" : "log p(x)"));
    } else {
      text.append(Object.assign(document.createElement("p"), {textContent: test.note}));
    }
  }
  if (e.inverted) text.append(Object.assign(document.createElement("p"), {textContent: "(light background: grey levels inverted)"}));
  body.append(text);
}

function histogram(test, value, logp) {
  const canvas = document.createElement("canvas");
  canvas.width = 320; canvas.height = 90; canvas.className = "histogram";
  const ctx = canvas.getContext("2d"), edges = test.edges, counts = test.counts;
  const lo = Math.min(edges[0], value), hi = Math.max(edges[edges.length - 1], value);
  const x = (v) => 4 + (v - lo) / (hi - lo || 1) * (canvas.width - 8), top = Math.max(...counts);
  ctx.fillStyle = "#9ecae1";
  counts.forEach((c, i) => {
    const h = c / top * (canvas.height - 22);
    ctx.fillRect(x(edges[i]), canvas.height - 14 - h, Math.max(1, x(edges[i + 1]) - x(edges[i]) - 1), h);
  });
  ctx.strokeStyle = "#d62728"; ctx.lineWidth = 2;
  ctx.beginPath(); ctx.moveTo(x(value), 4); ctx.lineTo(x(value), canvas.height - 14); ctx.stroke();
  ctx.fillStyle = "#333"; ctx.font = "10px sans-serif";
  ctx.fillText(fmt(lo, 0), 2, canvas.height - 2);
  ctx.fillText(fmt(hi, 0) + " nats", canvas.width - 60, canvas.height - 2);
  const figure = document.createElement("figure");
  const caption = document.createElement("figcaption");
  caption.textContent = "the test images' " + logp + " (blue) and your input's (red)";
  figure.append(canvas, caption);
  return figure;
}

// ------------------------------------------------------------------------------- the drawing

function attachDrawing() {
  const canvas = document.getElementById("draw"), ctx = canvas.getContext("2d");
  const clear = () => { ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, canvas.width, canvas.height); };
  clear();
  let drawing = false, last = null, inked = false;
  const at = (event) => {
    const rect = canvas.getBoundingClientRect();
    return [(event.clientX - rect.left) * canvas.width / rect.width, (event.clientY - rect.top) * canvas.height / rect.height];
  };
  canvas.addEventListener("pointerdown", (event) => {
    drawing = true; last = at(event); inked = true;
    canvas.setPointerCapture(event.pointerId);
    ctx.fillStyle = "#000"; ctx.beginPath(); ctx.arc(last[0], last[1], 8, 0, 2 * Math.PI); ctx.fill();
  });
  canvas.addEventListener("pointermove", (event) => {
    if (!drawing) return;
    const p = at(event);
    ctx.strokeStyle = "#000"; ctx.lineWidth = 16; ctx.lineCap = "round"; ctx.lineJoin = "round";
    ctx.beginPath(); ctx.moveTo(last[0], last[1]); ctx.lineTo(p[0], p[1]); ctx.stroke();
    last = p;
  });
  const finish = () => {
    if (!drawing) return;
    drawing = false;
    if (inked) canvas.toBlob((blob) => encodeBlob(blob), "image/png");
  };
  canvas.addEventListener("pointerup", finish);
  canvas.addEventListener("pointercancel", finish);
  document.getElementById("clear").addEventListener("click", () => { clear(); inked = false; });

  const takeFile = async (file) => {
    if (!file) return;
    try {
      await blobToCanvas(file, canvas);
    } catch (_) {
      status("that file is not an image the browser can show; sending it anyway", true);
    }
    encodeBlob(file);
  };
  document.getElementById("file").addEventListener("change", (event) => takeFile(event.target.files[0]));
  for (const target of [canvas, document.getElementById("draw-tool")]) {
    target.addEventListener("dragover", (event) => { event.preventDefault(); target.classList.add("dropping"); });
    target.addEventListener("dragleave", () => target.classList.remove("dropping"));
    target.addEventListener("drop", (event) => {
      event.preventDefault(); target.classList.remove("dropping");
      takeFile(event.dataTransfer.files[0]);
    });
  }
}

// ---------------------------------------------------------------------------- interpolation

async function endFor(run, end) {
  // one end as this run's u: a pinned point through its own plane, a test image or the drawing
  // through its own encoder
  if (end.kind === "point") return toU(run, end.w[0], end.w[1]);
  if (end.kind === "drawing") return end.encodings[run.info.id];
  // (a test image is encoded under its own label, where the map shows its code)
  const response = await postJSON("/api/run/" + run.info.id + "/encode-example", {index: end.index});
  return (await response.json()).u;
}

function setEnd(slot, source) {
  let end = null, text = "";
  if (source === "pin") {
    if (!state.pin) { status("click the map first to pin a point", true); return; }
    end = Object.assign({}, state.pin);
    text = end.kind === "example" ? "test image #" + end.index + (end.label !== null ? " (" + end.label + ")" : "")
      : "point (" + fmt(end.w[0], 2) + ", " + fmt(end.w[1], 2) + ")";
  } else {
    if (!state.runs.every((r) => r.encoding)) { status("draw a digit or drop an image first", true); return; }
    end = {kind: "drawing", encodings: Object.fromEntries(state.runs.map((r) => [r.info.id, r.encoding.u]))};
    text = "your drawing";
  }
  state.ends[slot] = end;
  document.getElementById("slot-" + slot).textContent = text;
  interpolate();
}

async function interpolate() {
  if (!state.ends.a || !state.ends.b) return;
  const n = Math.max(2, Math.min(32, Number(document.getElementById("interp-n").value) || 10));
  const method = document.getElementById("interp-method").value;
  await Promise.all(state.runs.map(async (run) => {
    try {
      const [a, b] = await Promise.all([endFor(run, state.ends.a), endFor(run, state.ends.b)]);
      const blob = await (await postJSON("/api/run/" + run.info.id + "/interpolate", {a, b, n, method, label: labelOf(run)})).blob();
      const img = imageElement(URL.createObjectURL(blob), "interpolation strip", "pixelated strip");
      img.addEventListener("load", () => URL.revokeObjectURL(img.src), {once: true});
      run.el.strip.replaceChildren(img, Object.assign(document.createElement("p"), {
        textContent: "decoder means E[x|z(t)" + (run.info.classes ? ", y = " + labelName(run) : "") + "] along the " +
          method + " path from A to B, t = 0 … 1 (" + n + " points)"}));
    } catch (err) {
      status("interpolate: " + err.message, true);
    }
  }));
}

// ----------------------------------------------------------------------------- prior samples

async function sample() {
  await Promise.all(state.runs.map(async (run) => {
    if (run.info.samples_note) { run.el.samples.textContent = run.info.samples_note; return; }
    try {
      const response = await postJSON("/api/run/" + run.info.id + "/samples", {n: 16, seed: state.seed, label: labelOf(run)});
      const title = JSON.parse(response.headers.get("X-Title") || '""');
      const img = imageElement(URL.createObjectURL(await response.blob()), title, "pixelated samples-grid");
      img.addEventListener("load", () => URL.revokeObjectURL(img.src), {once: true});
      run.el.samples.replaceChildren(img, Object.assign(document.createElement("p"), {textContent: title}));
    } catch (err) {
      status("samples: " + err.message, true);
    }
  }));
  document.getElementById("seed").textContent = String(state.seed);
  state.seed += 1;
}

// ------------------------------------------------------------------------------ the label

// A conditional run's picker: the label y its decoder (and encoder) is given. The map's codes stay
// E_q[z|x, y] at each test image's true label; what is decoded, drawn and encoded follows the pick.
function buildLabelPicker(run) {
  const info = run.info, picker = run.el.labelPicker, select = run.el.labelSelect;
  if (!info.classes) return;
  run.label = 0;
  info.classes.forEach((name, c) => select.append(new Option(name, String(c), false, c === run.label)));
  picker.hidden = false;
  run.el.decodedTitle.textContent = "E[x | z, y] at the pointer";
  select.addEventListener("change", () => {
    run.label = Number(select.value);
    status("run " + info.id.toUpperCase() + " decodes as " + labelName(run));
    requestDecode(run);
    reencode(run);
    interpolate();
  });
}

// ------------------------------------------------------------------------------------ start

function runCard(info) {
  const node = document.getElementById("run-template").content.firstElementChild.cloneNode(true);
  node.dataset.run = info.id;
  node.querySelector(".run-title").textContent = info.id.toUpperCase() + ": " + info.name;
  const prior = info.deterministic ? "an autoencoder (no prior)" : "prior " + info.prior;
  const top = "z" + info.layer_shown;
  const latent = info.layer_note
    ? info.layers + " stochastic layers, mapped on the top layer " + top + " (" + info.latent_dim + "-D)"
    : info.latent_dim + "-D latent";
  node.querySelector(".run-facts").textContent = info.model.toUpperCase() + ", " + latent + ", " + prior +
    (info.layer_note ? " on " + top : "") + ", " + info.num_test + " test codes " + (info.classes
      ? "(posterior means E_q[z|x, y] at their true labels; conditional on " + info.classes.length + " labels)"
      : info.layer_note ? "(posterior means E_q[" + top + "|x])" : "(posterior means)");
  const note = node.querySelector(".layer-note");
  if (info.layer_note) { note.textContent = "Shown: " + info.layer_note + "."; note.hidden = false; }
  const el = {
    card: node,
    map: node.querySelector(".map"), overlay: node.querySelector(".overlay"),
    decoded: node.querySelector(".decoded"), coords: node.querySelector(".coords"),
    legend: node.querySelector(".legend"), planeControls: node.querySelector(".plane-controls"),
    zoomIn: node.querySelector(".zoom-in"), zoomOut: node.querySelector(".zoom-out"),
    zoomFit: node.querySelector(".zoom-fit"),
    labelPicker: node.querySelector(".label-picker"), labelSelect: node.querySelector(".label-select"),
    decodedTitle: node.querySelector(".decoded-title"),
    sliders: node.querySelector(".sliders"), encoding: node.querySelector(".encoding-body"),
    strip: node.querySelector(".strip-body"), samples: node.querySelector(".samples-body"),
  };
  if (info.samples_note) el.samples.textContent = info.samples_note;
  if (!info.images) el.encoding.textContent = "this run's data are not images: drawing and dropping need image data";
  document.getElementById("runs").append(node);
  return el;
}

async function start() {
  try {
    const {runs} = await (await api("/api/runs")).json();
    document.getElementById("run-names").textContent = runs.map((r) => r.name).join(" vs ");
    document.getElementById("runs").classList.toggle("two", runs.length > 1);
    state.runs = runs.map((info) => ({
      info, map: null, plane: "dims", dims: info.dim_order.slice(0, 2).sort((i, j) => i - j), sliders: [], label: null,
      el: runCard(info), decodeBusy: false, decodeNext: false, encoding: null,
    }));
    state.runs.forEach(buildPlaneControls);
    state.runs.forEach(buildLabelPicker);
    state.runs.forEach(attachMap);
    await Promise.all(state.runs.map(loadMap));
    pointerAt([0, 0]);
    attachDrawing();
    document.getElementById("sample").addEventListener("click", sample);
    for (const slot of ["a", "b"]) {
      document.getElementById(slot + "-pin").addEventListener("click", () => setEnd(slot, "pin"));
      document.getElementById(slot + "-draw").addEventListener("click", () => setEnd(slot, "drawing"));
    }
    for (const id of ["interp-n", "interp-method"]) document.getElementById(id).addEventListener("change", interpolate);
    document.body.dataset.ready = "true";
    status("ready");
  } catch (err) {
    status("could not start: " + err.message, true);
  }
}

document.addEventListener("DOMContentLoaded", start);
