"""Object detection on the shared trainer.

What differs from classification: samples carry a variable number of boxes (own collate),
the model computes its loss from the boxes itself (``DetectionLoss`` only weights the terms),
predictions are mapped from the letterboxed input back to original pixels before they are
scored, and the reports are detection ones (AP per class, PR curves, drawn boxes, a JSON of
detections, an ONNX graph that decodes boxes).
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
from loguru import logger
from torch import nn

from aicore.data.transforms import Normalize, build_pipeline, default_mean_std
from aicore.engine import dist
from aicore.engine.trainer import BaseTrainer
from aicore.errors import ConfigError, ExportError
from aicore.registry import TRAINERS
from aicore.tasks.detection.boxes import PAD_VALUE, boxes_to_original, letterbox
from aicore.tasks.detection.datasets import BBOX_PARAMS, detection_collate

#: demo draws and lists detections from this score up, unless demo.score_thresh says otherwise
DEMO_SCORE_THRESH = 0.3


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
        thresh = cfg.demo.get("score_thresh")
        self.demo_score_thresh = DEMO_SCORE_THRESH if thresh is None else float(thresh)
        #: (letterbox scale, original (h, w)) of images preprocessed but not yet predicted
        self._pending: list[tuple[float, tuple[int, int]]] = []
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
        dets = model(images.to(self.device, non_blocking=True))
        outputs, targets = [], []
        for det, meta in zip(dets, metas):
            boxes = boxes_to_original(det["boxes"].float().cpu(), meta["scale"], meta["orig_size"])
            outputs.append({"boxes": boxes, "scores": det["scores"].float().cpu(),
                            "labels": det["labels"].cpu()})
            targets.append({"boxes": meta["gt_boxes"], "labels": meta["gt_labels"],
                            "iscrowd": meta["gt_crowd"], "image_id": meta["index"],
                            "size": meta["orig_size"]})
        return outputs, targets

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

    # -- demo ----------------------------------------------------------------------------------

    def preprocess(self, img: np.ndarray) -> torch.Tensor:
        """One image as read -> letterboxed, val-transformed, normalised CHW tensor. The
        letterbox scale is remembered so predict_images can map boxes back."""
        if not hasattr(self, "_demo_pipeline"):
            data = self.cfg.data
            self._demo_pipeline = (self.transform("val", train=False), Normalize(
                *default_mean_std(int(data.in_channels), data.mean or None, data.std or None)))
        transform, normalize = self._demo_pipeline
        boxed, scale = letterbox(img, [int(s) for s in self.cfg.data.input_size])
        if transform is not None:
            boxed = transform(image=boxed, bboxes=np.zeros((0, 4), np.float32),
                              labels=np.zeros(0, np.int64))["image"]
        self._pending.append((scale, (int(img.shape[0]), int(img.shape[1]))))
        return normalize(boxed)

    def predict_images(self, model: nn.Module, batch: torch.Tensor) -> list[dict[str, Any]]:
        dets = model(batch.to(self.device))
        preds = []
        for det in dets:
            if self._pending:
                scale, hw = self._pending.pop(0)
            else:  # images not prepared by preprocess(): take them as input-sized
                scale, hw = 1.0, tuple(int(s) for s in batch.shape[-2:])
            keep = det["scores"].float() >= self.demo_score_thresh
            boxes = boxes_to_original(det["boxes"][keep].float().cpu(), scale, hw)
            labels = det["labels"][keep].cpu().numpy().astype(int)
            scores = det["scores"][keep].float().cpu().numpy()
            preds.append({"boxes": boxes.numpy(), "scores": scores, "labels": labels,
                          "names": [self.classes[k] for k in labels]})
        return preds

    def draw(self, rgb: np.ndarray, pred: dict[str, Any]) -> np.ndarray:
        from aicore.tasks.detection.visualize import draw_detections
        return draw_detections(rgb, pred["boxes"], pred["scores"], pred["labels"], self.classes)

    def demo_row(self, pred: dict[str, Any]) -> dict[str, Any]:
        objects = "; ".join(f"{n} {s:.3f} {b[0]:.1f} {b[1]:.1f} {b[2]:.1f} {b[3]:.1f}"
                            for n, s, b in zip(pred["names"], pred["scores"], pred["boxes"]))
        return {"detections": len(pred["labels"]), "objects (class score x1 y1 x2 y2)": objects}

    def write_demo_report(self, results: list[dict[str, Any]], out: Path) -> None:
        from aicore.tasks.detection.visualize import write_detections_json
        write_detections_json(results, self.demo_score_thresh, out)

    # -- export --------------------------------------------------------------------------------

    def prepare_export(self, model: nn.Module) -> nn.Module:
        """Fold BatchNorm into the preceding convolution (export.fuse_bn) module by module.

        The shared torch.fx fusion cannot trace detectors (their forward branches on train/eval
        mode and on the number of boxes), so the conv+BN pairs are folded here directly: YOLOX's
        ConvBNAct blocks and every (Conv2d, BatchNorm2d) pair inside an nn.Sequential, which
        covers torchvision's Conv2dNormActivation. The runner checks the result against the
        unfused model on real images."""
        if not self.cfg.export.get("fuse_bn"):
            return model
        import copy
        from torch.nn.utils.fusion import fuse_conv_bn_eval

        from aicore.tasks.detection.yolox import ConvBNAct
        model = copy.deepcopy(model).eval()
        folded = 0
        for module in model.modules():
            if isinstance(module, ConvBNAct) and isinstance(module.bn, nn.BatchNorm2d):
                module.conv, module.bn = fuse_conv_bn_eval(module.conv, module.bn), nn.Identity()
                folded += 1
            elif isinstance(module, nn.Sequential):
                children = list(module.children())
                for i in range(len(children) - 1):
                    conv, bn = children[i], children[i + 1]
                    if isinstance(conv, nn.Conv2d) and type(bn) is nn.BatchNorm2d:
                        module[i], module[i + 1] = fuse_conv_bn_eval(conv, bn), nn.Identity()
                        folded += 1
        if folded:
            logger.info(f"conv-bn fusion: {folded} BatchNorm layers folded into convolutions")
        return model

    def export_module(self, model: nn.Module) -> tuple[nn.Module, list[str]]:
        if not hasattr(model, "export_forward"):
            raise ExportError(f"model {self.cfg.model.type} has no export_forward(); detection "
                              f"export needs a model that returns dense boxes and scores")
        from aicore.tasks.detection.export import ExportDense, ExportWithNMS, postprocess_recipe
        recipe = postprocess_recipe(model, tuple(int(s) for s in self.cfg.data.input_size))
        self._export_recipe = recipe
        if self.cfg.export.get("nms"):
            return ExportWithNMS(model, recipe), ["detections"]
        return ExportDense(model), ["boxes", "scores"]

    def export_check(self, module: nn.Module, images: torch.Tensor) -> float | None:
        """export.nms: the in-graph post-processing against the model's own detections."""
        from aicore.tasks.detection.export import compare_with_model
        return compare_with_model(module, images)

    def normalization(self) -> dict[str, Any]:
        info = super().normalization()
        info["preprocess"] = ("letterbox: scale r = min(H / h, W / w) keeping the aspect ratio, "
                              "resize the image to (round(h * r), round(w * r)), paste it at the "
                              f"top-left of an H x W canvas filled with {PAD_VALUE} (8-bit), then "
                              "x = (pixel / 255 - mean) / std (pixel / 65535 for 16-bit)")
        return info

    def deploy_preprocess(self) -> dict[str, Any]:
        info = super().deploy_preprocess()
        info.update(resize="letterbox", interpolation="area_if_shrinking_else_linear",
                    pad_value=PAD_VALUE, val_transforms_after_resize=True)
        return info

    def manifest_extra(self) -> dict[str, Any]:
        from aicore.tasks.detection.export import manifest_sections
        return manifest_sections(self._export_recipe, bool(self.cfg.export.get("nms")),
                                 self.demo_score_thresh)
