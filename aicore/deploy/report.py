"""The task-specific part of what `python -m aicore.deploy predict` writes, in mode=demo's
formats: the drawing, predictions.csv's columns (the same as each task's demo_row),
detections.json and segmentation's pred_masks/. The walk over the source and the writing of
annotated images, videos and predictions.csv is aicore.data.sources.write_predictions, the
one mode=demo uses. Drawing reuses the tasks' own visualize modules, loaded from their files
so that the task packages (which import torch) are not imported."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import numpy as np

_TASK_DIR = Path(__file__).resolve().parents[1] / "tasks"


def visualize_module(task: str):
    """aicore/tasks/<task>/visualize.py without running aicore/tasks/<task>/__init__.py."""
    name = f"aicore._deploy_visualize_{task}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, _TASK_DIR / task / "visualize.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def draw(task: str, classes: list[str], rgb: np.ndarray, pred: dict[str, Any]) -> np.ndarray:
    vis = visualize_module(task)
    if task == "classification":
        return vis.draw_label(rgb, f"{pred['label']} {pred['probability']:.2f}")
    if task == "segmentation":
        return vis.overlay(rgb, pred["mask"], classes)
    if task == "detection":
        return vis.draw_detections(rgb, pred["boxes"], pred["scores"], pred["labels"], classes)
    return vis.overlay(rgb, pred["map"], pred["score"], pred["image_threshold"],
                       pred["pixel_threshold"], pred["map_min"], pred["map_max"])


def demo_row(task: str, classes: list[str], pred: dict[str, Any]) -> dict[str, Any]:
    """The CSV columns of the task trainers' demo_row (tests check both write the same)."""
    if task == "classification":
        return {"predicted": pred["label"], "probability": f"{pred['probability']:.6f}",
                "top5": ";".join(f"{n}:{p:.4f}" for n, p in pred["topk"])}
    if task == "segmentation":
        present = [n for n, f in zip(classes[1:], pred["fractions"][1:]) if f > 0]
        return {"classes_present": ";".join(present),
                "mean_confidence": f"{pred['confidence']:.4f}",
                **{f"fraction_{n}": f"{f:.6f}" for n, f in zip(classes, pred["fractions"])}}
    if task == "detection":
        objects = "; ".join(f"{n} {s:.3f} {b[0]:.1f} {b[1]:.1f} {b[2]:.1f} {b[3]:.1f}"
                            for n, s, b in zip(pred["names"], pred["scores"], pred["boxes"]))
        return {"detections": len(pred["labels"]), "objects (class score x1 y1 x2 y2)": objects}
    return {"verdict": "NG" if pred["ng"] else "OK", "score": f"{pred['score']:.6f}",
            "threshold": f"{pred['image_threshold']:.6f}",
            "defect_area": f"{pred['defect_area']:.6f}"}


def write_extra(task: str, classes: list[str], post: dict[str, Any],
                results: list[dict[str, Any]], out: Path, source: Path) -> None:
    """detections.json (detection) or pred_masks/ (segmentation), as mode=demo writes them."""
    if task == "detection":
        visualize_module("detection").write_detections_json(
            results, post.get("demo_score_thresh"), out)
    elif task == "segmentation":
        visualize_module("segmentation").write_pred_masks(
            [(r["source"], r["prediction"]["mask"]) for r in results if r["frame"] is None],
            out, source)
