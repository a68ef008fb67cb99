"""COCO-style detection metrics computed by pycocotools, the reference implementation.

The ground truth and the detections of the whole split are turned into in-memory COCO objects
(no JSON files), so the numbers are exactly what the COCO evaluation server would report:
``mAP`` = AP averaged over IoU 0.50:0.05:0.95 and over classes (101-point interpolated
precision, up to 100 detections per image), ``AP50`` and ``AP75`` at single IoUs, and AP per
class. Boxes marked crowd (COCO iscrowd, VOC difficult) are ignored: matching them neither
counts as a hit nor as a false positive.
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


@EVALUATORS.register("DetectionEvaluator")
class DetectionEvaluator:
    """update(outputs, targets) with per-image dicts: outputs ``{"boxes" (N, 4) xyxy pixels,
    "scores" (N,), "labels" (N,)}``; targets ``{"boxes", "labels"}`` plus optional
    ``"iscrowd"`` (N,) bool, ``"image_id"`` (unique per image; needed under DDP, where each rank
    sees other images) and ``"size"`` (h, w)."""

    main_metric = "mAP"
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
            if image_id is None:  # single process, no ids given: arrival order
                image_id = self._next_id
            self._next_id += 1
            self._records.append({
                "image_id": int(image_id),
                "size": tuple(int(v) for v in tgt["size"]) if tgt.get("size") is not None else None,
                "boxes": _np(out["boxes"], shape=(0, 4)).reshape(-1, 4),
                "scores": _np(out["scores"]),
                "labels": _np(out["labels"], np.int64),
                "gt_boxes": _np(tgt["boxes"], shape=(0, 4)).reshape(-1, 4),
                "gt_labels": _np(tgt["labels"], np.int64),
                "gt_crowd": _np(tgt.get("iscrowd"), bool, (len(tgt["labels"]),))
                if tgt.get("iscrowd") is not None else np.zeros(len(tgt["labels"]), bool),
            })

    def gathered(self) -> list[dict[str, Any]]:
        """Every rank's records, sorted by image id (each image once)."""
        merged: dict[int, dict] = {}
        for part in dist.all_gather_object(self._records):
            for rec in part:
                merged[rec["image_id"]] = rec
        return [merged[k] for k in sorted(merged)]

    def compute(self) -> dict[str, Any]:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

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
            for box, label, crowd in zip(rec["gt_boxes"], rec["gt_labels"], rec["gt_crowd"]):
                bw, bh = float(box[2] - box[0]), float(box[3] - box[1])
                annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                    "category_id": int(label) + 1,
                                    "bbox": [float(box[0]), float(box[1]), bw, bh],
                                    "area": bw * bh, "iscrowd": int(bool(crowd))})
            for box, score, label in zip(rec["boxes"], rec["scores"], rec["labels"]):
                dets.append([image_id, box[0], box[1], box[2] - box[0], box[3] - box[1], score,
                             int(label) + 1])
        gt = COCO()
        gt.dataset = {"images": images, "annotations": annotations,
                      "categories": [{"id": i + 1, "name": n}
                                     for i, n in enumerate(self.class_names)]}
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            gt.createIndex()
        num_gt = np.bincount([a["category_id"] - 1 for a in annotations if not a["iscrowd"]],
                             minlength=self.num_classes)
        self.num_gt = num_gt
        self.recall_thresholds = np.linspace(0, 1, 101)
        # precision[iou, recall, class] at "all areas, max_dets"; -1 where undefined
        self.precision = -np.ones((10, 101, self.num_classes))
        if dets:
            with contextlib.redirect_stdout(io.StringIO()):
                dt = gt.loadRes(np.asarray(dets, np.float64))
                ev = COCOeval(gt, dt, "bbox")
                ev.params.maxDets = [1, 10, self.max_dets]
                ev.evaluate()
                ev.accumulate()
                ev.summarize()
            stats = ev.stats
            self.precision = ev.eval["precision"][:, :, :, 0, -1]
            m_ap, ap50, ap75 = (max(0.0, float(v)) for v in stats[:3])
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
