"""The OK/NG operating point of an anomaly run or a two-class (OK/NG) classification run,
from its eval/predictions.csv.

Anomaly: the score is the image anomaly score. Classification: the score is P(NG), computed
from the two-class softmax in predictions.csv (true_probability of the true class). Escape: an
NG part called OK. Overkill: an OK part called NG. NG is decided by the deploy runtime's own
function (`verdict_rule`): score >= threshold, for anomaly with the runtime's tie band (a score
within 1e-5 * max(1, |threshold|) below it counts as equal), the rule the trainer, demo, export
and deploy runtime all use; the page's live counts come from here too. Saving writes
eval/threshold.json, the file demo and export read while its checkpoint fingerprint matches;
the previous file is kept as eval/threshold.<UTC time>.json.
"""
from __future__ import annotations

import csv
import json
import math
import time
from pathlib import Path
from typing import Any

from aicore.data.io import write_text_atomic


class ThresholdError(ValueError):
    pass


def load_scores(run: Path, ng_class: str | None = None) -> dict[str, Any]:
    path = run / "eval" / "predictions.csv"
    if not path.is_file():
        raise ThresholdError(f"{path} not found: run -o mode=eval for this run first")
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        reader = csv.DictReader(f)
        fields = set(reader.fieldnames or [])
        rows = list(reader)
    if {"true", "true_probability"} <= fields:
        return _classification_scores(run, path, rows, ng_class)
    if not {"label", "score"} <= fields:
        raise ThresholdError(f"{path}: no 'label' and 'score' columns; only anomaly and "
                             f"two-class classification eval predictions can be tuned here")
    good, defect = [], []
    for row in rows:
        score = float(row["score"])
        (good if row["label"] == "good" else defect).append(score)
    saved = current(run)
    return {"task": "anomaly", "score_name": "anomaly score", "good": good, "defect": defect,
            "threshold": saved.get("image_threshold"), "checkpoint": saved.get("checkpoint"),
            "range": None}


def classes_of(run: Path) -> list[str]:
    """The run's class names in model order: eval/metrics.json per_class keys (written in
    class order)."""
    ev = _read(run / "eval" / "metrics.json")
    per_class = ev.get("per_class") if isinstance(ev, dict) else None
    return list(per_class) if isinstance(per_class, dict) else []


def _classification_scores(run: Path, path: Path, rows: list[dict], ng_class: str | None
                           ) -> dict[str, Any]:
    from aicore.tasks.classification.threshold import infer_ng_class
    classes = classes_of(run)
    if len(classes) != 2:
        raise ThresholdError(f"{run / 'eval' / 'metrics.json'}: this run has {len(classes)} "
                             f"classes; OK/NG threshold tuning needs exactly two")
    saved = current(run)
    saved = saved if saved.get("task") == "classification" else {}
    ng = ng_class or saved.get("ng_class") or infer_ng_class(classes)
    if ng is None:
        raise ThresholdError(f"cannot tell which of {classes} is the NG class (neither is "
                             f"called good/ok/pass/normal): choose it with ?ng=CLASS")
    if ng not in classes:
        raise ThresholdError(f"ng={ng!r}: use one of the run's classes {classes}")
    good, defect = [], []
    for row in rows:
        try:
            pt = float(row["true_probability"])
        except ValueError:
            raise ThresholdError(f"{path}: true_probability {row['true_probability']!r} is not "
                                 f"a number") from None
        p_ng = pt if row["true"] == ng else 1.0 - pt
        (defect if row["true"] == ng else good).append(p_ng)
    thr = saved.get("ng_threshold") if saved.get("ng_class") == ng else None
    return {"task": "classification", "score_name": f"P({ng})", "classes": classes,
            "ng_class": ng, "ok_class": next(c for c in classes if c != ng), "good": good,
            "defect": defect, "threshold": 0.5 if thr is None else thr,
            "saved": thr, "checkpoint": saved.get("checkpoint"), "range": [0.0, 1.0]}


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def current(run: Path) -> dict[str, Any]:
    saved = _read(run / "eval" / "threshold.json")
    return saved if isinstance(saved, dict) else {}


