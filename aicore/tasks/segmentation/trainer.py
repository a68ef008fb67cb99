"""Semantic segmentation on the shared trainer: datasets, the loss call, (sliding-window)
predictions and eval reports (demo and export: protocol.py)."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import torch
from dotmap import DotMap
from torch import nn

from aicore.engine.trainer import BaseTrainer
from aicore.errors import ConfigError
from aicore.registry import TRAINERS
from aicore.tasks.segmentation.datasets import IGNORE_INDEX, pad_collate
from aicore.tasks.segmentation.inference import parse_sliding_window, segment_logits
from aicore.tasks.segmentation.losses import takes_ignore_index
from aicore.tasks.segmentation.models import logits_of, required_stride


@TRAINERS.register("SegmentationTrainer")
class SegmentationTrainer(BaseTrainer):
    task = "segmentation"
    default_metric = "mIoU"
    default_evaluator = "SegmentationEvaluator"

    def __init__(self, cfg: DotMap) -> None:
        super().__init__(cfg)
        # parsed up front so a bad value fails before any mode builds or writes anything
        size = [int(s) for s in cfg.data.input_size]
        self.eval_window = parse_sliding_window(cfg.eval.sliding_window, size,
                                                "eval.sliding_window")
        demo = cfg.demo.sliding_window
        self.demo_window = (self.eval_window if demo is None else
                            parse_sliding_window(demo, size, "demo.sliding_window"))

    # -- building ------------------------------------------------------------------------------

    def build_dataset(self, split: str, train: bool, **overrides: Any):
        """Training samples are resized to data.input_size after the transforms (when these did
        not crop to it); evaluation samples too, unless eval.sliding_window is on, in which case
        they stay at full resolution and metrics are computed on the original masks."""
        if not train and self.eval_window is not None:
            overrides.setdefault("input_size", None)
        return super().build_dataset(split, train, **overrides)

    def collate_fn(self):
        return pad_collate  # full-resolution images of different sizes share a batch

    def loss_kwargs(self) -> dict[str, Any]:
        return {"num_classes": len(self.classes), "ignore_index": IGNORE_INDEX}

    def build_loss(self) -> nn.Module:
        takes_ignore_index(self.cfg.loss.toDict(), "loss")
        return super().build_loss()

    def build_model(self) -> nn.Module:
        model = super().build_model()
        stride = required_stride(model)
        sizes = {"data.input_size": [int(s) for s in self.cfg.data.input_size]}
        for key, sw in (("eval.sliding_window.window", self.eval_window),
                        ("demo.sliding_window.window", self.demo_window)):
            if sw is not None:
                sizes[key] = list(sw.window)
        for key, size in sizes.items():
            if any(s % stride for s in size):
                fixed = [-(-s // stride) * stride for s in size]
                raise ConfigError(f"'{key}' = {size}: model {self.cfg.model.get('arch', '')} "
                                  f"with encoder {self.cfg.model.get('encoder_name', '')} needs "
                                  f"a height and width divisible by {stride}; use e.g. {fixed}")
        # One forward pass at each input size, so an input too small for the architecture
        # (PAN, PSPNet pool the deepest features further) fails here, before anything is
        # written, rather than in the first training step.
        was_training = model.training
        model.eval()
        for key, size in sizes.items():
            try:
                with torch.no_grad():
                    model(torch.zeros(1, int(self.cfg.data.in_channels), *size))
            except RuntimeError as e:
                raise ConfigError(f"'{key}' = {size} is too small for model "
                                  f"{self.cfg.model.get('arch', '')} / "
                                  f"{self.cfg.model.get('encoder_name', '')}: "
                                  f"{str(e).splitlines()[0][:200]}. Use a larger input size "
                                  f"(PAN needs about 128 px) or another architecture"
                                  ) from None
        model.train(was_training)
        return model

    # -- training and prediction ---------------------------------------------------------------

    def forward_loss(self, batch: Any) -> dict[str, torch.Tensor]:
        images, masks, _ = batch
        images = self.input_tensor(images)
        masks = masks.to(self.device, non_blocking=True)
        logits = logits_of(self.model(images))
        losses = {"loss": self.loss_fn(logits, masks)}
        losses.update(getattr(self.loss_fn, "last_parts", None) or {})  # CombinedLoss parts
        return losses

    @torch.no_grad()
    def predict_batch(self, model: nn.Module, batch: Any):
        images, masks, indices = batch
        logits = segment_logits(model, images.to(self.device, non_blocking=True),
                                self.eval_window)
        return logits.argmax(1), (masks, indices)

    @torch.no_grad()
    def predict_and_loss(self, model: nn.Module, batch: Any):
        """The validation loss: the training criterion on the logits the prediction uses."""
        images, masks, indices = batch
        logits = segment_logits(model, images.to(self.device, non_blocking=True),
                                self.eval_window)
        loss = self.loss_fn(logits, masks.to(self.device, non_blocking=True))
        return logits.argmax(1), (masks, indices), {"loss": loss}

    # -- eval report ---------------------------------------------------------------------------

    def write_eval_report(self, model: nn.Module, evaluator, dataset, metrics: dict,
                          out: Path) -> None:
        """per_class_iou.png, pixel confusion matrix (CSV + PNG) and per-image scores in
        predictions.csv (worst images first is one sort away in any spreadsheet)."""
        from aicore.engine.plots import save_confusion_matrix
        from aicore.tasks.segmentation.visualize import plot_per_class
        names = list(self.classes)
        plot_per_class(metrics["per_class"], out / "per_class_iou.png")
        save_confusion_matrix(evaluator.cm, names, out, unit="pixels")
        with open(out / "predictions.csv", "w", newline="", encoding="utf-8",
              errors="backslashreplace") as f:
            w = csv.writer(f)
            w.writerow(["image", "mask", "pixels", "pixel_acc", "mIoU"] +
                       [f"IoU_{n}" for n in names])
            for i, iou, acc, pixels in evaluator.per_image:
                present = iou[~np.isnan(iou)]
                w.writerow([dataset.samples[i][0], dataset.samples[i][1], pixels,
                            "" if np.isnan(acc) else f"{acc:.6f}",
                            f"{present.mean():.6f}" if present.size else ""] +
                           ["" if np.isnan(v) else f"{v:.6f}" for v in iou])
