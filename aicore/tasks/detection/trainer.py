"""Object detection on the shared trainer.

What differs from classification: samples carry a variable number of boxes (own collate),
the model computes its loss from the boxes itself (``DetectionLoss`` only weights the terms),
predictions are mapped from the letterboxed input back to original pixels before they are
scored, and the eval reports are detection ones (AP per class, PR curves, every detection as
CSV and JSON). Demo and export: protocol.py and export.py.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from dotmap import DotMap
from torch import nn

from aicore.data.transforms import build_pipeline, default_mean_std
from aicore.engine import dist
from aicore.engine.trainer import BaseTrainer
from aicore.errors import ConfigError
from aicore.registry import TRAINERS
from aicore.tasks.detection.boxes import boxes_to_original
from aicore.tasks.detection.datasets import BBOX_PARAMS, detection_collate


@TRAINERS.register("DetectionTrainer")
class DetectionTrainer(BaseTrainer):
    task = "detection"
    default_metric = "mAP"
    default_evaluator = "DetectionEvaluator"

    def __init__(self, cfg: DotMap) -> None:
        super().__init__(cfg)
        size = [int(s) for s in cfg.data.input_size]
        if any(s % 32 for s in size):
            fixed = [-(-s // 32) * 32 for s in size]
            raise ConfigError(f"'data.input_size' = {size}: detection models downsample by 32, "
                              f"so height and width must be multiples of 32; use e.g. {fixed}")
        self.train_size: tuple[int, int] | None = None  # set by MultiScaleHook

    # -- building ------------------------------------------------------------------------------

    def transform(self, split: str, train: bool):
        """The split's albumentations pipeline, with boxes following every geometric step
        (None when the split lists no transforms)."""
        import albumentations as A
        nodes = self.cfg.data[split].transforms or []
        if not nodes:  # nothing to run (letterboxing is the dataset's own step)
            return None
        return build_pipeline([n.toDict() if hasattr(n, "toDict") else n for n in nodes],
                              f"data.{split}.transforms", bbox_params=A.BboxParams(**BBOX_PARAMS))

    def dataset_node(self, split: str, train: bool) -> dict:
        node = self.data_cfg(split)
        if not train:  # mosaic/mixup belong to training; evaluation sees plain images
            node = {k: v for k, v in node.items() if k not in ("mosaic", "mixup")}
        return node

    def collate_fn(self):
        return detection_collate

    # -- training ------------------------------------------------------------------------------

    def before_train(self) -> None:
        super().before_train()
        if self.cfg.train.get("save_train_batch") and dist.is_main() and self.start_epoch == 0:
            # peeking at a batch changes nothing: every epoch reseeds order and augmentation
            from aicore.tasks.detection.visualize import save_train_batch
            images, targets, _ = next(iter(self.train_loader))
            mean, std = default_mean_std(int(self.cfg.data.in_channels),
                                         self.cfg.data.mean or None, self.cfg.data.std or None)
            x = images.float() * torch.tensor(std)[:, None, None] + \
                torch.tensor(mean)[:, None, None]
            x = (x.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()
            if x.shape[-1] == 1:
                x = np.repeat(x, 3, axis=-1)
            save_train_batch(x, targets, self.classes, self.work_dir / "train_batch.jpg")

    def forward_loss(self, batch: Any) -> dict[str, torch.Tensor]:
        images, targets, _ = batch
        images = images.to(self.device, non_blocking=True)
        targets = [{"boxes": t["boxes"].to(self.device), "labels": t["labels"].to(self.device)}
                   for t in targets]
        size = self.train_size
        if size is not None and tuple(size) != tuple(images.shape[-2:]):
            sy, sx = size[0] / images.shape[-2], size[1] / images.shape[-1]
            images = F.interpolate(images, size=tuple(size), mode="bilinear", align_corners=False)
            factor = torch.tensor([sx, sy, sx, sy], device=self.device)
            targets = [{"boxes": t["boxes"] * factor, "labels": t["labels"]} for t in targets]
        images = self.input_tensor(images)  # after the resize: interpolate drops the format
        return self.loss_fn(self.model(images, targets))

    @torch.no_grad()
    def predict_batch(self, model: nn.Module, batch: Any):
        """-> (detections, ground truth) per image, both in original image pixels."""
        images, _, metas = batch
        return self._outputs_and_targets(model(images.to(self.device, non_blocking=True)), metas)

    @staticmethod
    def _outputs_and_targets(dets: list[dict], metas: list[dict]):
        outputs, targets = [], []
        for det, meta in zip(dets, metas):
            boxes = boxes_to_original(det["boxes"].float().cpu(), meta["scale"], meta["orig_size"])
            outputs.append({"boxes": boxes, "scores": det["scores"].float().cpu(),
                            "labels": det["labels"].cpu()})
            targets.append({"boxes": meta["gt_boxes"], "labels": meta["gt_labels"],
                            "iscrowd": meta["gt_crowd"], "image_id": meta["index"],
                            "size": meta["orig_size"]})
        return outputs, targets

    @torch.no_grad()
    def predict_and_loss(self, model: nn.Module, batch: Any):
        """The validation loss: detectors compute their loss only in training mode, so a second
        pass runs in training mode with every normalisation and dropout layer kept in eval
        mode (BatchNorm statistics untouched) and the random state forked (torchvision's
        proposal sampling draws numbers; exact resume must not see them). It costs one more
        forward pass per validation batch, unless the detector computes both from one pass
        (``predict_with_loss``, YOLOX)."""
        images, boxes, metas = batch
        net = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
        images = images.to(self.device, non_blocking=True)
        boxes = [{"boxes": t["boxes"].to(self.device), "labels": t["labels"].to(self.device)}
                 for t in boxes]
        if hasattr(net, "predict_with_loss"):
            dets, losses = net.predict_with_loss(images, boxes)
            return (*self._outputs_and_targets(dets, metas), self.loss_fn(losses))
        outputs, targets = self.predict_batch(model, batch)
        net.train()
        for m in net.modules():
            if isinstance(m, (nn.modules.batchnorm._NormBase, nn.Dropout)):
                m.eval()
        try:
            devices = [self.device.index or 0] if self.device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices):
                losses = self.loss_fn(net(images, boxes))
        finally:
            net.eval()
        return outputs, targets, losses

    # -- eval report ---------------------------------------------------------------------------

    def write_eval_report(self, model: nn.Module, evaluator, dataset, metrics: dict,
                          out: Path) -> None:
        """per_class_ap.png, pr_curves.png, and every detection as predictions.csv (one row per
        box; images with none get an empty row) and the same as a list in detections.json."""
        from aicore.tasks.detection.visualize import plot_per_class_ap, plot_pr_curves
        names = list(self.classes)
        plot_per_class_ap(metrics["per_class"], out / "per_class_ap.png")
        plot_pr_curves(evaluator.precision, evaluator.recall_thresholds, names,
                       out / "pr_curves.png")
        detections = []
        with open(out / "predictions.csv", "w", newline="", encoding="utf-8",
              errors="backslashreplace") as f:
            w = csv.writer(f)
            w.writerow(["image", "num_gt", "class", "score", "x1", "y1", "x2", "y2"])
            for rec in evaluator.records:
                path = dataset.records[rec["image_id"]].path
                n_gt = int((~rec["gt_crowd"]).sum())
                if not len(rec["boxes"]):
                    w.writerow([path, n_gt, "", "", "", "", "", ""])
                for box, score, label in zip(rec["boxes"], rec["scores"], rec["labels"]):
                    w.writerow([path, n_gt, names[int(label)], f"{score:.5f}",
                                *(f"{v:.2f}" for v in box)])
                    detections.append({"image": path, "class": names[int(label)],
                                       "score": round(float(score), 5),
                                       "bbox_xyxy": [round(float(v), 2) for v in box]})
        (out / "detections.json").write_text(json.dumps(detections, indent=1), encoding="utf-8")
