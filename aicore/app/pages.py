"""Server-rendered HTML. Every page shares one layout; the interactive parts (sorting, live
progress, curves, the threshold slider, upload, the launch form) are plain JavaScript in
static/app.js reading the JSON API. Every value from disk is escaped."""
from __future__ import annotations

import csv
import json
from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import quote

NAV = [("/", "Runs"), ("/data", "Data"), ("/predict", "Predict"), ("/launch", "Launch")]


def layout(title: str, body: str, page: str, data: dict[str, Any] | None = None) -> str:
    nav = " ".join(f'<a href="{href}">{name}</a>' for href, name in NAV)
    payload = escape(json.dumps(data or {}), quote=True)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{escape(title)} - AICore</title>
<link rel="stylesheet" href="/static/style.css"></head>
<body data-page="{page}" data-init="{payload}">
<header><b>AICore</b> {nav}</header>
<main><h1>{escape(title)}</h1>
{body}
</main><script src="/static/app.js"></script></body></html>"""


def file_url(kind: str, rel: str) -> str:
    return f"/files/{kind}/{quote(rel)}"


def runs_page() -> str:
    body = """<p><input id="filter" placeholder="filter (task, model, status, ...)">
<button id="compare">Compare selected</button></p>
<table id="runs" class="grid"><thead><tr><th></th>
<th data-key="id">run</th><th data-key="task">task</th><th data-key="model">model</th>
<th data-key="data_root">data root</th><th data-key="epochs_done">epochs</th>
<th data-key="best">best metric</th><th data-key="status">status</th>
<th data-key="start">start</th><th data-key="duration">duration</th></tr></thead>
<tbody></tbody></table>"""
    return layout("Runs", body, "runs")


def table(rows: list[list[Any]], head: list[str], cls: str = "grid") -> str:
    h = "".join(f"<th>{escape(str(c))}</th>" for c in head)
    b = "".join("<tr>" + "".join(f"<td>{_cell(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{h}</tr></thead><tbody>{b}</tbody></table>'


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return escape(str(v))


def run_page(run_id: str, summary: dict, config: dict, ckpts: list[dict]) -> str:
    rid = escape(run_id)
    links = [f'<a href="/run/{quote(run_id)}/report">eval report</a>'] if summary["has_eval"] \
        else ["no eval report yet (run -o mode=eval)"]
    if summary.get("tunable"):
        links.append(f'<a href="/run/{quote(run_id)}/threshold">threshold tuning</a>')
    ck = table([[c["name"], f'{c["bytes"] / 1e6:.1f} MB'] for c in ckpts],
               ["checkpoint", "size"]) if ckpts else "<p>no checkpoints</p>"
    body = f"""<p>{' | '.join(links)}</p>
<section><h2>Progress</h2><div id="progress">loading...</div><pre id="logtail"></pre></section>
<section><h2>Curves</h2><div id="curves" class="curves"></div></section>
<section><h2>Checkpoints</h2>{ck}</section>
<section><h2>Resolved config</h2><pre id="config">{escape(json.dumps(config, indent=2))}</pre>
</section>"""
    return layout(f"Run {run_id}", body, "run", {"run": run_id, "summary": summary})


def compare_page(ids: list[str], diff: list[dict]) -> str:
    rows = [[d["key"], *[json.dumps(v) for v in d["values"]]] for d in diff]
    body = f"""<section><h2>Curves</h2><div id="curves" class="curves"></div></section>
