"""``aicore.load(run)`` returns a ``Model``: the checkpoint loaded once, ``predict`` per call.

Predictions come back as the deploy runtime's result dataclasses (aicore/deploy/results.py),
so code written against an exported model works unchanged against a PyTorch checkpoint. The
task's inference protocol (aicore/engine/protocol.py) does the work, as in mode=demo.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Sequence, Union

import cv2
import numpy as np
import torch

from aicore.data.io import to_channels
from aicore.deploy.results import (AnomalyResult, ClassificationResult, DetectionResult,
                                   SegmentationResult)
from aicore.errors import DataError

Image = Union[str, os.PathLike, np.ndarray]


class Model:
    def __init__(self, trainer, cfg, checkpoint: dict[str, Any]):
        from aicore.engine.protocol import make_protocol
        from aicore.engine.runners import checkpoint_path, load_model
        self.trainer = trainer
        self.cfg = cfg
        trainer.setup_device()
        self.module, _ = load_model(trainer, cfg, "demo")
        self.protocol = make_protocol(trainer, model=self.module,
                                      checkpoint=checkpoint_path(cfg, "demo"))
        self.task: str = trainer.task
        self.classes: list[str] = list(trainer.classes)
        self.checkpoint_path = Path(str(cfg.demo.checkpoint))
        self.epoch = checkpoint.get("epoch")

    def __repr__(self) -> str:
        return (f"Model(task={self.task!r}, classes={len(self.classes)}, "
                f"checkpoint={str(self.checkpoint_path)!r})")

    def predict(self, images: Image | Sequence[Image], color_order: str = "BGR"):
        """One image (a path, or an HWC / HW numpy array) -> one result; a list -> a list.
        Arrays are taken as OpenCV reads them (BGR); pass ``color_order="RGB"`` otherwise."""
        if color_order not in ("BGR", "RGB"):
            raise DataError(f"color_order = {color_order!r}: use \"BGR\" or \"RGB\"")
        if isinstance(images, (list, tuple)):
            return [self._one(x, color_order, f"images[{i}]") for i, x in enumerate(images)]
        return self._one(images, color_order, "image")

    def _read(self, x: Image, color_order: str, name: str) -> tuple[np.ndarray, str]:
        if isinstance(x, (str, os.PathLike)):
            path = Path(x)
            if not path.is_file():
                raise DataError(f"{path}: no such image file")
            buf = np.fromfile(str(path), dtype=np.uint8)
            img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED) if buf.size else None
            if img is None:
                raise DataError(f"cannot decode image {path}: the file is empty or corrupt")
            return img, str(path)
        if not isinstance(x, np.ndarray) or x.ndim not in (2, 3):
            raise DataError(f"{name}: expected an image path or an HxW / HxWxC numpy array, got "
                            f"{type(x).__name__}{getattr(x, 'shape', '')}")
        if x.ndim == 3 and x.shape[2] == 3 and color_order == "RGB":
            x = x[:, :, ::-1]
        return np.ascontiguousarray(x), name

    def _one(self, x: Image, color_order: str, name: str):
        from aicore.engine.protocol import TrainerMethods
        raw, name = self._read(x, color_order, name)
        if not isinstance(self.protocol, TrainerMethods):
            tensor, meta = self.protocol.preprocess(raw, name)
            return self.protocol.predict(self.module, tensor[None], [meta])[0]
        h, w = raw.shape[:2]
        trainer = self.trainer
        tensor = trainer.preprocess(to_channels(raw, int(self.cfg.data.in_channels), name))[None]
        with torch.no_grad(), trainer.autocast():
            if self.task == "classification":
                logits = self.module(tensor.to(trainer.device))
                probs = torch.softmax(logits.float(), dim=1)[0].cpu().numpy().astype(np.float32)
                return self._classification(probs)
            pred = trainer.predict_images(self.module, tensor)[0]
        if self.task == "segmentation":
            mask = cv2.resize(pred["mask"].astype(np.uint8), (w, h),
                              interpolation=cv2.INTER_NEAREST)
            return SegmentationResult(mask=mask, class_names=list(self.classes),
                                      fractions=[float(f) for f in pred["fractions"]],
                                      confidence=float(pred["confidence"]))
        if self.task == "detection":
            labels = np.asarray(pred["labels"], dtype=np.int64)
            return DetectionResult(boxes=np.asarray(pred["boxes"], dtype=np.float32).reshape(-1, 4),
                                   scores=np.asarray(pred["scores"], dtype=np.float32),
                                   class_ids=labels, class_names=list(pred["names"]))
        if self.task == "anomaly":
            return self._anomaly(pred, h, w)
        raise DataError(f"task {self.task!r} has no predict() result type")

    def _classification(self, probs: np.ndarray) -> ClassificationResult:
        order = np.argsort(-probs)[:min(5, len(probs))]
        best = int(order[0])
        return ClassificationResult(class_id=best, class_name=self.classes[best],
                                    probability=float(probs[best]),
                                    topk=[(self.classes[int(i)], float(probs[i])) for i in order],
                                    probs=probs)

    @staticmethod
    def _anomaly(pred: dict[str, Any], h: int, w: int) -> AnomalyResult:
        amap = cv2.resize(np.asarray(pred["map"], dtype=np.float32), (w, h),
                          interpolation=cv2.INTER_LINEAR)
        thr_px = float(pred["pixel_threshold"])
        contours: list[np.ndarray] = []
        if math.isfinite(thr_px):
            found, _ = cv2.findContours((amap >= thr_px).astype(np.uint8), cv2.RETR_EXTERNAL,
                                        cv2.CHAIN_APPROX_SIMPLE)
            contours = [c.reshape(-1, 2) for c in found]
        return AnomalyResult(anomaly_map=amap, score=float(pred["score"]),
                             threshold=float(pred["image_threshold"]), is_defect=bool(pred["ng"]),
                             defect_area=float(pred["defect_area"]), pixel_threshold=thr_px,
                             contours=contours)
