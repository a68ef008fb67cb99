// AICore app: plain JavaScript, no build step, no external assets.
"use strict";
const $ = (s, el = document) => el.querySelector(s);
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
const enc = (id) => id.split("/").map(encodeURIComponent).join("/");
const fmt = (v) => (typeof v === "number" ? (Number.isInteger(v) ? String(v) : v.toPrecision(4)) : esc(v));
const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b"];
const INIT = JSON.parse(document.body.dataset.init || "{}");

async function getJSON(url, opts) {
  const r = await fetch(url, opts);
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(body.detail || body.error || r.statusText);
  return body;
}

function chart(title, lines, opts = {}) {
  const W = 360, H = 220, L = 48, B = 28, T = 22;
  const pts = lines.flatMap((l) => l.points);
  if (!pts.length) return "";
  let [x0, x1] = [Math.min(...pts.map((p) => p[0])), Math.max(...pts.map((p) => p[0]))];
  let [y0, y1] = [Math.min(...pts.map((p) => p[1])), Math.max(...pts.map((p) => p[1]))];
  if (x0 === x1) { x0 -= 1; x1 += 1; } if (y0 === y1) { y0 -= 0.5; y1 += 0.5; }
  const sx = (x) => L + ((x - x0) / (x1 - x0)) * (W - L - 8);
  const sy = (y) => H - B - ((y - y0) / (y1 - y0)) * (H - B - T);
  let svg = `<svg width="${W}" height="${H}" data-title="${esc(title)}"><text x="${L}" y="14" font-size="12">${esc(title)}</text>`;
  svg += `<line x1="${L}" y1="${H - B}" x2="${W - 8}" y2="${H - B}" stroke="#999"/><line x1="${L}" y1="${T}" x2="${L}" y2="${H - B}" stroke="#999"/>`;
  svg += `<text x="2" y="${T + 8}" font-size="10">${fmt(y1)}</text><text x="2" y="${H - B}" font-size="10">${fmt(y0)}</text>`;
  svg += `<text x="${L}" y="${H - 8}" font-size="10">${fmt(x0)}</text><text x="${W - 40}" y="${H - 8}" font-size="10">${fmt(x1)}</text>`;
  lines.forEach((l, i) => {
    const c = COLORS[i % COLORS.length];
    const d = l.points.map((p, j) => `${j ? "L" : "M"}${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join("");
    svg += `<path class="series" data-label="${esc(l.label)}" d="${d}" fill="none" stroke="${c}" stroke-width="1.5"/>`;
    l.points.forEach((p) => { svg += `<circle cx="${sx(p[0]).toFixed(1)}" cy="${sy(p[1]).toFixed(1)}" r="2" fill="${c}"/>`; });
    svg += `<text x="${W - 130}" y="${T + 12 * (i + 1)}" font-size="10" fill="${c}">${esc(l.label)}</text>`;
  });
  if (opts.vline !== undefined) svg += `<line id="vline" x1="${sx(opts.vline)}" x2="${sx(opts.vline)}" y1="${T}" y2="${H - B}" stroke="#000" stroke-dasharray="4"/>`;
  return svg + "</svg>";
}

// ---- Runs ---------------------------------------------------------------------------------
let runRows = [], sortKey = "start", sortDir = -1;
function bestText(b) { return b ? `${b.name} ${fmt(b.value)}` : ""; }
function renderRuns() {
  const q = $("#filter").value.toLowerCase();
  const rows = runRows.filter((r) => JSON.stringify(r).toLowerCase().includes(q));
  rows.sort((a, b) => {
    let x = a[sortKey], y = b[sortKey];
    if (sortKey === "best") { x = a.best ? a.best.value : -Infinity; y = b.best ? b.best.value : -Infinity; }
    return (x > y ? 1 : x < y ? -1 : 0) * sortDir;
  });
  $("#runs tbody").innerHTML = rows.map((r) => `<tr data-id="${esc(r.id)}">
    <td><input type="checkbox" class="pick" value="${esc(r.id)}"></td>
    <td>${r.pending ? esc(r.id) : `<a href="/run/${enc(r.id)}">${esc(r.id)}</a>`}</td><td>${esc(r.task)}</td><td>${esc(r.model)}</td>
    <td>${esc(r.data_root)}</td><td>${r.epochs_done}/${r.epochs_total ?? "?"}</td><td>${bestText(r.best)}</td>
    <td class="status status-${esc(r.status)}">${esc(r.status)}</td>
    <td>${r.start ? new Date(r.start * 1000).toLocaleString() : ""}</td><td>${r.duration != null ? r.duration.toFixed(0) + " s" : ""}</td></tr>`).join("");
}
async function loadRuns() { runRows = await getJSON("/api/runs"); renderRuns(); }
function initRuns() {
  document.querySelectorAll("#runs th[data-key]").forEach((th) => th.addEventListener("click", () => {
    sortDir = sortKey === th.dataset.key ? -sortDir : 1; sortKey = th.dataset.key; renderRuns();
  }));
  $("#filter").addEventListener("input", renderRuns);
  $("#compare").addEventListener("click", () => {
    const ids = [...document.querySelectorAll(".pick:checked")].map((c) => c.value);
    if (ids.length < 2) { alert("select two or more runs"); return; }
    location.href = "/compare?" + ids.map((i) => "run=" + encodeURIComponent(i)).join("&");
  });
  loadRuns(); setInterval(loadRuns, 3000);
}

// ---- Run ----------------------------------------------------------------------------------
function curveCharts(byRun) {
  // byRun: {runLabel: {series: points}} -> one chart per series name, a line per run
  const names = [...new Set(Object.values(byRun).flatMap((s) => Object.keys(s)))].sort();
  return names.map((n) => chart(n, Object.entries(byRun).filter(([, s]) => s[n]).map(([run, s]) => ({label: run, points: s[n]})))).join("");
}
async function initRun() {
  const id = INIT.run;
  async function poll() {
    const p = await getJSON(`/api/run/${enc(id)}/progress`);
    const loss = Object.entries(p.loss || {}).map(([k, v]) => `${esc(k)} ${fmt(v)}`).join(", ");
    $("#progress").innerHTML = `<span id="run-status" class="status-${esc(p.status)}">${esc(p.status)}</span> ·
      epoch ${p.epoch}/${p.epochs ?? "?"}${p.iter ? ` · iteration ${p.iter}/${p.iters}` : ""}${loss ? " · " + loss : ""}
      ${p.status === "running" && (p.eta_text || p.eta_s != null) ? ` · ETA <span id="eta">${esc(p.eta_text || p.eta_s.toFixed(0) + " s")}</span>` : ""}`;
    $("#logtail").textContent = p.log_tail.join("\n");
    $("#curves").innerHTML = curveCharts({[id]: await getJSON(`/api/run/${enc(id)}/curves`)});
    if (p.status === "running" || p.status === "queued") setTimeout(poll, 2000);
  }
  poll();
}
async function initCompare() {
  const q = INIT.runs.map((i) => "run=" + encodeURIComponent(i)).join("&");
  const data = await getJSON("/api/compare?" + q);
  $("#curves").innerHTML = curveCharts(data.curves);
}

// ---- Threshold ----------------------------------------------------------------------------
async function initThreshold() {
  const id = INIT.run, base = `/api/run/${enc(id)}/threshold`;
  const ngParam = new URLSearchParams(location.search).get("ng");
  const q = ngParam ? `ng=${encodeURIComponent(ngParam)}&` : "";
  let data;
  try { data = await getJSON(`${base}?${q}`); } catch (e) { $("#save-msg").textContent = e.message; return; }
  $("#score-name").textContent = data.score_name;
  if (data.task === "classification") {
    // two-class OK/NG: the score is P(NG); pick which class is NG
    $("#ng-row").hidden = false;
    $("#ng-class").innerHTML = data.classes.map((c) => `<option${c === data.ng_class ? " selected" : ""}>${esc(c)}</option>`).join("");
    $("#ng-class").addEventListener("change", () => { location.search = "?ng=" + encodeURIComponent($("#ng-class").value); });
  }
  const all = data.good.concat(data.defect);
  const lo = data.range ? data.range[0] : Math.min(...all), hi = data.range ? data.range[1] : Math.max(...all);
  const s = $("#thr-slider"), v = $("#thr-value");
  s.min = lo; s.max = data.range ? hi : hi + (hi - lo) * 0.01; s.step = (hi - lo) / 1000; s.value = data.threshold;
  v.value = data.threshold;
  $("#saved").textContent = data.task === "classification" && data.saved == null ? "none (argmax)" : fmt(data.threshold);
  const bins = 30, w = (hi - lo) / bins || 1;
  const hist = (xs) => Array.from({length: bins}, (_, i) => [lo + (i + 0.5) * w, xs.filter((x) => Math.min(bins - 1, Math.floor((x - lo) / w)) === i).length]);
  let asked = 0;  // the latest slider position asked for; older answers are dropped
  async function show(t) {
    $("#hist").innerHTML = chart(`${data.score_name} histogram`, [{label: data.ok_class || "good", points: hist(data.good)}, {label: data.ng_class || "defect", points: hist(data.defect)}], {vline: t});
    // the counts come from the server, which decides NG with the deploy runtime's own function
    // (score >= threshold, within its tie band), so they are what the deployed model would do
    const n = ++asked;
    let r;
    try { r = (await getJSON(`${base}?${q}t=${encodeURIComponent(t)}`)).rates; } catch (e) { $("#save-msg").textContent = e.message; return; }
    if (n !== asked) return;
    const nd = r.defects, ng = r.goods;
    $("#escape").textContent = `${nd ? (100 * r.escapes / nd).toFixed(2) : "0.00"} % (${r.escapes} of ${nd})`;
    $("#overkill").textContent = `${ng ? (100 * r.overkills / ng).toFixed(2) : "0.00"} % (${r.overkills} of ${ng})`;
    $("#escape").dataset.count = r.escapes; $("#overkill").dataset.count = r.overkills;
  }
  s.addEventListener("input", () => { v.value = s.value; show(+s.value); });
  v.addEventListener("change", () => { s.value = v.value; show(+v.value); });
  $("#apply-target").addEventListener("click", async () => {
    try {
      const r = await getJSON(`${base}?${q}target_escape=${encodeURIComponent($("#target").value)}`);
      v.value = r.rates.threshold; s.value = r.rates.threshold; show(r.rates.threshold);
    } catch (e) { $("#save-msg").textContent = e.message; }
  });
  $("#save").addEventListener("click", async () => {
    try {
      const r = await getJSON(base, {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify({threshold: +v.value, ng_class: data.ng_class})});
      $("#save-msg").textContent = `saved ${fmt(r.image_threshold)} to ${r.saved} (previous kept as ${r.previous})`;
      $("#saved").textContent = fmt(r.image_threshold);
    } catch (e) { $("#save-msg").textContent = e.message; }
  });
  show(data.threshold);
}

// ---- Data ---------------------------------------------------------------------------------
function initData() {
  $("#data-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const out = $("#data-report"); out.textContent = "checking...";
    try {
      const r = await getJSON(`/api/data?root=${encodeURIComponent($("#data-root").value)}&task=${encodeURIComponent($("#data-task").value)}`);
      const f = r.files;
      const kv = (o) => Object.entries(o).map(([k, n]) => `<tr><td>${esc(k)}</td><td>${n}</td></tr>`).join("");
      out.innerHTML = `<h2>Files</h2><p>${f.images} images${f.truncated ? " (first ones only)" : ""}</p>
        <table class="grid"><tr><th>split / class</th><th>images</th></tr>${kv(f.groups)}</table>
        <h3>Sizes</h3><table class="grid">${kv(f.sizes)}</table><h3>Channels</h3><table class="grid">${kv(f.channels)}</table>
        <h2>Files that fail to decode</h2>${f.corrupt.length ? `<ul id="corrupt">${f.corrupt.map((c) => `<li>${esc(c)}</li>`).join("")}</ul>` : "<p id='corrupt'>none</p>"}
        <h2>Dataset checks (as training runs them)</h2><table class="grid" id="checks">${r.datasets.map((d) => `<tr><td>${esc(d.split)}</td><td class="${d.ok ? "" : "error"}">${d.ok ? `${d.samples} samples${d.classes && d.classes.length ? ", classes " + esc(d.classes.join(", ")) : ""}` : esc(d.message)}</td></tr>`).join("")}</table>
        ${r.drawn ? `<h2>Samples with their labels (${esc(r.drawn.split)} split, as the dataset reads them)</h2><div class="thumbs" id="drawn">${r.drawn.samples.map((s) => `<figure>${s.image ? `<img src="${s.image}" alt="">` : ""}<figcaption>${esc(s.caption)}</figcaption></figure>`).join("")}</div>` : ""}
        <h2>Raw files by folder</h2><div class="thumbs">${f.samples.map((s) => `<figure><img src="${esc(s.url)}" alt=""><figcaption>${esc(s.label)}</figcaption></figure>`).join("")}</div>`;
    } catch (e) { out.innerHTML = `<p class="error">${esc(e.message)}</p>`; }
  });
}

// ---- Predict ------------------------------------------------------------------------------
function initPredict() {
  async function send(files) {
    const out = $("#predict-out"); out.innerHTML = "";
    for (const file of files) {
      const fd = new FormData(); fd.append("run", $("#predict-run").value); fd.append("file", file);
      try {
        const r = await getJSON("/api/predict", {method: "POST", body: fd});
        out.insertAdjacentHTML("beforeend", `<figure class="prediction"><img src="${r.image}" alt="" style="max-width:320px">
          <figcaption>${esc(r.name)} · ${esc(r.backend)}</figcaption><pre class="result">${esc(JSON.stringify(r.result, null, 2))}</pre></figure>`);
      } catch (e) { out.insertAdjacentHTML("beforeend", `<p class="error">${esc(file.name)}: ${esc(e.message)}</p>`); }
    }
  }
  $("#predict-form").addEventListener("submit", (ev) => { ev.preventDefault(); send($("#predict-file").files); });
  const drop = $("#drop");
  drop.addEventListener("dragover", (ev) => ev.preventDefault());
  drop.addEventListener("drop", (ev) => { ev.preventDefault(); send(ev.dataTransfer.files); });
}

// ---- Launch -------------------------------------------------------------------------------
async function initLaunch() {
  let fields = [];
  async function loadForm() {
    $("#launch-fields").textContent = "loading...";
    try {
      const r = await getJSON(`/api/config-form?config=${encodeURIComponent($("#launch-config").value)}`);
      fields = r.fields;
      $("#launch-fields").innerHTML = fields.map((f, i) => `<label class="field" title="${esc(f.type)}">${esc(f.key)}
        <input data-i="${i}" name="${esc(f.key)}" value="${esc(f.value)}"></label>`).join("");
    } catch (e) { $("#launch-fields").innerHTML = `<p class="error">${esc(e.message)}</p>`; }
  }
  async function loadJobs() {
    const js = await getJSON("/api/jobs");
    $("#jobs tbody").innerHTML = js.map((j) => `<tr><td>${esc(j.id)}</td><td>${esc(j.config)}</td>
      <td class="job-state status-${esc(j.state)}">${esc(j.state)}</td><td>${esc(j.work_dir)}</td><td class="error">${esc(j.error)}</td>
      <td>${["queued", "running"].includes(j.state) ? `<button data-cancel="${esc(j.id)}">cancel</button>` : ""}</td></tr>`).join("");
  }
  $("#launch-config").addEventListener("change", loadForm);
  $("#jobs").addEventListener("click", async (ev) => {
    const id = ev.target.dataset.cancel;
    if (id) { await getJSON(`/api/jobs/${encodeURIComponent(id)}/cancel`, {method: "POST"}); loadJobs(); }
  });
  $("#launch-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const overrides = {};
    document.querySelectorAll("#launch-fields input").forEach((inp) => {
      const f = fields[+inp.dataset.i];
      if (inp.value !== f.value) overrides[f.key] = inp.value;
      if (f.key === "work_dir") overrides[f.key] = inp.value;
    });
    $("#launch-msg").textContent = "checking...";
    try {
      const j = await getJSON("/api/jobs", {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify({config: $("#launch-config").value, overrides})});
      $("#launch-msg").textContent = ""; loadJobs();
    } catch (e) { $("#launch-msg").textContent = e.message; }
  });
  if ($("#launch-config").value) loadForm();
  loadJobs(); setInterval(loadJobs, 2000);
}

const INITS = {runs: initRuns, run: initRun, compare: initCompare, threshold: initThreshold, data: initData, predict: initPredict, launch: initLaunch};
(INITS[document.body.dataset.page] || (() => {}))();