def verdict_rule(task: str):
    """The NG rule ``(score, threshold) -> bool`` the deployed model applies, imported rather
    than restated. Anomaly: the deploy runtime's ``is_defect`` (NG when score >= threshold,
    scores within its relative tie band SCORE_RTOL below the threshold counting as equal, as
    the trainer's eval report and demo do). Two-class classification: ``is_ng`` (NG when
    P(NG) >= threshold), the rule demo applies and the runtime's manifest entry states."""
    if task == "classification":
        from aicore.tasks.classification.threshold import is_ng
        return is_ng
    from aicore.deploy.postprocess import is_defect
    return is_defect


def rates(good: list[float], defect: list[float], threshold: float,
          task: str = "anomaly") -> dict[str, Any]:
    """Escapes (NG parts the rule calls OK) and overkills (OK parts it calls NG) at
    `threshold`, decided by `verdict_rule(task)`, so they are what deploy would decide."""
    is_ng = verdict_rule(task)
    escapes = sum(1 for s in defect if not is_ng(s, threshold))
    overkills = sum(1 for s in good if is_ng(s, threshold))
    return {"threshold": threshold, "escapes": escapes, "defects": len(defect),
            "escape_rate": escapes / len(defect) if defect else 0.0,
            "overkills": overkills, "goods": len(good),
            "overkill_rate": overkills / len(good) if good else 0.0}


def for_escape_rate(defect: list[float], target: float) -> float:
    """The highest threshold (fewest overkills) whose escape rate is at most `target`."""
    if not defect:
        raise ThresholdError("the eval predictions hold no defective images")
    if not 0.0 <= target <= 1.0 or math.isnan(target):
        raise ThresholdError(f"target escape rate {target}: give a fraction from 0 to 1")
    d = sorted(defect)
    k = int(math.floor(target * len(d) + 1e-9))  # misses allowed
    if k >= len(d):
        return math.nextafter(d[-1], math.inf)  # every defect may escape
    return d[k]


def save(run: Path, threshold: float, ng_class: str | None = None) -> dict[str, Any]:
    """Write eval/threshold.json with the new threshold; keep the old file beside it."""
    if not math.isfinite(threshold):
        raise ThresholdError(f"threshold {threshold}: give a finite number")
    data = load_scores(run, ng_class)
    path = run / "eval" / "threshold.json"
    old = current(run)
    if data["task"] == "classification":
        if not 0.0 <= threshold <= 1.0:
            raise ThresholdError(f"threshold {threshold}: P({data['ng_class']}) thresholds lie "
                                 f"in [0, 1]")
        ckpt = eval_checkpoint(run)
        if not ckpt.is_file():
            raise ThresholdError(f"{ckpt} not found: the threshold is tied to the checkpoint "
                                 f"eval used; train or set eval.checkpoint first")
        from aicore.tasks.classification.threshold import RULE, fingerprint
        new = {"task": "classification", "ng_class": data["ng_class"],
               "ok_class": data["ok_class"], "ng_threshold": float(threshold),
               "checkpoint": str(ckpt), "checkpoint_fingerprint": fingerprint(ckpt),
               "rule": RULE, "set_by": "aicore app"}
    else:
        if not old:
            raise ThresholdError(f"{path} not found or unreadable: run -o mode=eval for this "
                                 f"run first (it records which checkpoint the threshold "
                                 f"belongs to)")
        new = {**old, "image_threshold": float(threshold), "set_by": "aicore app"}
    backup = None
    if path.exists():
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        backup = path.with_name(f"threshold.{stamp}.json")
        n = 1
        while backup.exists():
            backup = path.with_name(f"threshold.{stamp}-{n}.json")
            n += 1
        backup.write_bytes(path.read_bytes())
    new["previous"] = backup.name if backup else None
    write_text_atomic(path, json.dumps(new, indent=2))
    return {"saved": str(path), "previous": new["previous"], "image_threshold": float(threshold),
            "task": data["task"], "ng_class": data.get("ng_class")}


def eval_checkpoint(run: Path) -> Path:
    """The checkpoint mode=eval loaded: eval.checkpoint, else <run>/checkpoints/best.pth."""
    cfg = _read(run / "config.json") or {}
    given = (cfg.get("eval") or {}).get("checkpoint")
    return Path(given) if given else run / "checkpoints" / "best.pth"