<section><h2>Config differences</h2>{table(rows, ["key", *ids]) if rows else
    "<p>the resolved configs are identical</p>"}</section>"""
    return layout("Compare " + " vs ".join(ids), body, "compare", {"runs": ids})


def _csv_table(path: Path, limit: int = 30) -> str:
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        rows = list(csv.reader(f))
    if not rows:
        return ""
    more = f"<p>{len(rows) - 1 - limit} more rows in {escape(path.name)}</p>" \
        if len(rows) - 1 > limit else ""
    return table(rows[1:limit + 1], rows[0]) + more


# the eval files each task's report shows first, with their section titles
TASK_PLOTS = {
    "classification": [("Confusion matrix", ["confusion_matrix.png"])],
    "segmentation": [("Per-class IoU", ["per_class_iou.png"]),
                     ("Pixel confusion matrix", ["confusion_matrix.png"])],
    "detection": [("Per-class AP", ["per_class_ap.png"]),
                  ("Precision-recall curves", ["pr_curves.png"])],
    "anomaly": [("Score histogram", ["score_histogram.png"]),
                ("ROC and PRO", ["roc_curve.png", "pro_curve.png"])],
}


def _figure(url: str, caption: str) -> str:
    return f'<figure><img src="{escape(url)}" alt=""><figcaption>{escape(caption)}' \
        f'</figcaption></figure>'


def report_page(run_id: str, run: Path, metrics: dict, thumb_url, task: str = "",
                gallery: dict[str, list] | None = None, tunable: bool = False) -> str:
    ev = run / "eval"
    gallery = gallery or {}
    url = lambda p: file_url("runs", _rel(p, run, run_id))  # noqa: E731
    scalars = [[k, v] for k, v in metrics.items() if isinstance(v, (int, float))]
    links = f'<p><a href="/run/{quote(run_id)}">run</a>' + (
        f' | <a href="/run/{quote(run_id)}/threshold">threshold tuning</a>' if tunable
        else "") + "</p>"
    parts = [links, f'<section><h2>Metrics</h2>{table(scalars, ["metric", "value"])}</section>']
    if gallery.get("error"):
        parts.append(f'<p class="error">{escape(gallery["error"])}</p>')
    shown: set[Path] = set()
    for title, names in TASK_PLOTS.get(task, []):
        files = [ev / n for n in names if (ev / n).is_file()]
        if files:
            shown.update(files)
            parts.append(f'<section class="task-plot"><h2>{escape(title)}</h2><div class="plots">'
                         + "".join(_figure(url(f), f.name) for f in files) + "</div></section>")
    per_class = metrics.get("per_class")
    if isinstance(per_class, dict) and per_class:
        cols = sorted({k for v in per_class.values() if isinstance(v, dict) for k in v})
        rows = [[name, *[(v or {}).get(c, "") for c in cols]] for name, v in per_class.items()]
        parts.append(f'<section id="per-class"><h2>Per class</h2>{table(rows, ["class", *cols])}'
                     f'</section>')
    wrong = ev / "wrong.csv"
    if wrong.is_file():
        with open(wrong, newline="", encoding="utf-8", errors="replace") as f:
            rows = list(csv.DictReader(f))[:24]
        cards = []
        for r in rows:
            u = thumb_url(r.get("path", ""))
            img = f'<img src="{escape(u)}" alt="">' if u else "<i>outside the data root</i>"
            cards.append(f'<figure>{img}<figcaption>true {escape(r.get("true", ""))}, '
                         f'predicted {escape(r.get("predicted", ""))} '
                         f'({escape(r.get("probability", ""))})</figcaption></figure>')
        parts.append('<section id="mistakes"><h2>Most confident mistakes</h2><div class="thumbs">'
                     + ("".join(cards) or "<p>no mistakes</p>") + "</div></section>")
    if "segmentation" in gallery:
        cards = "".join(
            f'<figure class="pair"><img src="{g["truth"]}" alt=""><img src="{g["prediction"]}" '
            f'alt=""><figcaption>{escape(g["name"])}: mIoU {escape(g["mIoU"])} (left: ground '
            f'truth, right: prediction, {escape(g["backend"])})</figcaption></figure>'
            for g in gallery["segmentation"])
        parts.append('<section id="overlays"><h2>Overlays of the lowest-mIoU images</h2>'
                     f'<div class="thumbs">{cards or "<p>no images inside the roots</p>"}'
                     '</div></section>')
    if "detection" in gallery:
        cards = "".join(
            f'<figure><img src="{g["image"]}" alt=""><figcaption>{escape(g["name"])}: '
            f'{g["detections"]} detections (score &ge; 0.3), {g["gt"]} ground-truth boxes (white)'
            f'</figcaption></figure>' for g in gallery["detection"])
        parts.append('<section id="boxes"><h2>Images with their detections</h2>'
                     f'<div class="thumbs">{cards or "<p>no images inside the roots</p>"}'
                     '</div></section>')
    heat = sorted((ev / "heatmaps").glob("*.png")) if (ev / "heatmaps").is_dir() else []
    if heat:
        shown.update(heat)
        parts.append('<section id="heatmaps"><h2>Heat maps (mistakes first)</h2>'
                     '<div class="thumbs">' + "".join(_figure(url(p), p.stem) for p in heat)
                     + "</div></section>")
    images = sorted(p for p in ev.rglob("*") if p.suffix.lower() in (".png", ".jpg")
                    and p not in shown)[:60]
    if images:
        figs = "".join(_figure(url(p), p.relative_to(ev).as_posix()) for p in images)
        parts.append(f'<section><h2>Other plots and images</h2><div class="plots">{figs}</div>'
                     f'</section>')
    for p in sorted(ev.glob("*.csv")):
        if p.name != "wrong.csv":
            parts.append(f"<section><h2>{escape(p.name)}</h2>{_csv_table(p)}</section>")
    return layout(f"Eval report {run_id}", "\n".join(parts), "report", {"run": run_id})


def _rel(p: Path, run: Path, run_id: str) -> str:
    rel = p.relative_to(run).as_posix()
    return rel if run_id == "." else f"{run_id}/{rel}"


def threshold_page(run_id: str) -> str:
    body = """<p id="ng-row" hidden>NG class <select id="ng-class"></select>
