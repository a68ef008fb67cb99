"""Typed prediction results of the deploy runtime, one dataclass per task.

Every result has ``to_dict()``: plain JSON types (class names as strings); the large arrays
(segmentation mask, anomaly map) only when asked for with ``arrays=True``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class ClassificationResult:
    class_id: int
    class_name: str
    probability: float
    topk: list[tuple[str, float]]  # (class name, probability), best first
    probs: np.ndarray = field(repr=False)  # (num_classes,) float32
    #: (H, W) class activation map in [0, 1] at the model's input size (demo.cam), else None
    cam: np.ndarray | None = field(default=None, repr=False)

    def to_dict(self, arrays: bool = False) -> dict[str, Any]:
        out = {"task": "classification", "class_id": self.class_id,
               "class_name": self.class_name, "probability": self.probability,
               "topk": [{"class_name": n, "probability": p} for n, p in self.topk]}
        if arrays:
            out["probs"] = [float(p) for p in self.probs]
        return out


@dataclass
class SegmentationResult:
    mask: np.ndarray = field(repr=False)  # (H, W) uint8 class indices at the image's own size
    class_names: list[str]
    fractions: list[float]  # share of pixels per class (at the model's resolution, as demo)
    confidence: float  # mean over pixels of the winning class's probability

    def to_dict(self, arrays: bool = False) -> dict[str, Any]:
        out = {"task": "segmentation", "height": int(self.mask.shape[0]),
               "width": int(self.mask.shape[1]), "confidence": self.confidence,
               "fractions": {n: f for n, f in zip(self.class_names, self.fractions)},
               "classes_present": [n for n, f in zip(self.class_names[1:], self.fractions[1:])
                                   if f > 0]}
        if arrays:
            out["mask"] = self.mask.tolist()
        return out


@dataclass
class DetectionResult:
    boxes: np.ndarray  # (K, 4) float32 x1, y1, x2, y2 in the image's own pixels
    scores: np.ndarray  # (K,) float32
    class_ids: np.ndarray  # (K,) int64
    class_names: list[str]

    def to_dict(self, arrays: bool = False) -> dict[str, Any]:
        return {"task": "detection", "detections": [
            {"class_id": int(k), "class_name": n, "score": float(s),
             "bbox_xyxy": [float(v) for v in b]}
            for b, s, k, n in zip(self.boxes, self.scores, self.class_ids, self.class_names)]}


@dataclass
class AnomalyResult:
    anomaly_map: np.ndarray = field(repr=False)  # (H, W) float32 at the image's own size
    score: float
    threshold: float
    is_defect: bool  # postprocess.is_defect: score >= threshold, with a relative tie band
    defect_area: float  # share of pixels with anomaly_map >= pixel_threshold (model resolution)
    pixel_threshold: float
    contours: list[np.ndarray] = field(repr=False)  # (n, 2) x, y polygons of defect regions

    @property
    def verdict(self) -> str:
        return "NG" if self.is_defect else "OK"

    def to_dict(self, arrays: bool = False) -> dict[str, Any]:
        out = {"task": "anomaly", "score": self.score, "threshold": self.threshold,
               "verdict": self.verdict, "is_defect": self.is_defect,
               "defect_area": None if np.isnan(self.defect_area) else self.defect_area,
               "contours": [c.reshape(-1, 2).tolist() for c in self.contours]}
        if arrays:
            out["anomaly_map"] = self.anomaly_map.tolist()
        return out
