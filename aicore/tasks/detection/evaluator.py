"""COCO-style detection metrics, computed by faster-coco-eval (pycocotools' algorithm in C++).

The ground truth and the detections of the whole split are turned into in-memory COCO objects
(no JSON files), so the numbers are what pycocotools and the COCO evaluation server report
(the tests compare them): ``mAP`` = AP averaged over IoU 0.50:0.05:0.95 and over classes
(101-point interpolated precision, up to ``max_dets`` detections per image), ``AP50`` and
``AP75`` at single IoUs, and AP per class. All three are read from the precision array at
``max_dets`` (pycocotools' printed summary fixes mAP to 100 detections, which would make it
-1 for any other max_dets). Boxes marked crowd (COCO iscrowd, VOC difficult) are ignored:
matching them neither counts as a hit nor as a false positive.
"""
from __future__ import annotations

import contextlib
import io
from typing import Any, Sequence

import numpy as np
import torch

from aicore.engine import dist
from aicore.registry import EVALUATORS


def _np(x: Any, dtype=np.float32, shape: tuple = (0,)) -> np.ndarray:
    if x is None:
        return np.zeros(shape, dtype)
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        x = (x.float() if x.is_floating_point() else x).numpy()  # bf16 has no numpy dtype
    return np.asarray(x).astype(dtype)


def _mean_defined(precision: np.ndarray) -> float:
    """pycocotools' summary: the mean over entries that are defined (-1 = class without
    boxes), 0 when none is."""
    defined = precision[precision > -1]
    return float(defined.mean()) if defined.size else 0.0


