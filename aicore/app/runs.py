"""Reading run folders: what the Runs table, a run's page and the compare view show.

A run is any folder under the runs root holding ``config.json`` (the resolved config every
mode writes). Progress and status come from ``train.log`` ("epoch N/M done" and iteration
lines), ``metrics.jsonl`` (one object per evaluation), ``checkpoints/`` and ``.lock`` (held by a
live training). Nothing here writes.
"""
from __future__ import annotations

import json
import os
import re
import socket
import time
from datetime import datetime
from pathlib import Path
from typing import Any

SKIP_DIRS = {"checkpoints", "tensorboard", "eval", "demo", "export", "export.failed",
             "export.partial", "demo.partial"}
_TS = re.compile(r"^(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2})")
_EPOCH_DONE = re.compile(r"epoch (\d+)/(\d+) done in ([\d.]+)s.*?(?:mean (.*))?$")
_ITER = re.compile(r"epoch (\d+)/(\d+) iter (\d+)/(\d+) (.*)$")
_ETA = re.compile(r"ETA ([^)]+)\)")
_PAIR = re.compile(r"([A-Za-z_][\w.]*)=([-+\d.eE]+|nan|inf)")
_DEFAULT_METRIC = {}


def default_metric(task: str) -> str | None:
    """The task trainer's main metric (what picks best.pth when train.best_metric is null)."""
    if task not in _DEFAULT_METRIC:
        from aicore.tasks.spec import find_task, task_names
        task_names()  # imports the built-in tasks
        spec = find_task(task)
        _DEFAULT_METRIC[task] = getattr(spec.trainer, "default_metric", None) if spec else None
    return _DEFAULT_METRIC[task]


def find_runs(root: Path) -> list[Path]:
    """Every folder under root (root included) with a config.json, sorted."""
    found = []
    if not root.is_dir():
        return found
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.startswith("."))
        if "config.json" in filenames:
            found.append(Path(dirpath))
    return found


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def read_metrics(run: Path) -> list[dict[str, Any]]:
    rows = []
    try:
        text = (run / "metrics.jsonl").read_text(encoding="utf-8")
    except OSError:
        return rows
    for line in text.splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue  # a line being written right now
    return rows


def _stamp(line: str) -> float | None:
    m = _TS.match(line)
    if not m:
        return None
    return datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S").timestamp()


def parse_log(run: Path) -> dict[str, Any]:
    """Epoch-end and iteration lines of train.log: progress, losses, timing."""
    out: dict[str, Any] = {"epochs": [], "last_iter": None, "start": None, "last": None,
                           "errors": []}
    try:
        lines = (run / "train.log").read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return out
    for line in lines:
        ts = _stamp(line)
        if ts is not None:
            out["start"] = out["start"] or ts
            out["last"] = ts
        if "| ERROR" in line or "| CRITICAL" in line:
            out["errors"].append(line)
        m = _EPOCH_DONE.search(line)
        if m:
            losses = {k: float(v) for k, v in _PAIR.findall(m.group(4) or "")}
            out["epochs"].append({"epoch": int(m.group(1)), "total": int(m.group(2)),
                                  "seconds": float(m.group(3)), "losses": losses})
            out["last_iter"] = None
            continue
        m = _ITER.search(line)
        if m:
            values = {k: float(v) for k, v in _PAIR.findall(m.group(5))}
            out["last_iter"] = {"epoch": int(m.group(1)), "total": int(m.group(2)),
                                "iter": int(m.group(3)), "iters": int(m.group(4)),
                                "values": values, "time": ts,
                                "eta": (_ETA.search(m.group(5)) or [None, None])[1]}
    return out


