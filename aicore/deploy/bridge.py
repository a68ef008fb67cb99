"""Deploy results -> the prediction dicts that aicore/deploy/report.py draws and writes for
`python -m aicore.deploy predict` (torch-free copies of the task protocols' draw and csv_row),
so it writes the same files as mode=demo."""
from __future__ import annotations

from typing import Any

import numpy as np

from aicore.deploy.results import (AnomalyResult, ClassificationResult, DetectionResult,
                                   SegmentationResult)


def demo_prediction(predictor, result) -> dict[str, Any]:
    if isinstance(result, ClassificationResult):
        return {"label": result.class_name, "probability": result.probability,
                "topk": list(result.topk)}
    if isinstance(result, SegmentationResult):
        return {"mask": result.mask, "confidence": result.confidence,
                "fractions": list(result.fractions)}
    if isinstance(result, DetectionResult):
        return {"boxes": result.boxes, "scores": result.scores,
                "labels": result.class_ids.astype(int), "names": list(result.class_names)}
    if isinstance(result, AnomalyResult):
        post = predictor.post
        return {"map": result.anomaly_map, "score": result.score, "ng": result.is_defect,
                "defect_area": result.defect_area,
                "image_threshold": float(post["image_threshold"]),
                "pixel_threshold": float(post["pixel_threshold"]),
                "map_min": float(post.get("map_min", np.nan)),
                "map_max": float(post.get("map_max", np.nan))}
    raise TypeError(f"not a deploy result: {type(result).__name__}")