@EVALUATORS.register("DetectionEvaluator")
class DetectionEvaluator:
    """update(outputs, targets) with per-image dicts: outputs ``{"boxes" (N, 4) xyxy pixels,
    "scores" (N,), "labels" (N,)}``; targets ``{"boxes", "labels"}`` plus optional
    ``"iscrowd"`` (N,) bool, ``"image_id"`` (unique per image; without it every image counts
    once, in arrival order on each rank) and ``"size"`` (h, w)."""

    #: the numbers compute() can return; train.best_metric must be one of them
    metric_names = ('mAP', 'AP50', 'AP75')

    def __init__(self, num_classes: int, class_names: Sequence[str] | None = None,
                 max_dets: int = 100) -> None:
        self.num_classes = num_classes
        self.class_names = list(class_names or [str(i) for i in range(num_classes)])
        self.max_dets = int(max_dets)
        self.reset()

    def reset(self) -> None:
        self._records: list[dict[str, Any]] = []
        self._next_id = 0

    def update(self, outputs: list[dict], targets: list[dict]) -> None:
        for out, tgt in zip(outputs, targets):
            image_id = tgt.get("image_id")
            self._records.append({
                # without ids, images are told apart by (rank, arrival order); see gathered()
                "image_id": None if image_id is None else int(image_id),
                "order": self._next_id,
                "size": tuple(int(v) for v in tgt["size"]) if tgt.get("size") is not None else None,
                "boxes": _np(out["boxes"], shape=(0, 4)).reshape(-1, 4),
                "scores": _np(out["scores"]),
                "labels": _np(out["labels"], np.int64),
                "gt_boxes": _np(tgt["boxes"], shape=(0, 4)).reshape(-1, 4),
                "gt_labels": _np(tgt["labels"], np.int64),
                "gt_crowd": _np(tgt.get("iscrowd"), bool, (len(tgt["labels"]),))
                if tgt.get("iscrowd") is not None else np.zeros(len(tgt["labels"]), bool),
            })
            self._next_id += 1

    def gathered(self) -> list[dict[str, Any]]:
        """Every rank's records, each image once: merged by image id where the targets carry
        one (a sampler may hand an image to two ranks), else kept apart by (rank, arrival
        order), since every rank counts its own images from 0."""
        merged: dict[tuple, dict] = {}
        for rank, part in enumerate(dist.all_gather_object(self._records)):
            for rec in part:
                key = (("id", rec["image_id"]) if rec["image_id"] is not None
                       else ("order", rank, rec["order"]))
                merged[key] = rec
        return [merged[k] for k in sorted(merged)]

    def compute(self) -> dict[str, Any]:
        from faster_coco_eval import COCO, COCOeval_faster

        records = self.gathered()
        self.records = records
        images, annotations, dets = [], [], []
        for k, rec in enumerate(records):
            image_id = k + 1  # COCO ids start at 1 (an annotation id 0 would read as "no match")
            if rec["size"] is not None:
                h, w = rec["size"]
            else:  # only used for COCO's bookkeeping; any size holding the boxes will do
                allb = np.concatenate([rec["gt_boxes"], rec["boxes"]]) if len(rec["boxes"]) \
                    else rec["gt_boxes"]
                w, h = (int(np.ceil(allb[:, 2].max())) + 1, int(np.ceil(allb[:, 3].max())) + 1) \
                    if len(allb) else (1, 1)
            images.append({"id": image_id, "width": int(w), "height": int(h)})
            g = rec["gt_boxes"]
            gxywh = np.concatenate([g[:, :2], g[:, 2:] - g[:, :2]], 1).tolist()
            for box, label, crowd in zip(gxywh, rec["gt_labels"].tolist(),
                                         rec["gt_crowd"].tolist()):
                annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                    "category_id": label + 1, "bbox": box,
                                    "area": box[2] * box[3], "iscrowd": int(crowd)})
            b = rec["boxes"]  # xywh in float32 as pycocotools' loadRes would get them, as floats
            xywh = np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], 1).tolist()
            for box, score, label in zip(xywh, rec["scores"].tolist(), rec["labels"].tolist()):
                dets.append({"id": len(dets) + 1, "image_id": image_id,
                             "category_id": label + 1, "bbox": box, "score": score,
                             "area": box[2] * box[3], "iscrowd": 0})
        categories = [{"id": i + 1, "name": n} for i, n in enumerate(self.class_names)]
        with contextlib.redirect_stdout(io.StringIO()):
            gt = COCO({"images": images, "annotations": annotations, "categories": categories})
        num_gt = np.bincount([a["category_id"] - 1 for a in annotations if not a["iscrowd"]],
                             minlength=self.num_classes)
        self.num_gt = num_gt
        self.recall_thresholds = np.linspace(0, 1, 101)
        # precision[iou, recall, class] at "all areas, max_dets"; -1 where undefined
        self.precision = -np.ones((10, 101, self.num_classes))
        if dets:
            with contextlib.redirect_stdout(io.StringIO()):
                # the result set built directly: what loadRes() makes of a detection array,
                # without its per-box Python pass
                dt = COCO({"images": images, "annotations": dets, "categories": categories})
                ev = COCOeval_faster(gt, dt, "bbox")
                ev.params.maxDets = [self.max_dets]
                ev.evaluate()
                ev.accumulate()
            self.precision = np.asarray(ev.eval["precision"])[:, :, :, 0, 0]
            m_ap, ap50, ap75 = (_mean_defined(p) for p in
                                (self.precision, self.precision[0], self.precision[5]))
        else:  # nothing detected: every AP is 0 (pycocotools cannot load an empty result)
            m_ap = ap50 = ap75 = 0.0
            self.precision[:, :, num_gt > 0] = 0.0
        per_class = {}
        for k, name in enumerate(self.class_names):
            p = self.precision[:, :, k]
            if num_gt[k] == 0:  # AP is undefined for a class with no boxes in this split
                per_class[name] = {"AP": None, "AP50": None, "AP75": None, "num_gt": 0}
                continue
            per_class[name] = {"AP": float(np.mean(np.maximum(p, 0))),
                               "AP50": float(np.mean(np.maximum(p[0], 0))),
                               "AP75": float(np.mean(np.maximum(p[5], 0))),
                               "num_gt": int(num_gt[k])}
        return {"mAP": m_ap, "AP50": ap50, "AP75": ap75, "per_class": per_class}