def lock_alive(run: Path) -> bool:
    info = read_json(run / ".lock")
    if not isinstance(info, dict):
        return False
    if info.get("host") != socket.gethostname():
        return True  # cannot check another host: trust it
    try:
        os.kill(int(info["pid"]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, KeyError, TypeError, ValueError):
        return True
    return True


def status_of(run: Path, log: dict, total: int | None, job_state: str | None) -> str:
    """running / finished / failed / interrupted (queued while the app's queue holds it)."""
    if job_state in ("queued", "running"):
        return job_state
    if lock_alive(run):
        return "running"
    done = log["epochs"][-1]["epoch"] if log["epochs"] else 0
    if total and done >= total:
        return "finished"
    if job_state == "failed" or log["errors"]:
        return "failed"
    if (run / ".lock").exists() or done or log["last"]:
        return "interrupted"
    return "finished" if (run / "eval" / "metrics.json").exists() else "interrupted"


def best_of(metrics: list[dict], name: str | None, mode: str = "max") -> dict | None:
    rows = [r for r in metrics if isinstance(r.get(name), (int, float))]
    if not rows:
        return None
    pick = (min if mode == "min" else max)(rows, key=lambda r: r[name])
    return {"name": name, "value": pick[name], "epoch": pick.get("epoch"),
            "weights": pick.get("weights")}


def summary(root: Path, run: Path, job_state: str | None = None) -> dict[str, Any]:
    cfg = read_json(run / "config.json") or {}
    train = cfg.get("train") or {}
    total = train.get("epochs")
    log = parse_log(run)
    metrics = read_metrics(run)
    metric = train.get("best_metric") or default_metric(cfg.get("task", ""))
    best = best_of(metrics, metric, train.get("best_mode") or "max")
    if best is None:  # eval-only run: the eval metrics
        ev = read_json(run / "eval" / "metrics.json") or {}
        if isinstance(ev.get(metric), (int, float)):
            best = {"name": metric, "value": ev[metric], "epoch": None, "weights": "eval"}
    status = status_of(run, log, total, job_state)
    start = log["start"] or _mtime(run / "config.json")
    end = time.time() if status == "running" else (log["last"] or start)
    done = log["epochs"][-1]["epoch"] if log["epochs"] else \
        max([r.get("epoch", 0) for r in metrics] or [0])
    rel = run.relative_to(root).as_posix() if run != root else "."
    model = cfg.get("model") or {}
    return {"id": rel, "task": cfg.get("task"), "model": _model_name(model),
            "data_root": (cfg.get("data") or {}).get("root"), "epochs_done": done,
            "epochs_total": total, "best": best, "status": status,
            "start": start, "duration": (end - start) if start else None,
            "has_eval": (run / "eval" / "metrics.json").exists(),
            "has_export": (run / "export" / "manifest.json").exists()}


def _model_name(model: dict) -> str:
    name = model.get("type", "?")
    inner = model.get("name") or model.get("backbone") or model.get("encoder_name")
    return f"{name} ({inner})" if inner else name


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def progress(run: Path) -> dict[str, Any]:
    """Live progress: epoch, iteration, last losses, ETA from the epoch times so far."""
    cfg = read_json(run / "config.json") or {}
    total = (cfg.get("train") or {}).get("epochs")
    log = parse_log(run)
    epochs = log["epochs"]
    done = epochs[-1]["epoch"] if epochs else 0
    it = log["last_iter"]
    per_epoch = sum(e["seconds"] for e in epochs) / len(epochs) if epochs else None
    eta = None
    if per_epoch and total:
        frac = (it["iter"] / it["iters"]) if it and it["iters"] else 0.0
        eta = max(0.0, (total - done - frac) * per_epoch)
    loss = (it or {}).get("values") or (epochs[-1]["losses"] if epochs else {})
    return {"epoch": done, "epochs": total, "iter": it["iter"] if it else None,
            "iters": it["iters"] if it else None, "loss": loss, "eta_s": eta,
            "eta_text": it.get("eta") if it else None,
            "running": lock_alive(run), "log_tail": tail(run / "train.log", 15)}


def tail(path: Path, n: int) -> list[str]:
    try:
        return path.read_text(encoding="utf-8", errors="replace").splitlines()[-n:]
    except OSError:
        return []


def curves(run: Path) -> dict[str, list[list[float]]]:
    """name -> [[epoch, value], ...]: every scalar metric per weights, and epoch mean losses."""
    series: dict[str, list[list[float]]] = {}
    for row in read_metrics(run):
        w = row.get("weights", "model")
        for k, v in row.items():
            if k not in ("epoch", "weights") and isinstance(v, (int, float)) \
                    and not isinstance(v, bool):
                series.setdefault(f"{k} [{w}]", []).append([row.get("epoch", 0), v])
    for e in parse_log(run)["epochs"]:
        for k, v in e["losses"].items():
            series.setdefault(f"train {k}", []).append([e["epoch"], v])
    return series


def checkpoints(run: Path) -> list[dict[str, Any]]:
    folder = run / "checkpoints"
    if not folder.is_dir():
        return []
    return [{"name": p.name, "bytes": p.stat().st_size, "modified": p.stat().st_mtime}
            for p in sorted(folder.glob("*.pth"))]


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: d}


def config_diff(runs: list[Path]) -> list[dict[str, Any]]:
    """Keys whose values differ between the runs' resolved configs: [{key, values: [...]}]."""
    flats = [flatten(read_json(r / "config.json") or {}) for r in runs]
    keys = sorted(set().union(*flats)) if flats else []
    rows = []
    for k in keys:
        values = [f.get(k, "(absent)") for f in flats]
        if any(json.dumps(v, sort_keys=True) != json.dumps(values[0], sort_keys=True)
               for v in values[1:]):
            rows.append({"key": k, "values": values})
    return rows