(escape: a true NG image with P(NG) below the threshold)</p>
<p>Threshold on <b id="score-name">score</b> <input id="thr-slider" type="range" step="any">
<input id="thr-value" type="number" step="any"></p>
<p>Target escape rate <input id="target" type="number" min="0" max="1" step="0.01" value="0">
<button id="apply-target">Set threshold</button></p>
<table class="grid"><tr><th>escape rate (NG parts called OK)</th><td id="escape"></td></tr>
<tr><th>overkill rate (OK parts called NG)</th><td id="overkill"></td></tr>
<tr><th>saved threshold (eval/threshold.json)</th><td id="saved"></td></tr></table>
<p><button id="save">Save to eval/threshold.json</button> <span id="save-msg"></span></p>
<div id="hist" class="curves"></div>"""
    return layout(f"Threshold {run_id}", body, "threshold", {"run": run_id})


def data_page(roots: list[str]) -> str:
    opts = "".join(f"<option>{escape(r)}</option>" for r in roots)
    tasks = "".join(f"<option>{t}</option>" for t in
                    ("classification", "segmentation", "detection", "anomaly"))
    body = f"""<form id="data-form">dataset <select id="data-root">{opts}</select>
task <select id="data-task">{tasks}</select> <button>Check</button></form>
<div id="data-report"></div>"""
    return layout("Data", body, "data")


def predict_page(runs: list[str]) -> str:
    opts = "".join(f"<option>{escape(r)}</option>" for r in runs)
    body = f"""<form id="predict-form">run <select id="predict-run">{opts}</select>
<input id="predict-file" type="file" accept="image/*" multiple>
<button>Predict</button></form>
<div id="drop" class="drop">or drop images here</div><div id="predict-out"></div>"""
    return layout("Predict", body, "predict")


def launch_page(configs: list[str]) -> str:
    opts = "".join(f"<option>{escape(c)}</option>" for c in configs)
    body = f"""<form id="launch-form">config <select id="launch-config">{opts}</select>
<div id="launch-fields"></div><button id="launch-start">Start</button>
<span id="launch-msg" class="error"></span></form>
<section><h2>Jobs</h2><table id="jobs" class="grid"><thead><tr><th>job</th><th>config</th>
<th>state</th><th>work_dir</th><th>error</th><th></th></tr></thead><tbody></tbody></table>
</section>"""
    return layout("Launch", body, "launch")
