"""Images the app draws itself: dataset samples with their labels, masks or boxes (Data page)
and the report's per-task galleries (segmentation: ground truth vs prediction on the worst
images; detection: the eval detections on their images).

Everything is returned as PNG data URLs, drawn with the task packages' own drawing code, from
files that lie inside the app's roots (paths recorded in CSVs are checked first).
"""
from __future__ import annotations

import base64
import csv
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

from aicore.data.io import imread

MAX_SIDE = 256


def data_url(rgb: np.ndarray, max_side: int = MAX_SIDE) -> str:
    h, w = rgb.shape[:2]
    if max(h, w) > max_side:
        f = max_side / max(h, w)
        rgb = cv2.resize(rgb, (max(1, round(w * f)), max(1, round(h * f))),
                         interpolation=cv2.INTER_AREA)
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR) if rgb.ndim == 3 else rgb
    ok, png = cv2.imencode(".png", bgr)
    return "data:image/png;base64," + base64.b64encode(png.tobytes()).decode()


def rgb8(path: str | Path) -> np.ndarray:
    img = imread(path, 3)
    if img.dtype != np.uint8:  # 16-bit files: [0, 1] floats
        img = (img.clip(0, 1) * 255).astype(np.uint8)
    return img


def _spread(n: int, limit: int) -> list[int]:
    """Up to `limit` indices spread evenly over range(n)."""
    if n <= limit:
        return list(range(n))
    return sorted({int(round(k * (n - 1) / (limit - 1))) for k in range(limit)})


def draw_sample(task: str, dataset, i: int) -> tuple[np.ndarray, str]:
    """(drawn RGB image, caption) of sample i with its ground truth."""
    classes = list(getattr(dataset, "classes", []) or [])
    if task == "classification":
        from aicore.tasks.classification.visualize import draw_label
        path, k = dataset.samples[i]
        name = classes[k] if k < len(classes) else str(k)
        return draw_label(rgb8(path), name), f"{Path(path).name}: {name}"
    if task == "segmentation":
        from aicore.tasks.segmentation.datasets import read_mask
        from aicore.tasks.segmentation.visualize import overlay
        path, mask_path = dataset.samples[i]
        mask = read_mask(mask_path)
        present = [classes[c] for c in np.unique(mask) if 0 < c < len(classes)]
        return overlay(rgb8(path), mask, classes), \
            f"{Path(path).name}: {', '.join(present) or 'background only'}"
    if task == "detection":
        from aicore.tasks.detection.visualize import draw_detections
        rec = dataset.records[i]
        drawn = draw_detections(rgb8(rec.path), rec.boxes, None, rec.labels, classes)
        return drawn, f"{Path(rec.path).name}: {len(rec.boxes)} boxes"
    if task == "anomaly":
        path, mask_path, defect = dataset.samples[i]
        img = rgb8(path)
        if mask_path:
            from aicore.tasks.anomaly.datasets import read_mask
            mask = read_mask(mask_path)
            if mask.shape != img.shape[:2]:
                mask = cv2.resize(mask, (img.shape[1], img.shape[0]),
                                  interpolation=cv2.INTER_NEAREST)
            if img.shape[0] < 256:
                s = int(np.ceil(256 / img.shape[0]))
                img = cv2.resize(img, None, fx=s, fy=s, interpolation=cv2.INTER_NEAREST)
                mask = cv2.resize(mask, (img.shape[1], img.shape[0]),
                                  interpolation=cv2.INTER_NEAREST)
            contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            cv2.drawContours(img, contours, -1, (255, 0, 0), 2, cv2.LINE_AA)
        return img, f"{Path(path).name}: {defect}"
    raise ValueError(f"task {task!r}")


def data_samples(task: str, dataset, limit: int = 12) -> list[dict[str, str]]:
    out = []
    for i in _spread(len(dataset), limit):
        try:
            drawn, caption = draw_sample(task, dataset, i)
            out.append({"caption": caption, "image": data_url(drawn)})
        except Exception as e:  # one unreadable sample is named, the rest still shown
            out.append({"caption": f"sample {i}: error: {type(e).__name__}: {e}", "image": ""})
    return out


