// alignnet explorer: plain JavaScript, no external assets.
"use strict";

const state = {
  info: null,
  file: null,       // the uploaded File (kept in the page only; re-sent with each request)
  example: null,    // or the index of an embedded test image
  target: null,     // explained class (null: the predicted one)
  request: 0,       // id of the latest request: older answers are ignored
  explanation: null,
  attribution: null,
};

const $ = (id) => document.getElementById(id);

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

function setStatus(text) { $("status").textContent = text; }

async function getJSON(url, options) {
  let response;
  try {
    response = await fetch(url, options);
  } catch (err) {
    throw new Error("the server cannot be reached (" + err.message + ")");
  }
  let data = null;
  try { data = await response.json(); } catch (_) { /* not JSON */ }
  if (!response.ok) {
    let detail = data && data.detail;
    if (Array.isArray(detail)) detail = detail.map((d) => d.msg).join("; ");
    throw new Error(detail || ("the server answered " + response.status + " " + response.statusText));
  }
  return data;
}

function selectedModel() {
  return state.info.models.find((m) => m.id === $("model-select").value) || state.info.models[0];
}

function chosenMethods() {
  return Array.from(document.querySelectorAll("#method-choice input:checked")).map((el) => el.value);
}

function query(extra) {
  const p = new URLSearchParams({ model: selectedModel().id });
  if (state.example !== null) p.set("example", String(state.example));
  if (state.target !== null) p.set("target", String(state.target));
  for (const [k, v] of Object.entries(extra || {})) p.set(k, v);
  return p.toString();
}

function body() {
  return state.example === null && state.file ? state.file : null;
}

async function update() {
  if (state.file === null && state.example === null) return;
  const id = ++state.request;
  showError("");
  setStatus("explaining…");
  $("download").disabled = true;
  let e;
  try {
    e = await getJSON("/api/explain?" + query(), { method: "POST", body: body() });
  } catch (err) {
    if (id === state.request) { setStatus(""); showError(err.message); }
    return;
  }
  if (id !== state.request) return;
  state.explanation = e;
  renderExplanation(e);
  $("download").disabled = false;
  const methods = chosenMethods();
  if (methods.length === 0) { setStatus(""); renderMethods(null); return; }
  setStatus("running " + methods.join(", ") + "…");
  let a;
  try {
    a = await getJSON("/api/attribute?" + query({ target: String(e.target), methods: methods.join(",") }),
      { method: "POST", body: body() });
  } catch (err) {
    if (id === state.request) { setStatus(""); showError(err.message); }
    return;
  }
  if (id !== state.request) return;
  state.attribution = a;
  renderMethods(a);
  setStatus("done");
}

function renderExplanation(e) {
  $("result").hidden = false;
  $("input-img").src = e.input;
  $("colour-img").src = e.colour || "";
  $("contrib-img").src = e.contributions;
  const predicted = e.top[0];
  const pct = (c) => c.name + " (" + (100 * c.probability).toFixed(1) + "%)";
  $("predicted").textContent = e.labels  // a multi-label model: every label above its threshold
    ? (e.labels.length ? e.labels.map(pct).join(", ") : "no label") + " — labels with p \u2265 " + e.threshold
    : pct(predicted);
  $("explained").textContent = e.target_name + " (" + (100 * e.target_probability).toFixed(1) + "%)";
  const list = $("top5");
  list.textContent = "";
  for (const c of e.top) {
    const li = document.createElement("li");
    const b = document.createElement("button");
    b.type = "button";
    b.dataset.index = c.index;
    if (c.index === e.target) b.classList.add("active");
    const bar = document.createElement("div");
    bar.className = "bar";
    bar.style.width = (100 * c.probability).toFixed(1) + "%";
    const label = document.createElement("span");
    label.textContent = c.name + " — " + (100 * c.probability).toFixed(1) + "%";
    b.append(bar, label);
    b.addEventListener("click", () => { state.target = c.index; update(); });
    li.append(b);
    list.append(li);
  }
  $("numbers").textContent =
    "logit " + e.logit.toFixed(4) + " = contributions " + e.contribution_sum.toFixed(4) +
    " + bias " + e.bias.toFixed(4) + " (relative error " + e.completeness_error.toExponential(1) +
    "); explained in " + e.explain_ms.toFixed(1) + " ms";
  const prep = e.preprocessing || {};
  $("prep").textContent = prep.example !== undefined ? "embedded test image #" + prep.example :
    "uploaded " + prep.original_size[1] + "×" + prep.original_size[0] + " image" +
    (prep.inverted ? ", inverted (light background) to match Fashion-MNIST" : "");
}

function renderMethods(a) {
  const row = $("methods");
  row.textContent = "";
  const e = state.explanation;
  const cells = [{ method: "ours (exact)", map: e.contributions, ms: e.explain_ms }];
  if (a) cells.push(...a.methods);
  for (const m of cells) {
    const fig = document.createElement("figure");
    fig.className = "method";
    fig.dataset.method = m.method;
    if (m.map) {
      const img = document.createElement("img");
      img.src = m.map;
      img.alt = m.method;
      fig.append(img);
    } else {
      const div = document.createElement("div");
      div.className = "err";
      div.textContent = "failed: " + m.error;
      fig.append(div);
    }
    const cap = document.createElement("figcaption");
    cap.textContent = m.method + " — " + m.ms.toFixed(1) + " ms";
    fig.append(cap);
    row.append(fig);
  }
}

