"""Segmentation metrics from one confusion matrix accumulated over every pixel of the split.

Definitions (also in notes/segmentation.md), with TP/FP/FN counted over all images together,
pixels labelled 255 excluded:
- IoU_c  = TP_c / (TP_c + FP_c + FN_c);   Dice_c = 2 TP_c / (2 TP_c + FP_c + FN_c)
- mIoU, mDice: the mean over classes that occur in the labels or the predictions; a class with
  neither has no defined IoU and is left out (reported as null), as mmsegmentation does.
- pixel_acc = correctly labelled pixels / labelled pixels.
Summing the matrix first and dividing last (rather than averaging per batch or per image) makes
the result independent of batch size, image order and the number of DDP processes.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from aicore.engine import dist
from aicore.registry import EVALUATORS

IGNORE_INDEX = 255


def confusion(pred: torch.Tensor, target: torch.Tensor, num_classes: int,
              ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """(num_classes, num_classes) int64 counts; rows = true class, columns = predicted."""
    valid = (target != ignore_index) & (target >= 0) & (target < num_classes)
    idx = target[valid].long() * num_classes + pred[valid].long()
    return torch.bincount(idx, minlength=num_classes ** 2).reshape(num_classes, num_classes)


def scores(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class IoU, Dice and accuracy (recall) from a confusion matrix; NaN where undefined."""
    cm = cm.astype(np.float64)
    tp = np.diag(cm)
    fp, fn = cm.sum(0) - tp, cm.sum(1) - tp
    union = tp + fp + fn
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
        dice = np.where(union > 0, 2 * tp / (2 * tp + fp + fn), np.nan)
        acc = np.where(cm.sum(1) > 0, tp / cm.sum(1), np.nan)
    return {"IoU": iou, "Dice": dice, "acc": acc}


def _num(x: float) -> float | None:
    return None if np.isnan(x) else float(x)


@EVALUATORS.register("SegmentationEvaluator")
class SegmentationEvaluator:
    """mIoU, mDice, pixel accuracy and per-class IoU / Dice / accuracy over a whole split.

    ``update`` takes predictions as (N, H, W) class indices or (N, C, H, W) logits, and targets
    as (N, H, W) masks or (masks, sample indices); with indices it also keeps per-image scores
    for eval's predictions.csv (per_image=false turns that off).
    """

    #: the numbers compute() can return; train.best_metric must be one of them
    metric_names = ('mIoU', 'mDice', 'pixel_acc')

    def __init__(self, num_classes: int, class_names: Sequence[str] | None = None,
                 ignore_index: int = IGNORE_INDEX, per_image: bool = True) -> None:
        self.num_classes = int(num_classes)
        self.class_names = list(class_names or [str(i) for i in range(self.num_classes)])
        self.ignore_index = ignore_index
        self.keep_per_image = per_image
        self.reset()

    def reset(self) -> None:
        self._cm: torch.Tensor | None = None
        # per image: (sample index, TP per class, union per class, correct pixels, pixels);
        # vectors rather than the image's confusion matrix, which grows with classes squared
        self._images: list[tuple[int, np.ndarray, np.ndarray, int, int]] = []

    def update(self, outputs: torch.Tensor, targets: Any) -> None:
        indices = None
        if isinstance(targets, (tuple, list)):
            targets, indices = targets
        pred = outputs.argmax(1) if outputs.ndim == 4 else outputs
        targets = targets.to(pred.device)
        if pred.shape != targets.shape:
            raise ValueError(f"prediction shape {tuple(pred.shape)} differs from the mask shape "
                             f"{tuple(targets.shape)}")
        n = self.num_classes
        cm = confusion(pred, targets, n, self.ignore_index)
        self._cm = cm if self._cm is None else self._cm + cm
        if indices is not None and self.keep_per_image:
            for k, i in enumerate(indices.tolist() if torch.is_tensor(indices) else indices):
                c = confusion(pred[k], targets[k], n, self.ignore_index).cpu().numpy()
                tp = np.diag(c)
                self._images.append((int(i), tp, c.sum(0) + c.sum(1) - tp, int(tp.sum()),
                                     int(c.sum())))

    def gathered(self) -> tuple[np.ndarray, list[tuple[int, np.ndarray, np.ndarray, int, int]]]:
        """The confusion matrix summed over DDP ranks and every rank's per-image entries."""
        n = self.num_classes
        local = self._cm.cpu().numpy() if self._cm is not None else np.zeros((n, n), np.int64)
        parts = dist.all_gather_object((local, self._images))
        cm = np.sum([p[0] for p in parts], axis=0).astype(np.int64)
        images = sorted((item for p in parts for item in p[1]), key=lambda t: t[0])
        return cm, images

    def compute(self) -> dict[str, Any]:
        cm, images = self.gathered()
        self.cm = cm
        s = scores(cm)
        self.per_image = []  # (sample index, IoU per class (NaN: class absent), pixel_acc, pixels)
        for i, tp, union, correct, pixels in images:
            with np.errstate(divide="ignore", invalid="ignore"):
                iou = np.where(union > 0, tp / np.maximum(union, 1), np.nan)
            self.per_image.append((i, iou, correct / pixels if pixels else float("nan"), pixels))
        total = cm.sum()
        present = ~np.isnan(s["IoU"])
        return {
            "mIoU": float(s["IoU"][present].mean()) if present.any() else 0.0,
            "mDice": float(s["Dice"][present].mean()) if present.any() else 0.0,
            "pixel_acc": float(np.trace(cm) / total) if total else 0.0,
            "per_class": {name: {"IoU": _num(s["IoU"][c]), "Dice": _num(s["Dice"][c]),
                                 "acc": _num(s["acc"][c]), "pixels": int(cm[c].sum())}
                          for c, name in enumerate(self.class_names)},
        }
