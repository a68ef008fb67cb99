"""The OK/NG operating point of an anomaly run, from its eval/predictions.csv.

Escape: a defective part called OK (score < threshold). Overkill: a good part called NG
(score >= threshold), the rule the trainer, demo, export and deploy runtime all use. Saving
writes eval/threshold.json, the file demo and export read while its checkpoint fingerprint
matches; the previous file is kept as eval/threshold.<UTC time>.json.
"""
from __future__ import annotations

import csv
import json
import math
import os
import time
from pathlib import Path
from typing import Any


class ThresholdError(ValueError):
    pass


def load_scores(run: Path) -> dict[str, Any]:
    path = run / "eval" / "predictions.csv"
    if not path.is_file():
        raise ThresholdError(f"{path} not found: run -o mode=eval for this run first")
    good, defect = [], []
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        reader = csv.DictReader(f)
        if not {"label", "score"} <= set(reader.fieldnames or []):
            raise ThresholdError(f"{path}: no 'label' and 'score' columns; only anomaly eval "
                                 f"predictions can be tuned here")
        for row in reader:
            score = float(row["score"])
            (good if row["label"] == "good" else defect).append(score)
    saved = current(run)
    return {"good": good, "defect": defect, "threshold": saved.get("image_threshold"),
            "checkpoint": saved.get("checkpoint")}


def current(run: Path) -> dict[str, Any]:
    try:
        return json.loads((run / "eval" / "threshold.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def rates(good: list[float], defect: list[float], threshold: float) -> dict[str, Any]:
    escapes = sum(1 for s in defect if s < threshold)
    overkills = sum(1 for s in good if s >= threshold)
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


def save(run: Path, threshold: float) -> dict[str, Any]:
    """Write eval/threshold.json with the new image threshold; keep the old file beside it."""
    if not math.isfinite(threshold):
        raise ThresholdError(f"threshold {threshold}: give a finite number")
    path = run / "eval" / "threshold.json"
    old = current(run)
    if not old:
        raise ThresholdError(f"{path} not found or unreadable: run -o mode=eval for this run "
                             f"first (it records which checkpoint the threshold belongs to)")
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    backup = path.with_name(f"threshold.{stamp}.json")
    n = 1
    while backup.exists():
        backup = path.with_name(f"threshold.{stamp}-{n}.json")
        n += 1
    backup.write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    new = {**old, "image_threshold": float(threshold), "set_by": "aicore app",
           "previous": backup.name}
    tmp = path.with_name(f".threshold.json.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(new, indent=2), encoding="utf-8")
    tmp.replace(path)
    return {"saved": str(path), "previous": backup.name, "image_threshold": float(threshold)}