function loadImage(src) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error("cannot draw " + src.slice(0, 40)));
    img.src = src;
  });
}

// Compose what the page shows into one PNG, drawn on a canvas (no server round trip).
async function downloadFigure() {
  const e = state.explanation;
  if (!e) return;
  const size = 192, gap = 16, top = 56, caption = 22;
  const panels = [
    { title: "input", src: e.input, bg: "#fff" },
    { title: "colour explanation", src: e.colour, bg: "#000" },
    { title: "contributions (ours)", src: e.contributions, bg: "#fff" },
  ];
  if (state.attribution && state.attribution.target === e.target) {
    for (const m of state.attribution.methods) {
      if (m.map) panels.push({ title: m.method + " (" + m.ms.toFixed(0) + " ms)", src: m.map, bg: "#fff" });
    }
  }
  const canvas = document.createElement("canvas");
  canvas.width = gap + panels.length * (size + gap);
  canvas.height = top + size + caption + gap;
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  ctx.fillStyle = "#222";
  ctx.font = "bold 16px sans-serif";
  ctx.fillText(e.model + ": " + e.target_name + " (" + (100 * e.target_probability).toFixed(1) + "%)", gap, 24);
  ctx.font = "12px sans-serif";
  ctx.fillText("predicted " + e.top[0].name + "; logit " + e.logit.toFixed(3) + " = sum of contributions + bias " +
    e.bias.toFixed(3), gap, 44);
  ctx.imageSmoothingEnabled = false;
  for (let i = 0; i < panels.length; i++) {
    const x = gap + i * (size + gap);
    ctx.fillStyle = panels[i].bg;
    ctx.fillRect(x, top, size, size);
    if (panels[i].src) ctx.drawImage(await loadImage(panels[i].src), x, top, size, size);
    ctx.strokeStyle = "#ccc";
    ctx.strokeRect(x, top, size, size);
    ctx.fillStyle = "#222";
    ctx.fillText(panels[i].title, x, top + size + 16);
  }
  const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = "alignnet_" + e.model + "_" + e.target_name.replace(/[^A-Za-z0-9]+/g, "_") + ".png";
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10000);
}

function onModelChange() {
  const m = selectedModel();
  $("model-badge").hidden = m.trained;
  $("model-badge").textContent = m.trained ? "" : "UNTRAINED: random weights";
  state.target = null;
  update();
}

function onFile(ev) {
  const file = ev.target.files[0];
  if (!file) return;
  if (file.size > state.info.max_upload_bytes) {
    showError("the file is " + (file.size / 1e6).toFixed(1) + " MB; the limit is " +
      (state.info.max_upload_bytes / 1e6).toFixed(0) + " MB");
    return;
  }
  state.file = file;
  state.example = null;
  state.target = null;
  document.querySelectorAll("#examples button").forEach((b) => b.classList.remove("selected"));
  update();
}

async function init() {
  try {
    state.info = await getJSON("/api/info");
  } catch (err) {
    showError(err.message);
    return;
  }
  const select = $("model-select");
  for (const m of state.info.models) {
    const opt = document.createElement("option");
    opt.value = m.id;
    opt.textContent = m.label;
    select.append(opt);
  }
  $("max-methods").textContent = state.info.max_methods;
  $("limit-hint").textContent = "(up to " + (state.info.max_upload_bytes / 1e6).toFixed(0) +
    " MB; decoded in memory, never stored)";
  const choice = $("method-choice");
  for (const name of state.info.methods) {
    const label = document.createElement("label");
    const box = document.createElement("input");
    box.type = "checkbox";
    box.value = name;
    box.checked = state.info.default_methods.includes(name);
    box.addEventListener("change", () => {
      if (chosenMethods().length > state.info.max_methods) {
        box.checked = false;
        showError("choose at most " + state.info.max_methods + " methods");
        return;
      }
      update();
    });
    label.append(box, " " + name);
    choice.append(label);
  }
  select.addEventListener("change", onModelChange);
  $("file-input").addEventListener("change", onFile);
  $("download").addEventListener("click", () => downloadFigure().catch((err) => showError(err.message)));
  onModelChange();
  try {
    const examples = await getJSON("/api/examples");
    const box = $("examples");
    for (const ex of examples) {
      const b = document.createElement("button");
      b.type = "button";
      b.title = ex.name + " (test image #" + ex.index + ")";
      b.dataset.index = ex.index;
      const img = document.createElement("img");
      img.src = "/api/examples/" + ex.index + ".png";
      img.alt = ex.name;
      b.append(img);
      b.addEventListener("click", () => {
        document.querySelectorAll("#examples button").forEach((x) => x.classList.remove("selected"));
        b.classList.add("selected");
        state.example = ex.index;
        state.file = null;
        state.target = null;
        $("file-input").value = "";
        update();
      });
      box.append(b);
    }
  } catch (err) {
    showError(err.message);
  }
}

document.addEventListener("DOMContentLoaded", init);