def _rows(path: Path) -> list[dict[str, str]]:
    try:
        with open(path, newline="", encoding="utf-8", errors="replace") as f:
            return list(csv.DictReader(f))
    except OSError:
        return []


def _num(v: str | None, default: float = float("nan")) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return default


def segmentation_worst(run: Path, resolve: Callable[[str], Path | None],
                       predict: Callable[[Path, bytes, str], dict[str, Any]],
                       limit: int = 6) -> list[dict[str, str]]:
    """The `limit` eval images with the lowest mIoU: ground truth overlay and the model's
    overlay (the demo's drawing of the same image)."""
    from aicore.tasks.segmentation.datasets import read_mask
    from aicore.tasks.segmentation.visualize import overlay
    classes = list((_metrics(run).get("per_class") or {}).keys())
    rows = [r for r in _rows(run / "eval" / "predictions.csv") if r.get("mIoU")]
    rows.sort(key=lambda r: _num(r["mIoU"]))
    out = []
    for r in rows[:limit]:
        img_path, mask_path = resolve(r.get("image", "")), resolve(r.get("mask", ""))
        if img_path is None or mask_path is None:
            continue
        gt = overlay(rgb8(img_path), read_mask(mask_path), classes)
        pred = predict(run, img_path.read_bytes(), img_path.name)
        out.append({"name": img_path.name, "mIoU": r["mIoU"], "truth": data_url(gt),
                    "prediction": pred["image"], "backend": pred["backend"]})
    return out


def ground_truth_boxes(run: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Resolved image path -> (xyxy boxes, labels) of the run's eval split, read by the run's
    own dataset class (the boxes eval scored against)."""
    from aicore.app.predict import _trainer_for
    trainer, cfg = _trainer_for(run)
    ds = trainer.build_dataset(str(cfg.eval.split), train=False)
    return {str(Path(r.path).resolve()): (r.boxes, r.labels) for r in ds.records}


def detection_images(run: Path, resolve: Callable[[str], Path | None], min_score: float = 0.3,
                     limit: int = 8, truth: dict | None = None) -> list[dict[str, Any]]:
    """Eval images with their detections (score >= min_score) drawn in class colours and the
    ground-truth boxes (`truth`, from ground_truth_boxes) as thin white frames; images with the
    most ground-truth boxes first."""
    from aicore.tasks.detection.visualize import draw_detections
    truth = truth or {}
    names = list((_metrics(run).get("per_class") or {}).keys())
    per_image: dict[str, dict[str, Any]] = {}
    for r in _rows(run / "eval" / "predictions.csv"):
        entry = per_image.setdefault(r.get("image", ""), {"gt": int(_num(r.get("num_gt"), 0)),
                                                         "boxes": []})
        score = _num(r.get("score"))
        if r.get("class") and score >= min_score:
            if r["class"] not in names:
                names.append(r["class"])
            entry["boxes"].append(([_num(r[k]) for k in ("x1", "y1", "x2", "y2")], score,
                                   names.index(r["class"])))
    out = []
    for image, entry in sorted(per_image.items(), key=lambda kv: -kv[1]["gt"]):
        path = resolve(image)
        if path is None:
            continue
        b = entry["boxes"]
        img = rgb8(path)
        drawn = draw_detections(img, np.array([x[0] for x in b], np.float32).reshape(-1, 4),
                                np.array([x[1] for x in b], np.float32),
                                np.array([x[2] for x in b], np.int64), names)
        scale = drawn.shape[0] / img.shape[0]  # draw_detections enlarges small images
        for box in truth.get(str(path), (np.zeros((0, 4)), None))[0]:
            x1, y1, x2, y2 = (int(round(float(v) * scale)) for v in box)
            cv2.rectangle(drawn, (x1, y1), (x2, y2), (255, 255, 255), 1, cv2.LINE_AA)
        out.append({"name": path.name, "gt": entry["gt"], "detections": len(b),
                    "image": data_url(drawn, 320)})
        if len(out) >= limit:
            break
    return out


def _metrics(run: Path) -> dict[str, Any]:
    import json
    try:
        m = json.loads((run / "eval" / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return m if isinstance(m, dict) else {}
