"""The OK/NG operating point of a two-class classifier.

A two-class run whose classes are an OK class and an NG class can be given a decision
threshold on P(NG) instead of the argmax (which is the threshold 0.5). It lives in
``eval/threshold.json`` (written by the app's Threshold page)::

    {"task": "classification", "ng_class": "defect", "ok_class": "good",
     "ng_threshold": 0.3, "checkpoint": ".../best.pth", "checkpoint_fingerprint": "...",
     "rule": "NG when P(ng_class) >= ng_threshold"}

``mode=demo`` and ``mode=export`` read it while the fingerprint matches the checkpoint they
load (like the anomaly threshold); export writes it into the manifest, where the deploy
runtime applies it. The NG class is the one named in the file; the app proposes the class
that is not called good/ok/pass/normal.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from loguru import logger

from aicore.errors import DataError

OK_NAMES = ("good", "ok", "okay", "pass", "normal", "accept", "accepted", "no_defect")
RULE = "NG when P(ng_class) >= ng_threshold, else the OK class"


def fingerprint(path: Path) -> str:
    """The same identity of a checkpoint file the anomaly threshold uses (size, mtime)."""
    st = Path(path).stat()
    return f"{st.st_size}-{st.st_mtime_ns}"


def infer_ng_class(classes: Sequence[str]) -> str | None:
    """For two classes of which exactly one is an OK name: the other one; else None."""
    if len(classes) != 2:
        return None
    ok = [c for c in classes if str(c).strip().lower() in OK_NAMES]
    if len(ok) != 1:
        return None
    return next(c for c in classes if c != ok[0])


def is_ng(p_ng: float, threshold: float) -> bool:
    return float(p_ng) >= float(threshold)


def load(path: Path, classes: Sequence[str], checkpoint: Path) -> dict[str, Any] | None:
    """{"ng_index", "ok_index", "ng_threshold", "source"} from a classification threshold.json
    that belongs to `checkpoint`; None when there is none, it is an anomaly file, or it was
    saved for another checkpoint (a warning says so). A file that is unreadable or names a
    class the model does not have is a DataError naming the file and the fix."""
    if not path.is_file():
        return None
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read the threshold ({type(e).__name__}: {e}); fix the "
                        f"JSON or delete the file") from None
    if not isinstance(saved, dict) or saved.get("task") != "classification":
        return None
    names = list(classes)
    ng = saved.get("ng_class")
    if len(names) != 2 or ng not in names:
        raise DataError(f"{path}: ng_class {ng!r} is not one of the model's two classes {names}; "
                        f"save the threshold again from the app or delete the file")
    try:
        thr = float(saved["ng_threshold"])
    except (KeyError, TypeError, ValueError):
        raise DataError(f"{path}: ng_threshold must be a number; save the threshold again from "
                        f"the app or delete the file") from None
    if not 0.0 <= thr <= 1.0:
        raise DataError(f"{path}: ng_threshold {thr} must lie in [0, 1] (it is a probability)")
    try:
        same = checkpoint.is_file() and saved.get("checkpoint_fingerprint") == \
            fingerprint(checkpoint)
    except OSError:
        same = False
    if not same:
        logger.warning(f"{path} was saved for another checkpoint than {checkpoint}; using the "
                       f"argmax (save the threshold again for this checkpoint)")
        return None
    k = names.index(ng)
    logger.info(f"OK/NG threshold P({ng}) >= {thr:.5g} from {path}")
    return {"ng_index": k, "ok_index": 1 - k, "ng_threshold": thr, "source": str(path)}


def decide(probs: Sequence[float], cal: dict[str, Any] | None) -> int:
    """The class index: the argmax, or with a threshold NG when P(NG) >= it."""
    if cal is None:
        return max(range(len(probs)), key=lambda i: (probs[i], -i))
    return cal["ng_index"] if is_ng(probs[cal["ng_index"]], cal["ng_threshold"]) \
        else cal["ok_index"]


def manifest_entry(cal: dict[str, Any] | None, classes: Sequence[str]) -> dict[str, Any]:
    """What export writes into postprocess: the runtime applies it when present."""
    if cal is None:
        return {}
    return {"ng_class": list(classes)[cal["ng_index"]], "ng_class_id": cal["ng_index"],
            "ng_threshold": cal["ng_threshold"], "threshold_rule": RULE,
            "threshold_source": cal["source"]}
