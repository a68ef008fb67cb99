"""Anomaly metrics over a whole split, gathered over DDP ranks.

image_AUROC   ROC AUC of the image scores (good = 0, defective = 1), scikit-learn
pixel_AUROC   ROC AUC of every pixel of the anomaly maps against the masks, scikit-learn
PRO           area under the per-region-overlap curve up to FPR 0.3, normalised (metrics.py)
F1_max        best image-level F1 over all thresholds; `threshold` is that threshold, in raw
              score units (the one number here not in [0, 1]): a score >= threshold is a defect
pixel_F1_max, pixel_threshold   the same per pixel; demo draws the defect contour there

After compute(), ``calibration`` holds what deployment needs: both thresholds and the range of
the anomaly maps (to scale heat maps for display).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from loguru import logger
from sklearn.metrics import roc_auc_score

from aicore.engine import dist
from aicore.registry import EVALUATORS
from aicore.tasks.anomaly.metrics import f1_max, pro_score


@EVALUATORS.register("AnomalyEvaluator")
class AnomalyEvaluator:
    """outputs: (anomaly maps (B,1,H,W), image scores (B,)); targets: (masks (B,1,H,W),
    labels (B,), sample indices (B,)). The maps and masks of the split are kept until compute()
    (float32 and bool: about 5 bytes per pixel)."""

    #: the numbers compute() can return; train.best_metric must be one of them
    metric_names = ('image_AUROC', 'pixel_AUROC', 'PRO', 'F1_max', 'threshold', 'pixel_F1_max',
                    'pixel_threshold')

    def __init__(self, pro_fpr_limit: float = 0.3, pixel_metrics: bool = True) -> None:
        self.pro_fpr_limit = float(pro_fpr_limit)
        self.pixel_metrics = bool(pixel_metrics)
        self.reset()

    def reset(self) -> None:
        self._scores: list[np.ndarray] = []
        self._labels: list[np.ndarray] = []
        self._indices: list[np.ndarray] = []
        self._maps: list[np.ndarray] = []
        self._masks: list[np.ndarray] = []

    def update(self, outputs: tuple[torch.Tensor, torch.Tensor], targets: tuple) -> None:
        maps, scores = outputs
        masks, labels, indices = targets
        self._scores.append(scores.detach().float().cpu().numpy().reshape(-1))
        self._labels.append(np.asarray(labels.cpu() if torch.is_tensor(labels) else labels,
                                       np.int64).reshape(-1))
        self._indices.append(np.asarray(indices.cpu() if torch.is_tensor(indices) else indices,
                                        np.int64).reshape(-1))
        if self.pixel_metrics:
            self._maps.append(maps.detach().float().cpu().numpy()[:, 0])
            self._masks.append(masks.cpu().numpy()[:, 0] > 0.5)

    def gathered(self) -> tuple[np.ndarray, ...]:
        local = tuple(np.concatenate(a) if a else None for a in
                      (self._scores, self._labels, self._indices, self._maps, self._masks))
        parts = [p for p in dist.all_gather_object(local) if p[0] is not None]
        if not parts:
            return tuple(None for _ in range(5))
        return tuple(np.concatenate([p[i] for p in parts]) if parts[0][i] is not None else None
                     for i in range(5))

    def compute(self) -> dict[str, Any]:
        scores, labels, indices, maps, masks = self.gathered()
        self.scores, self.labels, self.indices, self.maps, self.masks = \
            scores, labels, indices, maps, masks
        out: dict[str, Any] = {}
        self.calibration: dict[str, float] = {}
        if scores is None or len(np.unique(labels)) < 2:
            logger.warning("anomaly metrics need good and defective images in the split")
            return out
        out["image_AUROC"] = float(roc_auc_score(labels, scores))
        if maps is not None:
            flat_masks, flat_maps = masks.ravel(), maps.ravel()
            if flat_masks.any() and not flat_masks.all():
                out["pixel_AUROC"] = float(roc_auc_score(flat_masks, flat_maps))
                out["PRO"] = pro_score(maps, masks, self.pro_fpr_limit)
            else:
                logger.warning("the masks of this split have no defect pixels; pixel_AUROC and "
                               "PRO are left out")
        out["F1_max"], out["threshold"] = f1_max(labels, scores)
        if maps is not None and "pixel_AUROC" in out:
            out["pixel_F1_max"], out["pixel_threshold"] = f1_max(flat_masks, flat_maps)
        self.calibration = {
            "image_threshold": out["threshold"],
            "pixel_threshold": out.get("pixel_threshold", float("nan")),
            "map_min": float(maps.min()) if maps is not None else float("nan"),
            "map_max": float(maps.max()) if maps is not None else float("nan")}
        return out
